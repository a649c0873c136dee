-- Nothing to do on SQLite: PostgreSQL's 0011 teaches stepline_create_task to refuse plans made
-- from functions that changed since; SQLite's create_stepwise (storage/task_plan.py) does the
-- same with the functions_fingerprint query. Kept so that both backends number alike.
SELECT 1;
