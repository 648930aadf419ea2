-- PostgreSQL twin of schema/0160_call_lengths.sql.
ALTER TABLE calls ADD COLUMN out_tokens BIGINT;
ALTER TABLE calls ADD COLUMN ended BIGINT CHECK (ended IN (0, 1));
UPDATE calls SET
    out_tokens = (SELECT a.output_tokens FROM attempts a WHERE a.request_key = calls.final_key),
    ended = (SELECT CASE WHEN COALESCE(a.stop_reason, '') != 'max_tokens' THEN 1 ELSE 0 END
             FROM attempts a WHERE a.request_key = calls.final_key);
DROP INDEX calls_family;
CREATE INDEX calls_family ON calls (family, ts, verdict, ended, out_tokens);
