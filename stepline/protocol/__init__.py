"""The wire contract between the Stepline server and apps: the Inngest SDK protocol.

Pure code: no I/O, no framework, no database. Used by both the SDK and the engine.
"""
