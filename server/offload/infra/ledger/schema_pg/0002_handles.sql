-- PostgreSQL twin of schema/0002_handles.sql. content is zlib-compressed UTF-8.
CREATE TABLE handles (
    id           TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,
    bytes        BIGINT NOT NULL CHECK (bytes >= 0),
    created_at   TEXT NOT NULL,
    last_used_at TEXT NOT NULL,
    content      BYTEA NOT NULL
);

CREATE INDEX handles_last_used ON handles (last_used_at);
