-- Version 4: runs are stored under their task, keyed (workspace, task, run id), in one
-- B-tree. Version 1 kept them in a rowid table with two indexes, (workspace, id) and
-- (workspace, task, id), so a claim inserted into three B-trees and every change of a run
-- rewrote pages of two; every lookup of a run names its task, which the key now leads with.
CREATE TABLE runs_by_task (
    workspace_id TEXT NOT NULL,
    task_id      TEXT NOT NULL,
    id           TEXT NOT NULL,
    body         TEXT NOT NULL,
    PRIMARY KEY (workspace_id, task_id, id)
) WITHOUT ROWID;
INSERT INTO runs_by_task (workspace_id, task_id, id, body)
    SELECT workspace_id, task_id, id, body FROM runs;
DROP TABLE runs;
ALTER TABLE runs_by_task RENAME TO runs;
