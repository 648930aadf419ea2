-- One row per answer routed_complete returned (an answer may have taken several attempts), so
-- the host's verdict on it (`redo_of`) has a place to land and reports can count answers that
-- were checked, redone or neither.
CREATE TABLE calls (
    call_id     TEXT PRIMARY KEY,                 -- 'rc_' + 8 hex, shown to the host
    ts          TEXT NOT NULL,
    session_id  TEXT NOT NULL,
    family      TEXT NOT NULL DEFAULT '',         -- what learning groups by: the task label (+ difficulty)
    tier        TEXT NOT NULL,                    -- the tier whose answer was returned
    final_key   TEXT,                             -- attempts.request_key of that answer
    checked     INTEGER NOT NULL DEFAULT 0 CHECK (checked IN (0, 1)),  -- a caller's check passed on it
    verdict     TEXT,                             -- NULL, 'redone', or 'rejected' (redo past the top tier)
    redo_of     TEXT,                             -- the call this one redid
    reason      TEXT                              -- the host's reason for its verdict (store_text only)
);
CREATE INDEX calls_session ON calls (session_id, ts);
CREATE INDEX calls_ts ON calls (ts);
CREATE INDEX calls_family ON calls (family, ts);
-- Sessions whose host has judged an answer: their silence counts as acceptance.
CREATE INDEX calls_judged ON calls (session_id) WHERE verdict IS NOT NULL;

-- Evidence of where a family's answers are adequate: one row per tier an answer was tried on.
-- adequate: 1 yes (a check passed), 0 no (a check failed, or the host redid it), NULL unknown
-- (unchecked and not judged yet). Shared by every server process through this file.
CREATE TABLE tier_evidence (
    id          INTEGER PRIMARY KEY,
    ts          TEXT NOT NULL,
    session_id  TEXT NOT NULL,
    call_id     TEXT NOT NULL,
    family      TEXT NOT NULL,
    tier        TEXT NOT NULL,
    adequate    INTEGER CHECK (adequate IN (0, 1))
);
CREATE INDEX tier_evidence_family ON tier_evidence (family, tier, id);
CREATE INDEX tier_evidence_call ON tier_evidence (call_id);
