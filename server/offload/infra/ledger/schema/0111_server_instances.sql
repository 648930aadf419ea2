-- Leases instead of pid checks across hosts. Every running server (an `offload serve` process,
-- or several per process in tests) registers an instance here and refreshes `lease_until` with a
-- heartbeat. A hold (reservations.instance_id) or a batch part claim (batch_parts.lease_owner)
-- of an instance whose lease ran out is dead on every host, whatever its pid; on its own host
-- (same host_id) a dead pid frees it at once. Times use the fixed-width ISO format of 0001.

CREATE TABLE server_instances (
    id            TEXT PRIMARY KEY,               -- 'i_' + 16 hex, random per server start
    host_id       TEXT NOT NULL,                  -- processes.host_id(): pids compare only within one
    pid           INTEGER NOT NULL,
    started_at    TEXT NOT NULL,
    heartbeat_at  TEXT NOT NULL,
    lease_until   TEXT NOT NULL
);
CREATE INDEX server_instances_lease ON server_instances (lease_until);

-- NULL: a hold of no instance (a batch's own hold, or a server from before this migration),
-- freed by expiry (and, for the latter, by its pid on its own host).
ALTER TABLE reservations ADD COLUMN instance_id TEXT;
CREATE INDEX reservations_instance ON reservations (instance_id);
