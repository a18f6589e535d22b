-- Version 5: the claim floor. A claimed task leaves a dead entry at the head of the claim
-- index until vacuum removes it, and every claim read past all of them (~160 pages a claim
-- midway through a 20,000-task drain). The workspace row now keeps a floor, the claim key
-- (neg_priority, due_key, id) below which no ready task needing no capabilities lies, and
-- claims of agents without capabilities start there.
--
-- The floor is a lower bound in every committed state:
-- - Lowered by the database itself: a transaction that leaves such a task ready lowers the
--   floor to its key if it is below, and bumps `ready_gen`, as it commits (the triggers
--   below, deferred to the commit, where the numbering of events already holds the
--   workspace row's lock). Every writer keeps it so, whatever its version.
-- - Raised by claims (`flush.rs`): a claim's statement reads the first ready entry from
--   the floor on and `ready_gen`, in its own snapshot; its transaction's last statement
--   raises the floor to that entry only if `ready_gen` still reads the same under the
--   row's lock, that is if no task was made ready since that snapshot.
-- A transaction's own claims after it made a task ready do not start at the floor, which
-- it lowers only as it commits (`tx.rs`). The starting floor is below every key.
-- `tasks` before `workspaces`, in the order writers take them (a task upsert, then the
-- numbering of events): a writer of the version before must not deadlock with this.
LOCK TABLE tasks IN SHARE ROW EXCLUSIVE MODE;
ALTER TABLE workspaces
    ADD COLUMN ready_gen BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN floor_neg BIGINT NOT NULL DEFAULT -9223372036854775808,
    ADD COLUMN floor_due BIGINT NOT NULL DEFAULT -9223372036854775808,
    ADD COLUMN floor_id TEXT NOT NULL DEFAULT '';

-- The first task a transaction made ready in a workspace bumps `ready_gen`; the others only
-- lower the floor, and only if they are below it (most write nothing).
CREATE FUNCTION baton_lower_floor() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('baton.readied', true) IS DISTINCT FROM NEW.workspace_id THEN
        -- The comparison is made on the row as locked (a join would read it as of the
        -- statement's start, before a concurrent raise).
        UPDATE workspaces AS w
           SET ready_gen = w.ready_gen + 1,
               floor_neg = CASE WHEN (NEW.neg_priority, NEW.due_key, NEW.id)
                                     < (w.floor_neg, w.floor_due, w.floor_id)
                                THEN NEW.neg_priority ELSE w.floor_neg END,
               floor_due = CASE WHEN (NEW.neg_priority, NEW.due_key, NEW.id)
                                     < (w.floor_neg, w.floor_due, w.floor_id)
                                THEN NEW.due_key ELSE w.floor_due END,
               floor_id = CASE WHEN (NEW.neg_priority, NEW.due_key, NEW.id)
                                    < (w.floor_neg, w.floor_due, w.floor_id)
                               THEN NEW.id ELSE w.floor_id END
         WHERE w.id = NEW.workspace_id;
        PERFORM set_config('baton.readied', NEW.workspace_id, true);
    ELSE
        UPDATE workspaces AS w
           SET floor_neg = NEW.neg_priority, floor_due = NEW.due_key, floor_id = NEW.id
         WHERE w.id = NEW.workspace_id
           AND (NEW.neg_priority, NEW.due_key, NEW.id) < (w.floor_neg, w.floor_due, w.floor_id);
    END IF;
    RETURN NULL;
END
$$;

-- A task inserted ready, or updated into ready or below its key while ready: a task that
-- stays ready at its key or above needs nothing, as the floor is at or below it already.
CREATE CONSTRAINT TRIGGER tasks_inserted_lower_floor AFTER INSERT ON tasks
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (NEW.status = 'ready' AND NEW.caps = '')
    EXECUTE FUNCTION baton_lower_floor();
CREATE CONSTRAINT TRIGGER tasks_updated_lower_floor AFTER UPDATE ON tasks
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (NEW.status = 'ready' AND NEW.caps = ''
          AND (OLD.status <> 'ready' OR OLD.caps <> ''
               OR (NEW.neg_priority, NEW.due_key, NEW.id) < (OLD.neg_priority, OLD.due_key, OLD.id)))
    EXECUTE FUNCTION baton_lower_floor();
