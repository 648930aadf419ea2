-- The batch quality loop: items whose check fails are re-asked one tier up in a follow-up round,
-- a batch of its own (root_id = the batch the host knows, round = 1, 2, ...) so every round keeps
-- the create-before-send, lease and settle-once guarantees of 0003_batches.sql.
-- batches.state gains 'escalating' (settled; a follow-up round is owed) and 'followed' (the
-- follow-up round exists: followup_id); a root stays 'followed' until its last round is done.
ALTER TABLE batches ADD COLUMN root_id TEXT;
ALTER TABLE batches ADD COLUMN round INTEGER NOT NULL DEFAULT 0;
ALTER TABLE batches ADD COLUMN followup_id TEXT;
-- JSON {task, difficulty, max_tokens, must_match, response_schema}: what routing and the checks
-- of the next round need ('{}' for a batch submitted without them).
ALTER TABLE batches ADD COLUMN quality TEXT NOT NULL DEFAULT '{}';
CREATE INDEX batches_root ON batches (root_id, round);

-- failed_check: the trigger a settled answer failed on; escalate = 1: it is re-asked in the next
-- round (this row's answer is superseded); call_id: the calls row of a final answer (redo_of).
ALTER TABLE batch_items ADD COLUMN failed_check TEXT;
ALTER TABLE batch_items ADD COLUMN escalate INTEGER NOT NULL DEFAULT 0 CHECK (escalate IN (0, 1));
ALTER TABLE batch_items ADD COLUMN call_id TEXT;
CREATE INDEX batch_items_call ON batch_items (call_id) WHERE call_id IS NOT NULL;
