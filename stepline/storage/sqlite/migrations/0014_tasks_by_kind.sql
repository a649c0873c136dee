-- Task listings filtered by kind (`GET /v1/tasks?kind=...`) without an owner, such as an
-- operator's view of one feature, read this index instead of every task; with an owner, the
-- owner's indexes serve and the kind is checked on their (few) rows.
CREATE INDEX tasks_by_kind ON tasks (kind, id);
