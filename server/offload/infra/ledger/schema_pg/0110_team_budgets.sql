-- PostgreSQL twin of schema/0110_team_budgets.sql.
ALTER TABLE reservations ADD COLUMN user_name TEXT;
ALTER TABLE reservations ADD COLUMN project TEXT;
ALTER TABLE batches ADD COLUMN user_name TEXT;
ALTER TABLE batches ADD COLUMN project TEXT;
CREATE INDEX attempts_user_spend ON attempts (user_name, ts, cost_pusd);
CREATE INDEX attempts_project_spend ON attempts (project, ts, cost_pusd);
