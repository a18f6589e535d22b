-- Version 5: the claim index leads with the task's required capabilities (`caps`, the set
-- as `,a,b,` sorted; empty for none). Before, an agent lacking the capabilities of the
-- tasks ahead of its own in claim order read and decoded every one of them on the writer,
-- each claim; now a claim seeks each capability set it can serve and merges them.
ALTER TABLE tasks ADD COLUMN caps TEXT NOT NULL DEFAULT '';
UPDATE tasks SET caps = (
        SELECT ',' || group_concat(value, ',' ORDER BY value) || ','
        FROM (SELECT DISTINCT value FROM json_each(tasks.body, '$.required_capabilities')))
    WHERE json_array_length(body, '$.required_capabilities') > 0;
DROP INDEX tasks_claim;
CREATE INDEX tasks_claim ON tasks (workspace_id, caps, neg_priority, due_key, id) WHERE status = 'ready';
