-- Version 9: the request behind each event (DESIGN §2, §7), the `X-Request-Id` of the
-- HTTP call (or MCP tool call) that made the change; null for events from the CLI on the
-- embedded store, the reaper and earlier versions.
ALTER TABLE events ADD COLUMN request_id TEXT;
