-- The fingerprint of the synced functions (records.FunctionsFingerprint: how many, the latest
-- sync, the sum of their versions) is kept in one row, read by the functions_fingerprint query
-- instead of an aggregate over every function on each enqueue. The twin of
-- postgres/migrations/0013_functions_summary.sql, where the row is recomputed once per
-- committing transaction; here triggers recompute it after each changed row (one process
-- writes, and syncs are rare: a few hundred functions cost milliseconds per sync).
CREATE TABLE functions_summary (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    functions INTEGER NOT NULL,
    latest    INTEGER NOT NULL,
    versions  INTEGER NOT NULL
);
INSERT INTO functions_summary (id, functions, latest, versions)
SELECT 1, count(*), coalesce(max(updated_at), 0), coalesce(sum(version), 0) FROM functions;

CREATE TRIGGER functions_summarised_insert AFTER INSERT ON functions
BEGIN
    UPDATE functions_summary
    SET (functions, latest, versions) = (
        SELECT count(*), coalesce(max(updated_at), 0), coalesce(sum(version), 0) FROM functions
    );
END;

CREATE TRIGGER functions_summarised_update AFTER UPDATE ON functions
BEGIN
    UPDATE functions_summary
    SET (functions, latest, versions) = (
        SELECT count(*), coalesce(max(updated_at), 0), coalesce(sum(version), 0) FROM functions
    );
END;

CREATE TRIGGER functions_summarised_delete AFTER DELETE ON functions
BEGIN
    UPDATE functions_summary
    SET (functions, latest, versions) = (
        SELECT count(*), coalesce(max(updated_at), 0), coalesce(sum(version), 0) FROM functions
    );
END;
