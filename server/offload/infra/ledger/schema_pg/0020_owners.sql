-- PostgreSQL twin of schema/0020_owners.sql.
ALTER TABLE batches ADD COLUMN owner TEXT;
ALTER TABLE handles ADD COLUMN owner TEXT;
CREATE INDEX batches_owner ON batches (owner, state, created_at);
