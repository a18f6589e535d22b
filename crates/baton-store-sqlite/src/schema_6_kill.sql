-- Version 6: the workspace's kill switch (DESIGN §4). A column, so that a claim's query can
-- leave out every task of a killed workspace as it leaves out those of killed projects; the
-- body gains the field as the model now writes it (last), so that a replayed row equals
-- the live one.
ALTER TABLE workspaces ADD COLUMN killed INTEGER NOT NULL DEFAULT 0;
UPDATE workspaces SET body = substr(body, 1, length(body) - 1) || ',"killed":false}'
    WHERE body NOT LIKE '%"killed":%';
