-- Every statement the PostgreSQL store runs, by name (loaded by forwarder/store/queries.py).
-- Parameters are positional ($1); lists travel as arrays, read with = ANY($n) or unnest.

-- === Connections and migrations =============================================================

-- name: check_connection
-- Whether an idle connection still answers.
SELECT 1

-- name: migration_lock
-- Serialise `migrate` across daemons until the transaction ends.
SELECT pg_advisory_xact_lock($1)

-- name: migrations_table
-- Make the table that records applied migrations.
CREATE TABLE IF NOT EXISTS forwarder_migrations (
    name       text PRIMARY KEY,
    applied_at double precision NOT NULL
)

-- name: migrations_table_exists
-- Whether the table of applied migrations exists (a database never migrated has none).
SELECT to_regclass('forwarder_migrations') IS NOT NULL

-- name: applied_migrations
-- The names of the applied migrations.
SELECT name FROM forwarder_migrations ORDER BY name

-- name: record_migration
-- Record one migration as applied.
INSERT INTO forwarder_migrations (name, applied_at) VALUES ($1, $2)

-- name: wake
-- Wake the daemons listening on channel $1, as the insert trigger does.
SELECT pg_notify($1, '')

-- name: ping
-- Whether the outbox table answers.
SELECT 1 FROM tiktok_outbox LIMIT 1

-- === The worker's operations ================================================================

-- name: claim
-- Lease up to $4 due rows nobody else holds, oldest due first, in one statement.
WITH due AS (
    SELECT id FROM tiktok_outbox
     WHERE status = 'pending' AND next_attempt_at <= $3
     ORDER BY next_attempt_at
     LIMIT $4
       FOR UPDATE SKIP LOCKED
)
UPDATE tiktok_outbox AS t
   SET status = 'inflight', lease_owner = $1, lease_until = $2, updated_at = $3
  FROM due
 WHERE t.id = due.id
RETURNING t.id, t.event_id, t.event, t.event_time, t.payload, t.pixel_code, t.event_source,
          t.test_event_code, t.attempts, t.created_at, t.payload_format

-- name: mark_sent
-- Mark the rows $1 sent (TikTok accepted them) and count their attempt; $6, parallel to $1,
-- holds a note for the rows whose event was sent with a warning (kept as last_error).
-- A row this very settle already marked (same sent_at, request and code) matches again and
-- keeps its one attempt: a retried settle whose commit went through but whose answer was lost
-- counts those rows as marked, not as leases lost.
UPDATE tiktok_outbox AS t
   SET status = 'sent', attempts = t.attempts + (t.status = 'inflight')::int, sent_at = $5,
       updated_at = $5, last_code = $3, last_error = s.note, request_id = $4,
       lease_owner = NULL, lease_until = NULL
  FROM unnest($1::bigint[], $6::text[]) AS s(id, note)
 WHERE t.id = s.id
   AND (t.status = 'inflight' AND t.lease_owner = $2
        OR t.status = 'sent' AND t.sent_at = $5 AND t.request_id IS NOT DISTINCT FROM $4
           AND t.last_code = $3)

-- name: mark_sent_scrubbed
-- The same as mark_sent, replacing each payload; ids $1, payloads $2 and notes $7 are parallel.
-- The payload is then the event as sent, in TikTok's shape: a converted row's format says so.
UPDATE tiktok_outbox AS t
   SET status = 'sent', attempts = t.attempts + (t.status = 'inflight')::int, sent_at = $6,
       updated_at = $6, last_code = $4, last_error = s.note, request_id = $5,
       lease_owner = NULL, lease_until = NULL, payload = s.payload,
       payload_format = CASE t.payload_format WHEN 'meta_capi' THEN 'tiktok'
                                              ELSE t.payload_format END
  FROM unnest($1::bigint[], $2::text[], $7::text[]) AS s(id, payload, note)
 WHERE t.id = s.id
   AND (t.status = 'inflight' AND t.lease_owner = $3
        OR t.status = 'sent' AND t.sent_at = $6 AND t.request_id IS NOT DISTINCT FROM $5
           AND t.last_code = $4)

