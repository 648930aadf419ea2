-- Spend per UTC day kept by triggers on attempts, so budget reads sum a few rows instead of every
-- attempt of the month: one reserve read 100,000 attempts a month in 15-19 ms, under the ledger's
-- single write lock. Two levels, because sessions are many (each Claude Code session is one):
--   spend_rollup  per day, session, user and project: the session scope, and reports;
--   spend_by_day  per day, user and project: today, this month, a user's or a project's month,
--                 so those reads touch days x (user, project) rows however many sessions ran.
-- Both are derived data: `offload ledger migrate` does not copy them, the target's triggers add
-- each attempt copied there once.
--
-- day is the 'YYYY-MM-DD' prefix of attempts.ts (fixed-width UTC ISO, 0001_core.sql), so a
-- budget window [midnight, next midnight) or [1st, next 1st) is exactly a range of days.
-- user_key and project_key are '' for NULL (not known) and '=' || name otherwise: a primary key
-- column cannot be NULL on PostgreSQL, and SQLite's unique keys treat NULLs as distinct (two
-- NULL-user rows of one day would never meet in ON CONFLICT); a bare '' for NULL would merge
-- calls of no user with a user named ''. `COALESCE('=' || x, '')` spells it alike on both backends.
-- n counts the attempts in a row, so a deleted last attempt deletes its row and each table stays
-- equal to GROUP BY over attempts. Money is integer picodollars.

CREATE TABLE spend_rollup (
    day         TEXT NOT NULL,
    session_id  TEXT NOT NULL,
    user_key    TEXT NOT NULL,
    project_key TEXT NOT NULL,
    cost_pusd   INTEGER NOT NULL,
    n           INTEGER NOT NULL,
    PRIMARY KEY (day, session_id, user_key, project_key)
) WITHOUT ROWID;
CREATE INDEX spend_rollup_session ON spend_rollup (session_id);

CREATE TABLE spend_by_day (
    day         TEXT NOT NULL,
    user_key    TEXT NOT NULL,
    project_key TEXT NOT NULL,
    cost_pusd   INTEGER NOT NULL,
    n           INTEGER NOT NULL,
    PRIMARY KEY (day, user_key, project_key)
) WITHOUT ROWID;
-- The primary key serves today and this month; these a user's and a project's month.
CREATE INDEX spend_by_day_user ON spend_by_day (user_key, day);
CREATE INDEX spend_by_day_project ON spend_by_day (project_key, day);

-- 0110's indexes served only the user and project budget reads, which spend_by_day answers now:
-- every attempt would keep writing them for nothing.
DROP INDEX attempts_user_spend;
DROP INDEX attempts_project_spend;

INSERT INTO spend_rollup (day, session_id, user_key, project_key, cost_pusd, n)
SELECT substr(ts, 1, 10), session_id, COALESCE('=' || user_name, ''), COALESCE('=' || project, ''),
       SUM(cost_pusd), COUNT(*)
FROM attempts
GROUP BY substr(ts, 1, 10), session_id, COALESCE('=' || user_name, ''), COALESCE('=' || project, '');
INSERT INTO spend_by_day (day, user_key, project_key, cost_pusd, n)
SELECT day, user_key, project_key, SUM(cost_pusd), SUM(n) FROM spend_rollup GROUP BY day, user_key, project_key;

-- Fires only for rows really inserted: a duplicate request_key (ON CONFLICT DO NOTHING) adds nothing.
CREATE TRIGGER spend_rollup_insert AFTER INSERT ON attempts
BEGIN
    INSERT INTO spend_rollup (day, session_id, user_key, project_key, cost_pusd, n)
    VALUES (substr(NEW.ts, 1, 10), NEW.session_id, COALESCE('=' || NEW.user_name, ''),
            COALESCE('=' || NEW.project, ''), NEW.cost_pusd, 1)
    ON CONFLICT (day, session_id, user_key, project_key)
    DO UPDATE SET cost_pusd = cost_pusd + excluded.cost_pusd, n = n + 1;
    INSERT INTO spend_by_day (day, user_key, project_key, cost_pusd, n)
    VALUES (substr(NEW.ts, 1, 10), COALESCE('=' || NEW.user_name, ''), COALESCE('=' || NEW.project, ''),
            NEW.cost_pusd, 1)
    ON CONFLICT (day, user_key, project_key)
    DO UPDATE SET cost_pusd = cost_pusd + excluded.cost_pusd, n = n + 1;
