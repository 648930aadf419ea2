-- PostgreSQL twin of schema/0004_attempt_project_user.sql.
ALTER TABLE attempts ADD COLUMN project TEXT;
ALTER TABLE attempts ADD COLUMN user_name TEXT;
CREATE INDEX attempts_project ON attempts (project, ts) WHERE project IS NOT NULL;
