-- PostgreSQL twin of schema/0003_batches.sql (see that file for what each column means).
CREATE TABLE batches (
    id              TEXT PRIMARY KEY,
    created_at      TEXT NOT NULL,
    session_id      TEXT NOT NULL,
    policy          TEXT NOT NULL DEFAULT '',
    tier            TEXT NOT NULL,
    model           TEXT NOT NULL,
    baseline_model  TEXT NOT NULL,
    request_count   BIGINT NOT NULL CHECK (request_count > 0),
    worst_pusd      BIGINT NOT NULL CHECK (worst_pusd >= 0),
    typical_pusd    BIGINT NOT NULL DEFAULT 0,
    sync_pusd       BIGINT NOT NULL DEFAULT 0,
    shared          TEXT NOT NULL,
    reservation_id  BIGINT,
    state           TEXT NOT NULL,
    retry_of        TEXT,
    settled_at      TEXT
);
CREATE INDEX batches_open ON batches (state, created_at);

CREATE TABLE batch_parts (
    batch_id        TEXT NOT NULL REFERENCES batches (id),
    part            BIGINT NOT NULL,
    request_count   BIGINT NOT NULL,
    api_batch_id    TEXT UNIQUE,
    state           TEXT NOT NULL,
    submitted_at    TEXT,
    ended_at        TEXT,
    expires_at      TEXT,
    polls           BIGINT NOT NULL DEFAULT 0,
    next_poll_at    TEXT,
    lease_owner     TEXT,
    lease_until     TEXT,
    error           TEXT,
    PRIMARY KEY (batch_id, part)
);
CREATE INDEX batch_parts_due ON batch_parts (state, next_poll_at);

CREATE TABLE batch_items (
    batch_id        TEXT NOT NULL REFERENCES batches (id),
    idx             BIGINT NOT NULL,
    part            BIGINT NOT NULL,
    label           TEXT NOT NULL,
    body            TEXT NOT NULL,
    system          TEXT,
    worst_pusd      BIGINT NOT NULL,
    result_type     TEXT,
    text            TEXT,
    stop_reason     TEXT,
    error           TEXT,
    cost_pusd       BIGINT,
    PRIMARY KEY (batch_id, idx)
);
CREATE INDEX batch_items_part ON batch_items (batch_id, part, result_type);
