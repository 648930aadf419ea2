-- PostgreSQL twin of schema/0050_attempt_cache_gain.sql.
ALTER TABLE attempts ADD COLUMN cache_gain_pusd BIGINT NOT NULL DEFAULT 0;
