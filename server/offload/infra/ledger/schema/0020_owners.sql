-- Tenancy over HTTP: a batch or handle belongs to the principal (token name) that made it.
-- NULL is the local owner (stdio, in-process, tokenless loopback); reads match owner exactly.
ALTER TABLE batches ADD COLUMN owner TEXT;
ALTER TABLE handles ADD COLUMN owner TEXT;
CREATE INDEX batches_owner ON batches (owner, state, created_at);
