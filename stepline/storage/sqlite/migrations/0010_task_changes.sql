-- Every change of a task, as the task was after it, for streams (GET /v1/tasks/{id}/stream)
-- that must send each change even when several land between two of their reads. Written by a
-- trigger in the changing transaction, so no writer can forget it; the task row's own insert
-- is not logged (a stream starts from the row). The sweeper deletes rows older than a few
-- minutes: streams read changes newer than the version they last sent, within seconds.
CREATE TABLE task_changes (
    task_id    TEXT NOT NULL,
    version    INTEGER NOT NULL,
    task       TEXT NOT NULL,
    changed_at INTEGER NOT NULL,
    PRIMARY KEY (task_id, version)
) WITHOUT ROWID;
CREATE INDEX task_changes_by_time ON task_changes (changed_at);

CREATE TRIGGER tasks_changed AFTER UPDATE OF version ON tasks
WHEN NEW.version <> OLD.version
BEGIN
    INSERT OR IGNORE INTO task_changes (task_id, version, task, changed_at)
    VALUES (
        NEW.id, NEW.version,
        json_object(
            'id', NEW.id, 'kind', NEW.kind, 'owner', NEW.owner, 'status', NEW.status,
            'event_id', NEW.event_id, 'run_id', NEW.run_id, 'progress', NEW.progress,
            'message', NEW.message, 'result', json(NEW.result), 'error', json(NEW.error),
            'created_at', NEW.created_at, 'updated_at', NEW.updated_at,
            'started_at', NEW.started_at, 'ended_at', NEW.ended_at,
            'pending_deadline', NEW.pending_deadline, 'pending_timeout_ms', NEW.pending_timeout_ms,
            'quota_feature', NEW.quota_feature, 'refund_on_failure', NEW.refund_on_failure,
            'version', NEW.version
        ),
        NEW.updated_at
    );
END;
