-- Each answer's task label beside its family: routing reads a task's recent answers (at any stated
-- difficulty) before every call, and read them family by family (the label, then the label with
-- @easy, @medium and @hard): four index ranges sorted together, 70 us on a ledger of 20,000
-- answers against 10 us for one range. task: the label as learning groups it (`*` for none).
ALTER TABLE calls ADD COLUMN task TEXT;
UPDATE calls SET task = CASE
    WHEN family LIKE '%@easy' THEN substr(family, 1, length(family) - 5)
    WHEN family LIKE '%@medium' THEN substr(family, 1, length(family) - 7)
    WHEN family LIKE '%@hard' THEN substr(family, 1, length(family) - 5)
    ELSE family END;
-- Covers the read as 0160's index did, by task: newest first, the filters and the length.
DROP INDEX calls_family;
CREATE INDEX calls_task ON calls (task, ts, verdict, ended, out_tokens);
