"""RoleReady: the enqueue-then-poll pattern of tracked tasks, as a small FastAPI app (see ``app.py``)."""
