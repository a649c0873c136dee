-- Indexes for the read API (GET /v1/runs, GET /v1/events/{id}). Every list reads newest
-- first by id within an equality prefix: runs of a function with a given status, and events
-- looked up by their public id.
CREATE INDEX runs_by_function_status ON runs (function_id, status, id);
CREATE INDEX events_by_public_id ON events (id, internal_id);
