-- PostgreSQL twin of schema/0180_call_task.sql (PostgreSQL adds only stored generated columns).
ALTER TABLE calls ADD COLUMN task TEXT GENERATED ALWAYS AS (CASE
    WHEN substr(family, length(family) - 4) = '@easy' THEN substr(family, 1, length(family) - 5)
    WHEN substr(family, length(family) - 6) = '@medium' THEN substr(family, 1, length(family) - 7)
    WHEN substr(family, length(family) - 4) = '@hard' THEN substr(family, 1, length(family) - 5)
    ELSE family END) STORED;
CREATE INDEX calls_task ON calls (task, ts, verdict, ended, out_tokens);
