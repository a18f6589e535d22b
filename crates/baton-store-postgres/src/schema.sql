-- Baton's PostgreSQL schema, version 1: the embedded schema's tables and indexes, with
-- entities stored whole as JSON text in `body` and the columns queries filter on beside it.
-- Every key starts with workspace_id, the shard key (DESIGN §5).

CREATE TABLE workspaces (
    id       TEXT PRIMARY KEY,
    name     TEXT NOT NULL UNIQUE,
    last_seq BIGINT NOT NULL DEFAULT 0,   -- the event counter; its row lock orders writers
    body     TEXT NOT NULL
);

CREATE TABLE projects (
    workspace_id TEXT NOT NULL,
    id           TEXT NOT NULL,
    name         TEXT NOT NULL,
    killed       BOOLEAN NOT NULL DEFAULT false,
    body         TEXT NOT NULL,
    PRIMARY KEY (workspace_id, id),
    UNIQUE (workspace_id, name)
);

CREATE TABLE agents (
    workspace_id TEXT NOT NULL,
    id           TEXT NOT NULL,
    name         TEXT NOT NULL,
    body         TEXT NOT NULL,
    PRIMARY KEY (workspace_id, id),
    UNIQUE (workspace_id, name)
);

CREATE TABLE api_keys (
    workspace_id TEXT NOT NULL,
    id           TEXT NOT NULL,
    token_sha256 TEXT NOT NULL UNIQUE,
    body         TEXT NOT NULL,
    PRIMARY KEY (workspace_id, id)
);

CREATE TABLE tasks (
    workspace_id     TEXT NOT NULL,
    id               TEXT NOT NULL,
    project_id       TEXT NOT NULL,
    parent_id        TEXT,
    status           TEXT NOT NULL,
    neg_priority     BIGINT NOT NULL,
    due_key          BIGINT NOT NULL,
    not_before       BIGINT,
    lease_expires_at BIGINT,
    idem_key         TEXT,
    labels           TEXT NOT NULL,
    body             TEXT NOT NULL,
    PRIMARY KEY (workspace_id, id)
);
-- Claim order over ready tasks only: the index is as small as the queue, so a claim is a
-- seek whatever the history holds.
CREATE INDEX tasks_claim ON tasks (workspace_id, neg_priority, due_key, id) WHERE status = 'ready';
CREATE INDEX tasks_lease ON tasks (workspace_id, lease_expires_at) WHERE lease_expires_at IS NOT NULL;
CREATE INDEX tasks_parent ON tasks (workspace_id, parent_id, id) WHERE parent_id IS NOT NULL;
CREATE INDEX tasks_status ON tasks (workspace_id, status, id);
CREATE UNIQUE INDEX tasks_key ON tasks (workspace_id, idem_key) WHERE idem_key IS NOT NULL;

CREATE TABLE runs (
    workspace_id TEXT NOT NULL,
    id           TEXT NOT NULL,
    task_id      TEXT NOT NULL,
    body         TEXT NOT NULL,
    PRIMARY KEY (workspace_id, id)
);
CREATE INDEX runs_task ON runs (workspace_id, task_id, id);

CREATE TABLE dependencies (
    workspace_id TEXT NOT NULL,
    blocked_id   TEXT NOT NULL,
    blocker_id   TEXT NOT NULL,
    kind         TEXT NOT NULL,
    body         TEXT NOT NULL,
    PRIMARY KEY (workspace_id, blocked_id, blocker_id, kind)
);
CREATE INDEX dependencies_blocker ON dependencies (workspace_id, blocker_id);

CREATE TABLE context (
    workspace_id TEXT NOT NULL,
    id           TEXT NOT NULL,
    task_id      TEXT NOT NULL,
    body         TEXT NOT NULL,
    PRIMARY KEY (workspace_id, id)
);
CREATE INDEX context_task ON context (workspace_id, task_id, id);

CREATE TABLE steps (
    workspace_id TEXT NOT NULL,
    id           TEXT NOT NULL,
    task_id      TEXT NOT NULL,
    position     BIGINT NOT NULL,
    body         TEXT NOT NULL,
    PRIMARY KEY (workspace_id, id)
);
CREATE INDEX steps_task ON steps (workspace_id, task_id, position);

CREATE TABLE events (
    workspace_id TEXT NOT NULL,
    seq          BIGINT NOT NULL,
    type         TEXT NOT NULL,
    at           BIGINT NOT NULL,
    actor        TEXT NOT NULL,
    task_id      TEXT,
    data         TEXT NOT NULL,
    PRIMARY KEY (workspace_id, seq)
);

CREATE TABLE idempotency (
    workspace_id   TEXT NOT NULL,
    key            TEXT NOT NULL,
    request_sha256 TEXT NOT NULL,
    response       TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, key)
);
