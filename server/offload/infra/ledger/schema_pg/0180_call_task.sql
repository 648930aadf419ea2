-- PostgreSQL twin of schema/0180_call_task.sql.
ALTER TABLE calls ADD COLUMN task TEXT;
UPDATE calls SET task = CASE
    WHEN substr(family, length(family) - 4) = '@easy' THEN substr(family, 1, length(family) - 5)
    WHEN substr(family, length(family) - 6) = '@medium' THEN substr(family, 1, length(family) - 7)
    WHEN substr(family, length(family) - 4) = '@hard' THEN substr(family, 1, length(family) - 5)
    ELSE family END;
CREATE FUNCTION calls_task_fill() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.task IS NULL THEN
        NEW.task := CASE
            WHEN substr(NEW.family, length(NEW.family) - 4) = '@easy' THEN substr(NEW.family, 1, length(NEW.family) - 5)
            WHEN substr(NEW.family, length(NEW.family) - 6) = '@medium' THEN substr(NEW.family, 1, length(NEW.family) - 7)
            WHEN substr(NEW.family, length(NEW.family) - 4) = '@hard' THEN substr(NEW.family, 1, length(NEW.family) - 5)
            ELSE NEW.family END;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER calls_task_fill BEFORE INSERT ON calls FOR EACH ROW EXECUTE FUNCTION calls_task_fill();
CREATE INDEX calls_task ON calls (task, ts, verdict, ended, out_tokens);
