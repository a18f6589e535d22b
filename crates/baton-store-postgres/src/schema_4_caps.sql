-- Version 4: the claim index leads with the task's required capabilities (`caps`, the set
-- as `,a,b,` sorted by bytes; empty for none). Before, a claim filtered capabilities row by
-- row (parsing each body), so an agent lacking the capabilities of the tasks ahead of its
-- own in claim order read every one of them, each claim; now it seeks each capability set
-- it can serve and merges them. Adding a column with a constant default rewrites nothing;
-- only tasks that require capabilities are updated.
ALTER TABLE tasks ADD COLUMN caps TEXT NOT NULL DEFAULT '';
UPDATE tasks SET caps = ',' || (
        SELECT string_agg(c, ',' ORDER BY c COLLATE "C")
        FROM (SELECT DISTINCT c FROM jsonb_array_elements_text(body::jsonb -> 'required_capabilities') AS c) AS d
    ) || ','
    WHERE strpos(body, '"required_capabilities":[]') = 0
      AND jsonb_array_length(body::jsonb -> 'required_capabilities') > 0;
DROP INDEX tasks_claim;
CREATE INDEX tasks_claim ON tasks (workspace_id, caps, neg_priority, due_key, id) WHERE status = 'ready';