-- name: reschedule
-- Return rows to pending, each due at its own time; ids $1 and times $2 are parallel.
UPDATE tiktok_outbox AS t
   SET status = 'pending', attempts = t.attempts + $4, next_attempt_at = r.next_attempt_at,
       last_code = $5, last_error = $6, request_id = $7, updated_at = $8,
       lease_owner = NULL, lease_until = NULL
  FROM unnest($1::bigint[], $2::double precision[]) AS r(id, next_attempt_at)
 WHERE t.id = r.id AND t.status = 'inflight' AND t.lease_owner = $3

-- name: mark_dead
-- Dead-letter rows, each with its code and reason; ids $1, codes $2 and reasons $3 are parallel.
UPDATE tiktok_outbox AS t
   SET status = 'dead', attempts = t.attempts + $5, last_code = d.code, last_error = d.reason,
       request_id = $6, updated_at = $7, lease_owner = NULL, lease_until = NULL
  FROM unnest($1::bigint[], $2::text[], $3::text[]) AS d(id, code, reason)
 WHERE t.id = d.id AND t.status = 'inflight' AND t.lease_owner = $4

-- name: release
-- Return leased rows to pending untouched (shutdown): no attempt, no delay.
UPDATE tiktok_outbox
   SET status = 'pending', updated_at = $3, lease_owner = NULL, lease_until = NULL
 WHERE id = ANY($1::bigint[]) AND status = 'inflight' AND lease_owner = $2

-- name: extend_lease
-- Push the lease of rows still being worked on.
UPDATE tiktok_outbox SET lease_until = $3
 WHERE id = ANY($1::bigint[]) AND status = 'inflight' AND lease_owner = $2

-- name: rescue_expired
-- Return rows whose lease ran out (their daemon died) to pending, never a row settled meanwhile.
-- Rows locked right now (their owner is settling them, or another daemon is rescuing them) are
-- skipped, and FOR UPDATE re-checks the condition on the newest version of each row it locks:
-- a row that its live daemon has just settled is never put back to pending.
WITH expired AS (
    SELECT id FROM tiktok_outbox
     WHERE status = 'inflight' AND lease_until < $1
       FOR UPDATE SKIP LOCKED
)
UPDATE tiktok_outbox AS t
   SET status = 'pending', updated_at = $1, lease_owner = NULL, lease_until = NULL
  FROM expired
 WHERE t.id = expired.id AND t.status = 'inflight' AND t.lease_until < $1

-- name: prune_sent
-- Delete at most $2 rows sent before $1, oldest first.
-- Rows another daemon is pruning are skipped, so the sweep never holds many row locks or
-- writes a huge transaction.
DELETE FROM tiktok_outbox
 WHERE id IN (SELECT id FROM tiktok_outbox
               WHERE status = 'sent' AND sent_at < $1
               ORDER BY sent_at
               LIMIT $2
                 FOR UPDATE SKIP LOCKED)

-- name: register_daemon
-- Record a daemon as running, its heartbeat now (again, if another daemon found it dead).
-- The daemons' times come from the server's clock, so daemons on hosts whose clocks disagree
-- judge each other's heartbeats alike.
INSERT INTO forwarder_daemons (owner, host, pid, boot_id, pid_ns, started_at, heartbeat_at)
VALUES ($1, $2, $3, $4, $5, extract(epoch FROM clock_timestamp())::double precision,
        extract(epoch FROM clock_timestamp())::double precision)
ON CONFLICT (owner) DO UPDATE
   SET heartbeat_at = excluded.heartbeat_at, stopped_at = NULL, stopped_by = NULL

-- name: heartbeat
-- Record that daemon $1 is alive, unless it was marked stopped (found dead while it stalled).
UPDATE forwarder_daemons
   SET heartbeat_at = extract(epoch FROM clock_timestamp())::double precision
 WHERE owner = $1 AND stopped_at IS NULL

-- name: daemon_stopped
-- Record that daemon $1 stopped cleanly, holding no lease.
UPDATE forwarder_daemons
   SET stopped_at = extract(epoch FROM clock_timestamp())::double precision, stopped_by = $1
 WHERE owner = $1

-- name: silent_daemons
-- The daemons other than $1, not known to have stopped, whose last heartbeat is more than $2
-- seconds old, with how long ago it was.
SELECT owner, extract(epoch FROM clock_timestamp())::double precision - heartbeat_at
  FROM forwarder_daemons
 WHERE stopped_at IS NULL
   AND heartbeat_at < extract(epoch FROM clock_timestamp())::double precision - $2
   AND owner <> $1

