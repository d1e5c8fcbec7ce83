-- Operator tools (issue 5): the record of replayed dead letters, and an index that lets the
-- retention sweep find old sent rows without scanning the table.

-- One row per dead letter an operator replayed: the failure it had when it was replayed.
CREATE TABLE tiktok_outbox_replays (
    id          INTEGER PRIMARY KEY,
    outbox_id   INTEGER NOT NULL,
    replayed_at REAL    NOT NULL,
    attempts    INTEGER NOT NULL,
    last_code   TEXT,
    last_error  TEXT,
    request_id  TEXT,
    dead_at     REAL
);
CREATE INDEX tiktok_outbox_replays_outbox ON tiktok_outbox_replays (outbox_id);

CREATE INDEX tiktok_outbox_sent ON tiktok_outbox (sent_at) WHERE status = 'sent';
