-- Nothing to do on SQLite. PostgreSQL's 0009 adds stepline_create_task, the server-side
-- function that writes a tracked task in one round trip; SQLite composes the store's verbs
-- (storage/task_plan.py). Kept so that both backends number their migrations alike.
SELECT 1;
