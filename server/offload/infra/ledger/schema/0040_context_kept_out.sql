-- What trim_result and summarize_context kept out of the host's context, one row per call, so
-- the dashboard can show it per session beside the host's own bill. Token counts are the
-- tools' own approximations (approx_tokens: about 4 characters a token), as their footers show.
-- Numbered after its issue (#17) so it cannot collide with migrations written in parallel.
-- Times use the fixed-width ISO format of 0001_core.sql.

CREATE TABLE context_kept_out (
    id          INTEGER PRIMARY KEY,
    ts          TEXT NOT NULL,
    session_id  TEXT NOT NULL,
    tool        TEXT NOT NULL,
    tokens_in   INTEGER NOT NULL CHECK (tokens_in >= 0),
    tokens_out  INTEGER NOT NULL CHECK (tokens_out >= 0)
);
CREATE INDEX context_kept_out_session ON context_kept_out (session_id, ts);
