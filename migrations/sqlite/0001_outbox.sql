-- The outbox contract of docs/contract.md: the table an application inserts into, and the
-- columns, indexes and state table the daemon owns. Public API: change it only in a new file.

CREATE TABLE tiktok_outbox (
    id              INTEGER PRIMARY KEY,
    -- What the application writes.
    event_id        TEXT    NOT NULL,
    event           TEXT    NOT NULL,
    event_time      INTEGER DEFAULT (CAST(strftime('%s', 'now') AS INTEGER)),
    payload         TEXT    NOT NULL DEFAULT '{}',
    pixel_code      TEXT    DEFAULT '',
    event_source    TEXT    NOT NULL DEFAULT 'web',
    test_event_code TEXT    DEFAULT '',
    -- What the daemon owns; readable by the application.
    status          TEXT    NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'inflight', 'sent', 'dead')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL    NOT NULL DEFAULT 0,   -- Unix seconds; 0 means now
    lease_owner     TEXT,
    lease_until     REAL,                         -- Unix seconds
    last_code       TEXT,                         -- TikTok's code, or http_503, timeout, malformed...
    last_error      TEXT,                         -- a reason a person can act on
    request_id      TEXT,                         -- TikTok's request_id of the last answer
    created_at      REAL    NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    updated_at      REAL,
    sent_at         REAL
);

-- The idempotency key. An empty or NULL pixel_code both mean "the default pixel", and a plain
-- UNIQUE would treat NULLs as distinct, so the key is on an expression. INSERT ... ON CONFLICT
-- DO NOTHING (no conflict target) and INSERT OR IGNORE both honour it.
CREATE UNIQUE INDEX tiktok_outbox_dedup
    ON tiktok_outbox (ifnull(pixel_code, ''), event, event_id);

-- The claim reads only due pending rows; partial indexes stay small however many rows are sent.
CREATE INDEX tiktok_outbox_due ON tiktok_outbox (next_attempt_at) WHERE status = 'pending';
CREATE INDEX tiktok_outbox_lease ON tiktok_outbox (lease_until) WHERE status = 'inflight';
CREATE INDEX tiktok_outbox_dead ON tiktok_outbox (updated_at) WHERE status = 'dead';

-- Small daemon state other processes read (`forwarder status`): the destination's pause, etc.
CREATE TABLE forwarder_state (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,   -- JSON
    updated_at REAL NOT NULL
);
