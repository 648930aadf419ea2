-- PostgreSQL twin of schema/0180_call_task.sql.
ALTER TABLE calls ADD COLUMN task TEXT;
UPDATE calls SET task = CASE
    WHEN family LIKE '%@easy' THEN substr(family, 1, length(family) - 5)
    WHEN family LIKE '%@medium' THEN substr(family, 1, length(family) - 7)
    WHEN family LIKE '%@hard' THEN substr(family, 1, length(family) - 5)
    ELSE family END;
DROP INDEX calls_family;
CREATE INDEX calls_task ON calls (task, ts, verdict, ended, out_tokens);