-- name: daemons_here
-- The daemons other than $1, not known to have stopped, of boot $2 and PID namespace $3.
SELECT owner, host, pid, boot_id, pid_ns FROM forwarder_daemons
 WHERE stopped_at IS NULL AND boot_id = $2 AND pid_ns = $3 AND owner <> $1

-- name: rescue_owner
-- Return the rows daemon $1 leased to pending; with $2, only while its last heartbeat is more
-- than $2 seconds old (a daemon that beats again keeps its rows). $3 is the daemon's time.
-- As rescue_expired, rows locked right now (their owner is settling them) are skipped, and
-- FOR UPDATE re-checks the lease on the newest version of each row it locks. "lease_until > 0"
-- holds for every inflight row: it lets the partial index tiktok_outbox_lease serve the
-- lookup, so no index on lease_owner costs every claim and settle a write.
WITH silent AS (
    SELECT 1 FROM forwarder_daemons
     WHERE owner = $1
       AND ($2::double precision IS NULL
            OR heartbeat_at < extract(epoch FROM clock_timestamp())::double precision - $2)
), leased AS (
    SELECT id FROM tiktok_outbox
     WHERE status = 'inflight' AND lease_until > 0 AND lease_owner = $1
       AND EXISTS (SELECT 1 FROM silent)
       FOR UPDATE SKIP LOCKED
)
UPDATE tiktok_outbox AS t
   SET status = 'pending', updated_at = $3, lease_owner = NULL, lease_until = NULL
  FROM leased
 WHERE t.id = leased.id AND t.status = 'inflight' AND t.lease_owner = $1

-- name: found_dead
-- Mark daemon $1 stopped by $3 once it holds no lease (with $2, while it is that silent).
UPDATE forwarder_daemons
   SET stopped_at = extract(epoch FROM clock_timestamp())::double precision, stopped_by = $3
 WHERE owner = $1 AND stopped_at IS NULL
   AND ($2::double precision IS NULL
        OR heartbeat_at < extract(epoch FROM clock_timestamp())::double precision - $2)
   AND NOT EXISTS (SELECT 1 FROM tiktok_outbox
                    WHERE status = 'inflight' AND lease_until > 0 AND lease_owner = $1)

-- name: prune_daemons
-- Delete the records of daemons whose last heartbeat is more than $1 seconds old.
DELETE FROM forwarder_daemons
 WHERE heartbeat_at < extract(epoch FROM clock_timestamp())::double precision - $1

-- name: set_state
-- Record one key of the daemons' state.
INSERT INTO forwarder_state (key, value, updated_at) VALUES ($1, $2, $3)
ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at

-- name: get_state
-- One key of the daemons' state.
SELECT value FROM forwarder_state WHERE key = $1

-- name: states
-- Every key of the daemons' state.
SELECT key, value FROM forwarder_state

-- === Operators' and applications' operations ================================================

-- name: next_due
-- The earliest next attempt among pending rows.
SELECT min(next_attempt_at) FROM tiktok_outbox WHERE status = 'pending'

-- name: insert
-- Insert one event as an application would, unless its (pixel_code, event, event_id) exists.
INSERT INTO tiktok_outbox
       (event_id, event, event_time, payload, pixel_code, event_source, test_event_code,
        payload_format)
VALUES ($1, $2, coalesce($3::bigint, floor(extract(epoch FROM now()))::bigint), $4, $5, $6, $7,
        $8)
ON CONFLICT DO NOTHING
RETURNING id

-- name: find_key
-- The id of the row with this (pixel_code, event, event_id).
SELECT id FROM tiktok_outbox
 WHERE coalesce(pixel_code, '') = $1 AND event = $2 AND event_id = $3

-- name: counts
-- The pending, inflight, sent and dead rows.
-- Each count reads its status's partial index (migrations 0001 and 0002), not the whole table.
SELECT (SELECT count(*) FROM tiktok_outbox WHERE status = 'pending'),
       (SELECT count(*) FROM tiktok_outbox WHERE status = 'inflight'),
       (SELECT count(*) FROM tiktok_outbox WHERE status = 'sent'),
       (SELECT count(*) FROM tiktok_outbox WHERE status = 'dead')

-- name: lag
-- When the oldest pending row was made, and when the next one is due.
SELECT min(created_at), min(next_attempt_at) FROM tiktok_outbox WHERE status = 'pending'

