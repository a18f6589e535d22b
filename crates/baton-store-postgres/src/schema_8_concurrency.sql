-- Version 8: keyed concurrency (DESIGN §4). A task's concurrency key and limit, and an
-- index of the leased tasks that have a key, so a claim counts a key's leases with one
-- seek. Tasks without a key (the most) have no entry in it, whatever their status, so
-- their claims and completions do not maintain it.
ALTER TABLE tasks ADD COLUMN conc_key TEXT, ADD COLUMN conc_limit BIGINT;
CREATE INDEX tasks_conc ON tasks (workspace_id, conc_key)
    WHERE conc_key IS NOT NULL AND status IN ('claimed', 'in_progress', 'waiting');
-- Ready tasks with a key, in claim order per key: a holder's heartbeat asks whether a more
-- urgent one waits for its key (preemption).
CREATE INDEX tasks_conc_ready ON tasks (workspace_id, conc_key, neg_priority, due_key, id)
    WHERE conc_key IS NOT NULL AND status = 'ready';
