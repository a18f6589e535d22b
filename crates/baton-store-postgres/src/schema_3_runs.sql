-- Version 3: a run's key is (workspace_id, task_id, id), where version 1 keyed it
-- (workspace_id, id) and indexed (workspace_id, task_id, id) besides. Every lookup of a run
-- names its task, so one index serves them all, and a claim inserts into two B-trees (the
-- heap and the key) instead of three; a run's update that is not HOT adds one index entry
-- instead of two. +2–3% on the drain (BENCHMARKS.md). The new key is built before the old
-- one is dropped: building takes a lock that lets readers through, swapping the constraint
-- one that does not, held only until the commit.
CREATE UNIQUE INDEX runs_by_task ON runs (workspace_id, task_id, id);
ALTER TABLE runs DROP CONSTRAINT runs_pkey,
    ADD CONSTRAINT runs_pkey PRIMARY KEY USING INDEX runs_by_task;
DROP INDEX IF EXISTS runs_task;
