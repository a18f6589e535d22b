-- Version 3: a workspace's last event number is read from its events (the highest seq),
-- not kept in its row, which every commit that appended an event rewrote (one page of the
-- ten to twenty a commit writes). migrate.rs refuses to apply this to a store whose counter
-- and log disagree.
ALTER TABLE workspaces DROP COLUMN last_seq;
