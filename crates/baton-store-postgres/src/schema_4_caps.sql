-- Version 4: the claim index leads with the task's required capabilities (`caps`, the set
-- as `,a,b,` sorted by bytes; empty for none). Before, a claim filtered capabilities row by
-- row (parsing each body), so an agent lacking the capabilities of the tasks ahead of its
-- own in claim order read every one of them, each claim; now it seeks each capability set
-- it can serve and merges them. Adding a column with a constant default rewrites nothing;
-- `migrate.rs` then sets `caps` on the tasks that require capabilities, in the same
-- transaction.
ALTER TABLE tasks ADD COLUMN caps TEXT NOT NULL DEFAULT '';
DROP INDEX tasks_claim;
CREATE INDEX tasks_claim ON tasks (workspace_id, caps, neg_priority, due_key, id) WHERE status = 'ready';
