-- The batch path: everything needed to resume, collect and settle a batch after any crash.
-- A batch (local id 'b_...') is written here, with its reservation, BEFORE any API call.
-- Times use the fixed-width ISO format of 0001_core.sql; money is integer picodollars.

CREATE TABLE batches (
    id              TEXT PRIMARY KEY,                -- local id shown to the host, 'b_...'
    created_at      TEXT NOT NULL,
    session_id      TEXT NOT NULL,
    policy          TEXT NOT NULL DEFAULT '',
    tier            TEXT NOT NULL,
    model           TEXT NOT NULL,
    baseline_model  TEXT NOT NULL,
    request_count   INTEGER NOT NULL CHECK (request_count > 0),
    worst_pusd      INTEGER NOT NULL CHECK (worst_pusd >= 0),    -- reserved: sum of worst cases
    typical_pusd    INTEGER NOT NULL DEFAULT 0,
    sync_pusd       INTEGER NOT NULL DEFAULT 0,                  -- the typical cost without batching
    shared          TEXT NOT NULL,                               -- JSON: model, max_tokens, system, prefix, ttl
    reservation_id  INTEGER,                                     -- reservations.id; NULL once released
    state           TEXT NOT NULL,                               -- open | done
    retry_of        TEXT,
    settled_at      TEXT
);
CREATE INDEX batches_open ON batches (state, created_at);

-- One row per API batch: a local batch is split above 100,000 requests or 256 MB.
CREATE TABLE batch_parts (
    batch_id        TEXT NOT NULL REFERENCES batches (id),
    part            INTEGER NOT NULL,
    request_count   INTEGER NOT NULL,
    api_batch_id    TEXT UNIQUE,                     -- NULL until the API answered with an id
    state           TEXT NOT NULL,                   -- pending | submitting | in_progress | ended |
                                                     -- collected | failed | unknown
    submitted_at    TEXT,
    ended_at        TEXT,
    expires_at      TEXT,
    polls           INTEGER NOT NULL DEFAULT 0,
    next_poll_at    TEXT,
    lease_owner     TEXT,                            -- 'host:pid:token' of the process working on it
    lease_until     TEXT,
    error           TEXT,
    PRIMARY KEY (batch_id, part)
);
CREATE INDEX batch_parts_due ON batch_parts (state, next_poll_at);

-- One row per request: enough to rebuild its params (with batches.shared) and its result.
CREATE TABLE batch_items (
    batch_id        TEXT NOT NULL REFERENCES batches (id),
    idx             INTEGER NOT NULL,
    part            INTEGER NOT NULL,
    label           TEXT NOT NULL,                   -- the item, the file path, or the caller's custom_id
    body            TEXT NOT NULL,                   -- the per-request prompt text
    system          TEXT,                            -- a per-request system prompt (explicit requests)
    worst_pusd      INTEGER NOT NULL,
    result_type     TEXT,                            -- NULL until settled: succeeded | errored | expired |
                                                     -- canceled | missing | not_submitted
    text            TEXT,
    stop_reason     TEXT,
    error           TEXT,
    cost_pusd       INTEGER,
    PRIMARY KEY (batch_id, idx)
);
CREATE INDEX batch_items_part ON batch_items (batch_id, part, result_type);
