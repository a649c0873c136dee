"""What users' apps import: client, functions, context, steps, and the replay engine.

Never imports ``stepline.server``, ``stepline.engine``, ``stepline.storage`` or a database driver.
"""
