-- What prompt caching gained on each attempt, in integer picodollars: the same usage priced with
-- every prompt token as plain input, minus the attempt's cost, at the attempt's own rates (batch
-- and long-prompt rates included). Cache reads make it positive, cache-write premiums negative.
-- Rows recorded before this migration carry 0 (not known).
ALTER TABLE attempts ADD COLUMN cache_gain_pusd INTEGER NOT NULL DEFAULT 0;
