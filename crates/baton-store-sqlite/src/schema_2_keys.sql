-- Version 2: API keys. Looked up by the hash of the presented secret, in any workspace;
-- the key then scopes every call to its own workspace.
CREATE TABLE api_keys (
    workspace_id TEXT NOT NULL,
    id           TEXT NOT NULL,
    token_sha256 TEXT NOT NULL UNIQUE,
    body         TEXT NOT NULL,
    PRIMARY KEY (workspace_id, id)
) WITHOUT ROWID;