END;

-- Attempts are insert-only today; a retention that deletes, or a fix that rewrites a key column
-- or the cost, must not leave the budgets reading money that is no longer in the ledger.
CREATE TRIGGER spend_rollup_delete AFTER DELETE ON attempts
BEGIN
    UPDATE spend_rollup SET cost_pusd = cost_pusd - OLD.cost_pusd, n = n - 1
    WHERE day = substr(OLD.ts, 1, 10) AND session_id = OLD.session_id
      AND user_key = COALESCE('=' || OLD.user_name, '') AND project_key = COALESCE('=' || OLD.project, '');
    UPDATE spend_by_day SET cost_pusd = cost_pusd - OLD.cost_pusd, n = n - 1
    WHERE day = substr(OLD.ts, 1, 10)
      AND user_key = COALESCE('=' || OLD.user_name, '') AND project_key = COALESCE('=' || OLD.project, '');
    DELETE FROM spend_rollup
    WHERE day = substr(OLD.ts, 1, 10) AND session_id = OLD.session_id
      AND user_key = COALESCE('=' || OLD.user_name, '') AND project_key = COALESCE('=' || OLD.project, '')
      AND n = 0;
    DELETE FROM spend_by_day
    WHERE day = substr(OLD.ts, 1, 10)
      AND user_key = COALESCE('=' || OLD.user_name, '') AND project_key = COALESCE('=' || OLD.project, '')
      AND n = 0;
END;

CREATE TRIGGER spend_rollup_update AFTER UPDATE OF ts, session_id, user_name, project, cost_pusd ON attempts
BEGIN
    UPDATE spend_rollup SET cost_pusd = cost_pusd - OLD.cost_pusd, n = n - 1
    WHERE day = substr(OLD.ts, 1, 10) AND session_id = OLD.session_id
      AND user_key = COALESCE('=' || OLD.user_name, '') AND project_key = COALESCE('=' || OLD.project, '');
    UPDATE spend_by_day SET cost_pusd = cost_pusd - OLD.cost_pusd, n = n - 1
    WHERE day = substr(OLD.ts, 1, 10)
      AND user_key = COALESCE('=' || OLD.user_name, '') AND project_key = COALESCE('=' || OLD.project, '');
    DELETE FROM spend_rollup
    WHERE day = substr(OLD.ts, 1, 10) AND session_id = OLD.session_id
      AND user_key = COALESCE('=' || OLD.user_name, '') AND project_key = COALESCE('=' || OLD.project, '')
      AND n = 0;
    DELETE FROM spend_by_day
    WHERE day = substr(OLD.ts, 1, 10)
      AND user_key = COALESCE('=' || OLD.user_name, '') AND project_key = COALESCE('=' || OLD.project, '')
      AND n = 0;
    INSERT INTO spend_rollup (day, session_id, user_key, project_key, cost_pusd, n)
    VALUES (substr(NEW.ts, 1, 10), NEW.session_id, COALESCE('=' || NEW.user_name, ''),
            COALESCE('=' || NEW.project, ''), NEW.cost_pusd, 1)
    ON CONFLICT (day, session_id, user_key, project_key)
    DO UPDATE SET cost_pusd = cost_pusd + excluded.cost_pusd, n = n + 1;
    INSERT INTO spend_by_day (day, user_key, project_key, cost_pusd, n)
    VALUES (substr(NEW.ts, 1, 10), COALESCE('=' || NEW.user_name, ''), COALESCE('=' || NEW.project, ''),
            NEW.cost_pusd, 1)
    ON CONFLICT (day, user_key, project_key)
    DO UPDATE SET cost_pusd = cost_pusd + excluded.cost_pusd, n = n + 1;
END;
