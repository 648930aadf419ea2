-- PostgreSQL twin of schema/0111_server_instances.sql.
CREATE TABLE server_instances (
    id            TEXT PRIMARY KEY,
    host_id       TEXT NOT NULL,
    pid           BIGINT NOT NULL,
    started_at    TEXT NOT NULL,
    heartbeat_at  TEXT NOT NULL,
    lease_until   TEXT NOT NULL
);
CREATE INDEX server_instances_lease ON server_instances (lease_until);
ALTER TABLE reservations ADD COLUMN instance_id TEXT;
CREATE INDEX reservations_instance ON reservations (instance_id);
