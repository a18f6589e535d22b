-- Version 7: artifacts (DESIGN §2, §5). A row describes the bytes (name, media type, size,
-- SHA-256); the bytes live in the object store under their hash. Rowid table, as context.
CREATE TABLE artifacts (
    workspace_id TEXT NOT NULL,
    id           TEXT NOT NULL,
    task_id      TEXT NOT NULL,
    body         TEXT NOT NULL,
    UNIQUE (workspace_id, id)
);
CREATE INDEX artifacts_task ON artifacts (workspace_id, task_id, id);
