-- Version 2: the status index holds open tasks only, and failed or canceled ones beside it.
-- Every change of status is a new index entry on PostgreSQL (a status change is never a HOT
-- update), so the index of version 1 grew by an entry at every claim and every completion
-- and held the whole history: measured, ~1,160 pages after a 20,000-task drain against the
-- primary key's 517, and 3–7% of the drain's rate (BENCHMARKS.md). Done tasks, most of any
-- history, are listed by the primary key (`ORDER BY id` with the status as a filter).
DROP INDEX tasks_status;
CREATE INDEX tasks_status_open ON tasks (workspace_id, status, id)
    WHERE status NOT IN ('done', 'failed', 'canceled');
CREATE INDEX tasks_status_ended_badly ON tasks (workspace_id, status, id)
    WHERE status IN ('failed', 'canceled');
