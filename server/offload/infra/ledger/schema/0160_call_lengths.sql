-- Each answer's length beside it: routing reads a task's recent answers before every call (their
-- longest cuts a runaway first try), and reading lengths from each answer's attempts row cost
-- four B-tree lookups per answer; with the length here the read is one index range.
-- out_tokens: the answer's output tokens; ended: 1 if it ended on its own (not cut at max_tokens).
-- NULL both when the answer's attempt is not in the ledger (it waits in the journal).
ALTER TABLE calls ADD COLUMN out_tokens INTEGER;
ALTER TABLE calls ADD COLUMN ended INTEGER CHECK (ended IN (0, 1));
UPDATE calls SET
    out_tokens = (SELECT a.output_tokens FROM attempts a WHERE a.request_key = calls.final_key),
    ended = (SELECT CASE WHEN COALESCE(a.stop_reason, '') != 'max_tokens' THEN 1 ELSE 0 END
             FROM attempts a WHERE a.request_key = calls.final_key);
-- Covers the read: family, newest first, the filters and the length, no table lookup.
DROP INDEX calls_family;
CREATE INDEX calls_family ON calls (family, ts, verdict, ended, out_tokens);
