-- Retention (engine/retention.py): indexes for deleting finished history in batches, and the
-- expiry of each quota use. The twin of postgres/migrations/0012_retention.sql.
--
-- Each index serves one batch delete, oldest first. Runs need none (runs_by_ended, 0007), nor do
-- events: an event's internal_id is a ULID made when it was received, so old events are a
-- primary-key range (an index on received_at would cost every ingest one more entry).

-- Tasks that ended, oldest first. Partial: a task enters it once, when it ends.
CREATE INDEX tasks_by_ended ON tasks (ended_at) WHERE ended_at IS NOT NULL;

-- Idempotency reservations whose window passed: equivalent to no row (a new claim takes them).
CREATE INDEX idempotency_keys_by_expiry ON idempotency_keys (expires_at);

-- A quota use counts toward its own window (used_at + the window it was taken under), which
-- may be longer than the retention period: retention deletes a use only after it expired.
-- Uses written before this migration did not record their window: they expire after the
-- longest window a quota may have (366 days). A use written without the column (a server of
-- the previous version, during a rolling upgrade) never expires, which is safe.
ALTER TABLE quota_uses ADD COLUMN expires_at INTEGER NOT NULL DEFAULT 9223372036854775807;
UPDATE quota_uses SET expires_at = used_at + 31622400000;
CREATE INDEX quota_uses_by_expiry ON quota_uses (expires_at);
