"""The executor, scheduler and state transitions; runs embedded or inside the server."""
