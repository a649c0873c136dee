-- Every change of a task, as the task was after it, for streams (GET /v1/tasks/{id}/stream)
-- that must send each change even when several land between two of their reads. Written by a
-- trigger in the changing transaction, so no writer can forget it; the task row's own insert
-- is not logged (a stream starts from the row). The sweeper deletes rows older than a few
-- minutes: streams read changes newer than the version they last sent, within seconds.
CREATE TABLE task_changes (
    task_id    TEXT COLLATE "C" NOT NULL,
    version    INTEGER NOT NULL,
    task       JSONB NOT NULL,
    changed_at BIGINT NOT NULL,
    PRIMARY KEY (task_id, version)
);
CREATE INDEX task_changes_by_time ON task_changes (changed_at);

CREATE FUNCTION stepline_task_changed() RETURNS TRIGGER
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_changes (task_id, version, task, changed_at)
    VALUES (NEW.id, NEW.version, to_jsonb(NEW), NEW.updated_at)
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END;
$$;

CREATE TRIGGER tasks_changed AFTER UPDATE OF version ON tasks
FOR EACH ROW WHEN (NEW.version IS DISTINCT FROM OLD.version)
EXECUTE FUNCTION stepline_task_changed();
