-- Baton's embedded schema, version 1. Every table and index starts with workspace_id, the
-- shard key (DESIGN §5). Entities are stored whole as JSON in `body`; the other columns are
-- the ones queries filter and sort on, derived from the body on every write.
--
-- Tables whose rows are large (tasks, runs, events, context, steps, idempotency) are rowid
-- tables with a UNIQUE key, not WITHOUT ROWID: a WITHOUT ROWID row over ~1 KB spills into
-- overflow pages, so every write of a task or an event would dirty an extra page.

CREATE TABLE workspaces (
    id       TEXT PRIMARY KEY,
    name     TEXT NOT NULL UNIQUE,
    last_seq INTEGER NOT NULL DEFAULT 0,
    body     TEXT NOT NULL
);

CREATE TABLE projects (
    workspace_id TEXT NOT NULL,
    id           TEXT NOT NULL,
    name         TEXT NOT NULL,
    killed       INTEGER NOT NULL DEFAULT 0,  -- kill switch: claims skip its tasks
    body         TEXT NOT NULL,
    PRIMARY KEY (workspace_id, id),
    UNIQUE (workspace_id, name)
) WITHOUT ROWID;

CREATE TABLE agents (
    workspace_id TEXT NOT NULL,
    id           TEXT NOT NULL,
    name         TEXT NOT NULL,
    body         TEXT NOT NULL,
    PRIMARY KEY (workspace_id, id),
    UNIQUE (workspace_id, name)
) WITHOUT ROWID;

CREATE TABLE tasks (
    workspace_id     TEXT NOT NULL,
    id               TEXT NOT NULL,
    project_id       TEXT NOT NULL,
    parent_id        TEXT,
    status           TEXT NOT NULL,
    neg_priority     INTEGER NOT NULL,   -- -priority: claim order is ascending on every column
    due_key          INTEGER NOT NULL,   -- due_at, or i64::MAX when none: sorts last
    not_before       INTEGER,
    lease_expires_at INTEGER,
    idem_key         TEXT,
    labels           TEXT NOT NULL,      -- ",a,b," for LIKE filtering
    body             TEXT NOT NULL,
    UNIQUE (workspace_id, id)
);

-- Claim order: only ready tasks are indexed, so the index stays as small as the queue. All
-- columns ascend, so a page of candidates resumes with a row-value seek past the last one.
CREATE INDEX tasks_claim ON tasks (workspace_id, neg_priority, due_key, id) WHERE status = 'ready';
-- Partial indexes hold only the rows that have the column set, so most writes skip them.
-- Queries restate the condition (or imply it with an equality), never leaving the planner
-- to prove it from a bound value, which would re-prepare the statement on every execution.
CREATE INDEX tasks_lease ON tasks (workspace_id, lease_expires_at) WHERE lease_expires_at IS NOT NULL;
CREATE INDEX tasks_parent ON tasks (workspace_id, parent_id, id) WHERE parent_id IS NOT NULL;
CREATE INDEX tasks_status ON tasks (workspace_id, status, id);
CREATE UNIQUE INDEX tasks_key ON tasks (workspace_id, idem_key) WHERE idem_key IS NOT NULL;

CREATE TABLE runs (
    workspace_id TEXT NOT NULL,
    id           TEXT NOT NULL,
    task_id      TEXT NOT NULL,
    body         TEXT NOT NULL,
    UNIQUE (workspace_id, id)
);
CREATE INDEX runs_task ON runs (workspace_id, task_id, id);

CREATE TABLE dependencies (
    workspace_id TEXT NOT NULL,
    blocked_id   TEXT NOT NULL,
    blocker_id   TEXT NOT NULL,
    kind         TEXT NOT NULL,
    body         TEXT NOT NULL,
    PRIMARY KEY (workspace_id, blocked_id, blocker_id, kind)
) WITHOUT ROWID;
CREATE INDEX dependencies_blocker ON dependencies (workspace_id, blocker_id);

CREATE TABLE context (
    workspace_id TEXT NOT NULL,
    id           TEXT NOT NULL,
    task_id      TEXT NOT NULL,
    body         TEXT NOT NULL,
    UNIQUE (workspace_id, id)
);
CREATE INDEX context_task ON context (workspace_id, task_id, id);

CREATE TABLE steps (
    workspace_id TEXT NOT NULL,
    id           TEXT NOT NULL,
    task_id      TEXT NOT NULL,
    position     INTEGER NOT NULL,
    body         TEXT NOT NULL,
    UNIQUE (workspace_id, id)
);
CREATE INDEX steps_task ON steps (workspace_id, task_id, position);

CREATE TABLE events (
    workspace_id TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    type         TEXT NOT NULL,
    at           INTEGER NOT NULL,
    actor        TEXT NOT NULL,
    task_id      TEXT,
    data         TEXT NOT NULL,
    UNIQUE (workspace_id, seq)
);

CREATE TABLE idempotency (
    workspace_id   TEXT NOT NULL,
    key            TEXT NOT NULL,
    request_sha256 TEXT NOT NULL,
    response       TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    UNIQUE (workspace_id, key)
);
