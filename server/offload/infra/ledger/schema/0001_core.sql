-- Core ledger: one row per API attempt, budget reservations, and the policy each server loaded.
-- Times are UTC ISO-8601 strings of one fixed width ('YYYY-MM-DDTHH:MM:SS.ffffffZ') so that
-- string order is time order and window queries can use the indexes.
-- Money columns are integer picodollars (1 USD = 10^12).

CREATE TABLE attempts (
    id              INTEGER PRIMARY KEY,
    request_key     TEXT NOT NULL UNIQUE,          -- idempotency key: a retried record is ignored
    ts              TEXT NOT NULL,
    session_id      TEXT NOT NULL,
    tool            TEXT NOT NULL,
    policy          TEXT NOT NULL DEFAULT '',
    tier            TEXT NOT NULL DEFAULT '',
    model           TEXT NOT NULL,
    input_tokens    INTEGER NOT NULL DEFAULT 0 CHECK (input_tokens >= 0),
    output_tokens   INTEGER NOT NULL DEFAULT 0 CHECK (output_tokens >= 0),
    cache_write_5m  INTEGER NOT NULL DEFAULT 0 CHECK (cache_write_5m >= 0),
    cache_write_1h  INTEGER NOT NULL DEFAULT 0 CHECK (cache_write_1h >= 0),
    cache_read      INTEGER NOT NULL DEFAULT 0 CHECK (cache_read >= 0),
    cost_pusd       INTEGER NOT NULL CHECK (cost_pusd >= 0),
    baseline_pusd   INTEGER NOT NULL DEFAULT 0 CHECK (baseline_pusd >= 0),
    batch           INTEGER NOT NULL DEFAULT 0 CHECK (batch IN (0, 1)),
    step            INTEGER NOT NULL DEFAULT 0,
    outcome         TEXT NOT NULL DEFAULT 'ok',
    stop_reason     TEXT,
    request_hash    TEXT,
    batch_id        TEXT,
    prompt_text     TEXT,                          -- NULL unless the user opted in
    completion_text TEXT
);

-- Covering indexes: budget checks sum cost over a time window or a session without table reads.
CREATE INDEX attempts_ts ON attempts (ts, cost_pusd, baseline_pusd);
CREATE INDEX attempts_session ON attempts (session_id, ts, cost_pusd);
CREATE INDEX attempts_batch ON attempts (batch_id) WHERE batch_id IS NOT NULL;

-- Money held for calls in flight. Budget checks count these so concurrent sessions cannot
-- jointly overspend; a row disappears when its attempt is recorded, expires, or its process dies.
CREATE TABLE reservations (
    id          INTEGER PRIMARY KEY,
    session_id  TEXT NOT NULL,
    amount_pusd INTEGER NOT NULL CHECK (amount_pusd >= 0),
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    host        TEXT NOT NULL
);
CREATE INDEX reservations_expiry ON reservations (expires_at);
CREATE INDEX reservations_session ON reservations (session_id);

-- What each server process loaded, so `offload statusline` can show budget left without YAML.
CREATE TABLE policy_snapshots (
    id            INTEGER PRIMARY KEY,
    ts            TEXT NOT NULL,
    session_id    TEXT NOT NULL,
    policy        TEXT NOT NULL,
    source        TEXT NOT NULL DEFAULT '',        -- the policy file it came from
    session_pusd  INTEGER,                         -- NULL = unlimited
    daily_pusd    INTEGER,
    monthly_pusd  INTEGER,
    warn_at       TEXT NOT NULL DEFAULT ''         -- comma-separated fractions, e.g. '0.8'
);
