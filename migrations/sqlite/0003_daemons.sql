-- Crash recovery in seconds (issue 20): every running daemon records itself and a heartbeat, so
-- the rows a dead daemon leased return to pending seconds after it died instead of when their
-- lease expires. No column or index of tiktok_outbox changes.

-- One row per daemon run, keyed by its lease owner (host:pid:tag, as in
-- tiktok_outbox.lease_owner). Rows of daemons silent for a day are deleted.
CREATE TABLE forwarder_daemons (
    owner        TEXT    PRIMARY KEY,
    host         TEXT    NOT NULL,
    pid          INTEGER NOT NULL,
    boot_id      TEXT,              -- Linux's /proc/sys/kernel/random/boot_id; NULL elsewhere
    pid_ns       TEXT,              -- the PID namespace (/proc/self/ns/pid); NULL elsewhere
    started_at   REAL    NOT NULL,  -- Unix seconds
    heartbeat_at REAL    NOT NULL,  -- Unix seconds, written every second while it runs
    stopped_at   REAL,              -- a clean stop, or when another daemon found it dead
    stopped_by   TEXT               -- the owner that found it dead (itself for a clean stop)
);

-- The heartbeat check reads the daemons not known to have stopped, however many ran before.
CREATE INDEX forwarder_daemons_running ON forwarder_daemons (heartbeat_at)
    WHERE stopped_at IS NULL;
