-- Version 10: a project's concurrency limit (DESIGN §2, §4), in a column so that a claim's
-- query leaves out the tasks of a project with as many leased as its limit. Null: none.
ALTER TABLE projects ADD COLUMN max_conc INTEGER;
