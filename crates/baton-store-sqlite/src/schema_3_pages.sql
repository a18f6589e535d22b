-- Version 3: fewer pages written per commit.
-- A workspace's last event number is read from its events (the highest seq), not kept in
-- its row: the row was rewritten by every commit that appended an event.
ALTER TABLE workspaces DROP COLUMN last_seq;

-- Runs are small rows: a WITHOUT ROWID table keyed by (workspace_id, id) is its own index,
-- where a rowid table needed a second B-tree for that key (one more insert per claim).
CREATE TABLE runs_keyed (
    workspace_id TEXT NOT NULL,
    id           TEXT NOT NULL,
    task_id      TEXT NOT NULL,
    body         TEXT NOT NULL,
    PRIMARY KEY (workspace_id, id)
) WITHOUT ROWID;
INSERT INTO runs_keyed (workspace_id, id, task_id, body)
    SELECT workspace_id, id, task_id, body FROM runs;
DROP TABLE runs;
ALTER TABLE runs_keyed RENAME TO runs;
CREATE INDEX runs_task ON runs (workspace_id, task_id, id);
