-- PostgreSQL twin of schema/0140_batch_quality.sql.
ALTER TABLE batches ADD COLUMN root_id TEXT;
ALTER TABLE batches ADD COLUMN round BIGINT NOT NULL DEFAULT 0;
ALTER TABLE batches ADD COLUMN followup_id TEXT;
ALTER TABLE batches ADD COLUMN quality TEXT NOT NULL DEFAULT '{}';
CREATE INDEX batches_root ON batches (root_id, round);

ALTER TABLE batch_items ADD COLUMN failed_check TEXT;
ALTER TABLE batch_items ADD COLUMN escalate BIGINT NOT NULL DEFAULT 0 CHECK (escalate IN (0, 1));
ALTER TABLE batch_items ADD COLUMN call_id TEXT;
CREATE INDEX batch_items_call ON batch_items (call_id) WHERE call_id IS NOT NULL;
