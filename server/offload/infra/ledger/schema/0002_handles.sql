-- Handles: trimmed-away content kept server-side so a later trim_result can take another slice
-- without the host resending it. The id is derived from the content ('h_' + 12 hex of sha256),
-- so trimming the same content twice reuses one row. content is zlib-compressed UTF-8.
-- Times are UTC ISO-8601 strings of one fixed width, as in 0001.

CREATE TABLE handles (
    id           TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,
    bytes        INTEGER NOT NULL CHECK (bytes >= 0),   -- uncompressed UTF-8 size
    created_at   TEXT NOT NULL,
    last_used_at TEXT NOT NULL,
    content      BLOB NOT NULL
);

CREATE INDEX handles_last_used ON handles (last_used_at);
