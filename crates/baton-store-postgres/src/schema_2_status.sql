-- Version 2: the status index holds open tasks only, and failed or canceled ones beside it.
-- Every change of status is a new index entry on PostgreSQL (a status change is never a HOT
-- update), so the index of version 1 took an entry at every claim and every completion and
-- kept one per finished task for good: ~1,160 pages after a 20,000-task drain against the
-- primary key's 517, and +3–6% on the drain's rate without it (BENCHMARKS.md). Done tasks,
-- most of any history, are listed through the primary key (`ORDER BY id`, the status a
-- filter). The new indexes are built before the old one is dropped: building takes a lock
-- that lets readers through, the drop one that does not, held only until the commit.
CREATE INDEX tasks_status_open ON tasks (workspace_id, status, id)
    WHERE status NOT IN ('done', 'failed', 'canceled');
CREATE INDEX tasks_status_ended_badly ON tasks (workspace_id, status, id)
    WHERE status IN ('failed', 'canceled');
DROP INDEX IF EXISTS tasks_status;
