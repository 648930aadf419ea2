-- Team budgets (policy budgets.user_usd, project_usd, team_usd): a hold counts against the user
-- and project it was taken for, and a batch's results are recorded for the user and project
-- that submitted it, whichever server process collects them. NULL = not known.
-- `user_name`, not `user`: USER is a reserved word in PostgreSQL.

ALTER TABLE reservations ADD COLUMN user_name TEXT;
ALTER TABLE reservations ADD COLUMN project TEXT;
ALTER TABLE batches ADD COLUMN user_name TEXT;
ALTER TABLE batches ADD COLUMN project TEXT;

-- Per-user and per-project budget checks sum cost over a month without table reads.
CREATE INDEX attempts_user_spend ON attempts (user_name, ts, cost_pusd);
CREATE INDEX attempts_project_spend ON attempts (project, ts, cost_pusd);
