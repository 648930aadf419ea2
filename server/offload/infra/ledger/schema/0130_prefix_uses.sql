-- Reuse history of cacheable prompt prefixes (issue 14): one row per call per prefix it sent,
-- so offload places a cache breakpoint only where reuse is likely, across every process
-- sharing this ledger. Digests only (core.request.prefix_keys), never the text.
-- `ttl` is the breakpoint TTL placed on that use ('5m' | '1h'), NULL when none was placed: an
-- entry lives TTL after the last use that placed one. Times use the fixed-width ISO format of
-- 0001_core.sql. Rows older than a week are pruned at start.

CREATE TABLE prefix_uses (
    id          INTEGER PRIMARY KEY,
    prefix_hash TEXT NOT NULL,
    ts          TEXT NOT NULL,
    ttl         TEXT CHECK (ttl IN ('5m', '1h'))
);
CREATE INDEX prefix_uses_hash_ts ON prefix_uses (prefix_hash, ts);
