-- Indexes for the dashboard's overview: runs that ended in the last hour (by minute and
-- status) and steps that ended in the last hour (their durations). Runs started per minute
-- need none: a run id is a ULID, so the primary key is already ordered by creation time.
-- steps_by_ended costs one more index entry per recorded step (the hot path).
CREATE INDEX runs_by_ended ON runs (ended_at, status);
CREATE INDEX steps_by_ended ON steps (ended_at);
