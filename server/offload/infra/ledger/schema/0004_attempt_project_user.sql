-- Who and what each attempt was for: the host's project (CLAUDE_PROJECT_DIR or OFFLOAD_PROJECT)
-- and OFFLOAD_USER, so a shared ledger can report spend per project and per person.
-- NULL = not known (rows written before this migration, or a server started without them).
-- `user_name`, not `user`: USER is a reserved word in PostgreSQL.

ALTER TABLE attempts ADD COLUMN project TEXT;
ALTER TABLE attempts ADD COLUMN user_name TEXT;
CREATE INDEX attempts_project ON attempts (project, ts) WHERE project IS NOT NULL;