-- name: recent_codes
-- The failure codes recorded since $1, most frequent first.
-- Two halves, each served by its partial index, so a table of millions of sent rows is not read.
SELECT last_code, count(*) FROM (
    SELECT last_code FROM tiktok_outbox
     WHERE status = 'pending' AND next_attempt_at >= 0
       AND last_code IS NOT NULL AND updated_at >= $1
    UNION ALL
    SELECT last_code FROM tiktok_outbox
     WHERE status = 'dead' AND updated_at >= $1
) AS failing
 GROUP BY last_code ORDER BY count(*) DESC LIMIT 20

-- name: dead_rows
-- The dead rows a filter names, oldest first; a NULL filter matches every row.
-- Codes $1, events $2, dead since $3, ids $4, at most $5 rows (NULL: all). The planner of a
-- call's own plan drops the NULL filters, so the ids are still looked up by primary key.
SELECT id, event_id, event, event_time, payload, pixel_code, event_source, test_event_code,
       status, attempts, next_attempt_at, last_code, last_error, request_id, created_at,
       updated_at, sent_at, payload_format
  FROM tiktok_outbox
 WHERE status = 'dead'
   AND ($1::text[] IS NULL OR last_code = ANY($1::text[]))
   AND ($2::text[] IS NULL OR event = ANY($2::text[]))
   AND ($3::double precision IS NULL OR updated_at >= $3::double precision)
   AND ($4::bigint[] IS NULL OR id = ANY($4::bigint[]))
 ORDER BY id
 LIMIT $5

-- name: replay_dead
-- Return the next $6 dead rows after id $5 a filter names (as dead_rows) to pending.
-- Data-modifying CTEs share one snapshot, so the replay record reads each row's failure from
-- before the update. Returns how many rows changed and the highest id, where the next batch
-- starts.
WITH picked AS (
    SELECT id FROM tiktok_outbox
     WHERE status = 'dead'
       AND ($1::text[] IS NULL OR last_code = ANY($1::text[]))
       AND ($2::text[] IS NULL OR event = ANY($2::text[]))
       AND ($3::double precision IS NULL OR updated_at >= $3::double precision)
       AND ($4::bigint[] IS NULL OR id = ANY($4::bigint[]))
       AND id > $5
     ORDER BY id
     LIMIT $6
       FOR UPDATE
),
recorded AS (
    INSERT INTO tiktok_outbox_replays
           (outbox_id, replayed_at, attempts, last_code, last_error, request_id, dead_at)
    SELECT t.id, $7::double precision, t.attempts, t.last_code, t.last_error, t.request_id,
           t.updated_at
      FROM tiktok_outbox AS t JOIN picked USING (id)
),
changed AS (
    UPDATE tiktok_outbox AS t
       SET status = 'pending', attempts = 0, next_attempt_at = 0,
           updated_at = $7::double precision
      FROM picked
     WHERE t.id = picked.id
    RETURNING t.id
)
SELECT count(*), max(id) FROM changed

-- name: purge_dead
-- Delete the next $6 dead rows after id $5 a filter names (as dead_rows).
-- Returns how many rows went and the highest id, where the next batch starts.
WITH picked AS (
    SELECT id FROM tiktok_outbox
     WHERE status = 'dead'
       AND ($1::text[] IS NULL OR last_code = ANY($1::text[]))
       AND ($2::text[] IS NULL OR event = ANY($2::text[]))
       AND ($3::double precision IS NULL OR updated_at >= $3::double precision)
       AND ($4::bigint[] IS NULL OR id = ANY($4::bigint[]))
       AND id > $5
     ORDER BY id
     LIMIT $6
       FOR UPDATE
),
changed AS (
    DELETE FROM tiktok_outbox AS t USING picked WHERE t.id = picked.id RETURNING t.id
)
SELECT count(*), max(id) FROM changed

-- name: find_event
-- Every row with this event_id (any pixel or event name), as an operator sees it.
SELECT id, event_id, event, event_time, payload, pixel_code, event_source, test_event_code,
       status, attempts, next_attempt_at, last_code, last_error, request_id, created_at,
       updated_at, sent_at, payload_format
  FROM tiktok_outbox
 WHERE event_id = $1
 ORDER BY id

-- name: replays
-- The failures the rows $1 had when they were replayed, oldest first.
SELECT outbox_id, replayed_at, attempts, last_code, last_error, request_id, dead_at
  FROM tiktok_outbox_replays
 WHERE outbox_id = ANY($1::bigint[])
 ORDER BY id
