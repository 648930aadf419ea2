-- Each answer's task beside its family: routing reads a task's recent answers (at any stated
-- difficulty) before every call, and read them family by family (the label, then the label with
-- @easy, @medium and @hard): four index ranges sorted together, 70 us on a ledger of 20,000
-- answers against 10 us for one range. task: the family without its stated difficulty (compared
-- case-exactly: LIKE ignores case in SQLite, not in PostgreSQL), the rule of learning.task_of.
-- Derived by the database, not written: every writer (a server of the previous release sharing
-- the ledger, `offload ledger migrate` copying an older ledger) and every existing row has it alike.
ALTER TABLE calls ADD COLUMN task TEXT GENERATED ALWAYS AS (CASE
    WHEN substr(family, length(family) - 4) = '@easy' THEN substr(family, 1, length(family) - 5)
    WHEN substr(family, length(family) - 6) = '@medium' THEN substr(family, 1, length(family) - 7)
    WHEN substr(family, length(family) - 4) = '@hard' THEN substr(family, 1, length(family) - 5)
    ELSE family END) VIRTUAL;
-- Covers the read as 0160's index did, by task: newest first, the filters and the length.
-- calls_family stays for servers of the previous release sharing the ledger: they read by family,
-- and without it each of their reads walked the whole table (11-56 ms on 50,000 answers).
CREATE INDEX calls_task ON calls (task, ts, verdict, ended, out_tokens);
