-- Every statement the SQLite store runs, by name (loaded by forwarder/store/queries.py).
-- Parameters are named (:now); lists travel as one JSON array parameter read with json_each,
-- and rows of values as a JSON array of arrays read with json_extract(value, '$[n]') (the ->>
-- operator needs SQLite 3.38; Ubuntu 22.04 has 3.37.2).

-- === Connections ============================================================================

-- name: synchronous_normal
-- The writing connection's durability.
-- WAL + NORMAL: a commit survives a crash of the daemon; a power cut may undo the last "sent"
-- marks, which only resends events TikTok deduplicates by event_id.
PRAGMA synchronous = NORMAL

-- name: journal_wal
-- Switch the file to WAL, so the application inserts while the daemon reads.
PRAGMA journal_mode = WAL

-- name: data_version
-- A number that moves when another connection commits to the file.
PRAGMA data_version

-- name: begin
-- Start a read transaction, so several reads see one moment.
BEGIN

-- name: begin_immediate
-- Start a write transaction, taking the write lock now.
BEGIN IMMEDIATE

-- name: commit
-- End the transaction.
COMMIT

-- name: rollback
-- Undo the transaction.
ROLLBACK

-- === Migrations =============================================================================

-- name: migrations_table
-- Make the table that records applied migrations.
CREATE TABLE IF NOT EXISTS forwarder_migrations (
    name       TEXT PRIMARY KEY,
    applied_at REAL NOT NULL
)

-- name: applied_migrations
-- The names of the applied migrations.
SELECT name FROM forwarder_migrations ORDER BY name

-- name: record_migration
-- Record one migration as applied.
INSERT INTO forwarder_migrations (name, applied_at) VALUES (:name, :applied_at)

-- === The worker's claims ====================================================================

-- name: claim
-- Lease the due rows and return them, alone on the file, where they cannot be read as JSON.
-- The due rows are the pending ones oldest due first (the partial index tiktok_outbox_due
-- serves every claim's read of them).
UPDATE tiktok_outbox
   SET status = 'inflight', lease_owner = :owner, lease_until = :lease_until, updated_at = :now
 WHERE id IN (SELECT id FROM tiktok_outbox
               WHERE status = 'pending' AND next_attempt_at <= :now
               ORDER BY next_attempt_at
               LIMIT :limit)
RETURNING id, event_id, event, event_time, payload, pixel_code, event_source, test_event_code,
          attempts, created_at, payload_format

-- name: claimed
-- The rows one claim leased, read again (leniently, when one is not valid UTF-8).
-- Only that claim gives rows of this owner this updated_at and this lease_until (a heartbeat
-- moves lease_until, not updated_at).
SELECT id, event_id, event, event_time, payload, pixel_code, event_source, test_event_code,
       attempts, created_at, payload_format
  FROM tiktok_outbox
 WHERE status = 'inflight' AND lease_until = :lease_until
   AND lease_owner = :owner AND updated_at = :now
 ORDER BY next_attempt_at, id

-- name: due_rows
-- The due rows as one JSON array of rows, alone on the file (then lease_all).
-- One JSON value: the writer's thread takes the GIL back once per statement, not once per row.
-- REAL values are printed with 17 significant digits so they read back as the same double
-- (json_array keeps 15, which would move created_at by microseconds). Where SQLite cannot
-- write a row as JSON (a BLOB, an infinite REAL) or its TEXT is not UTF-8, the claim runs the
-- statement "claim" instead and reads the rows one by one.
SELECT json_group_array(json_array(
    id, event_id, event,
    CASE typeof(event_time) WHEN 'real' THEN json(printf('%!.17g', event_time))
                            ELSE event_time END,
    payload, pixel_code, event_source, test_event_code, attempts,
    CASE typeof(created_at) WHEN 'real' THEN json(printf('%!.17g', created_at))
                            ELSE created_at END,
    payload_format))
  FROM (SELECT * FROM tiktok_outbox
         WHERE status = 'pending' AND next_attempt_at <= :now
         ORDER BY next_attempt_at
         LIMIT :limit)

-- name: lease_all
-- Lease the rows due_rows read, in the same transaction.
UPDATE tiktok_outbox
   SET status = 'inflight', lease_owner = :owner, lease_until = :lease_until, updated_at = :now
 WHERE id IN (SELECT value FROM json_each(:ids)) AND status = 'pending'

-- name: due
-- The due ids as one JSON array, while an application writes too (then lease, then leased).
SELECT json_group_array(id)
  FROM (SELECT id FROM tiktok_outbox
         WHERE status = 'pending' AND next_attempt_at <= :now
         ORDER BY next_attempt_at
         LIMIT :limit)

-- name: lease
-- Lease all of the ids or none, while an application writes too.
-- Another claimer (a second daemon on the file) may have taken some since they were read, and
-- then the claim reads again. The count is computed once.
UPDATE tiktok_outbox
   SET status = 'inflight', lease_owner = :owner, lease_until = :lease_until, updated_at = :now
 WHERE id IN (SELECT value FROM json_each(:ids))
   AND status = 'pending' AND next_attempt_at <= :now
   AND (SELECT count(*) FROM tiktok_outbox
         WHERE id IN (SELECT value FROM json_each(:ids))
           AND status = 'pending' AND next_attempt_at <= :now) = :rows

-- name: leased
-- The rows lease leased, read back as they are.
SELECT id, event_id, event, event_time, payload, pixel_code, event_source, test_event_code,
       attempts, created_at, payload_format
  FROM tiktok_outbox
 WHERE id IN (SELECT value FROM json_each(:ids))
   AND status = 'inflight' AND lease_owner = :owner AND lease_until = :lease_until
 ORDER BY next_attempt_at, id

-- name: leased_rows
-- The rows lease leased, read back as one JSON array of rows (as due_rows writes them).
SELECT json_group_array(json_array(
    id, event_id, event,
    CASE typeof(event_time) WHEN 'real' THEN json(printf('%!.17g', event_time))
                            ELSE event_time END,
    payload, pixel_code, event_source, test_event_code, attempts,
    CASE typeof(created_at) WHEN 'real' THEN json(printf('%!.17g', created_at))
                            ELSE created_at END,
    payload_format))
  FROM (SELECT * FROM tiktok_outbox
         WHERE id IN (SELECT value FROM json_each(:ids))
           AND status = 'inflight' AND lease_owner = :owner AND lease_until = :lease_until
         ORDER BY next_attempt_at, id)

-- === The worker's settles ===================================================================

-- name: mark_sent
-- Mark the rows :ids sent (TikTok accepted them) and count their attempt; :notes is
-- {"id": note} for the rows whose event was sent with a warning (kept as last_error).
-- A row this very settle already marked (same sent_at, request and code) matches again and
-- keeps its one attempt: the worker retries a settle whose later transaction failed, and the
-- rows of its earlier, committed ones are then counted as marked, not as leases lost.
UPDATE tiktok_outbox
   SET status = 'sent', attempts = attempts + (status = 'inflight'), sent_at = :now,
       updated_at = :now, last_code = :code, request_id = :request_id,
       last_error = json_extract(:notes, '$."' || id || '"'),
       lease_owner = NULL, lease_until = NULL
 WHERE id IN (SELECT value FROM json_each(:ids))
   AND (status = 'inflight' AND lease_owner = :owner
        OR status = 'sent' AND sent_at = :now AND request_id IS :request_id
           AND last_code = :code)

-- name: mark_sent_by_key
-- The same as mark_sent, for rows given as :rows {"id": null, ...} with their :notes.
UPDATE tiktok_outbox
   SET status = 'sent', attempts = attempts + (status = 'inflight'), sent_at = :now,
       updated_at = :now, last_code = :code, request_id = :request_id,
       last_error = json_extract(:notes, '$."' || tiktok_outbox.id || '"'),
       lease_owner = NULL, lease_until = NULL
  FROM json_each(:rows) AS marked
 WHERE tiktok_outbox.id = CAST(marked.key AS INTEGER)
   AND (status = 'inflight' AND lease_owner = :owner
        OR status = 'sent' AND sent_at = :now AND request_id IS :request_id
           AND last_code = :code)

-- name: mark_sent_scrubbed
-- The same as mark_sent, replacing each payload: :rows is {"id": payload, ...} (an object,
-- not an array of pairs: json_each then gives each payload as text, parsed once).
-- The payload is then the event as sent, in TikTok's shape: a converted row's format says so.
UPDATE tiktok_outbox
   SET status = 'sent', attempts = attempts + (status = 'inflight'), sent_at = :now,
       updated_at = :now, last_code = :code, request_id = :request_id,
       last_error = json_extract(:notes, '$."' || tiktok_outbox.id || '"'),
       lease_owner = NULL, lease_until = NULL, payload = scrubbed.value,
       payload_format = CASE payload_format WHEN 'meta_capi' THEN 'tiktok' ELSE payload_format END
  FROM json_each(:rows) AS scrubbed
 WHERE tiktok_outbox.id = CAST(scrubbed.key AS INTEGER)
   AND (status = 'inflight' AND lease_owner = :owner
        OR status = 'sent' AND sent_at = :now AND request_id IS :request_id
           AND last_code = :code)

-- name: reschedule
-- Return rows to pending, each due at its own time: :rows is {"id": next_attempt_at, ...}.
-- "updated_at <= :now": while sharing the file a reschedule is several transactions, and when
-- a later one fails the worker retries the whole call; rows of an earlier one may have been
-- claimed again meanwhile (a claim sets updated_at to its own, later, time) and are not this
-- call's to reschedule.
UPDATE tiktok_outbox
   SET status = 'pending', attempts = attempts + :attempt,
       next_attempt_at = due.value,
       last_code = :code, last_error = :message, request_id = :request_id, updated_at = :now,
       lease_owner = NULL, lease_until = NULL
  FROM json_each(:rows) AS due
 WHERE tiktok_outbox.id = CAST(due.key AS INTEGER)
   AND status = 'inflight' AND lease_owner = :owner AND updated_at <= :now

-- name: mark_dead
-- Dead-letter rows, each with its code and reason: :rows is [[id, code, reason], ...].
UPDATE tiktok_outbox
   SET status = 'dead', attempts = attempts + :attempt,
       last_code = json_extract(dead.value, '$[1]'),
       last_error = json_extract(dead.value, '$[2]'), request_id = :request_id,
       updated_at = :now, lease_owner = NULL, lease_until = NULL
  FROM json_each(:rows) AS dead
 WHERE tiktok_outbox.id = json_extract(dead.value, '$[0]')
   AND status = 'inflight' AND lease_owner = :owner

-- name: release
-- Return leased rows to pending untouched (shutdown): no attempt, no delay.
UPDATE tiktok_outbox
   SET status = 'pending', updated_at = :now, lease_owner = NULL, lease_until = NULL
 WHERE id IN (SELECT value FROM json_each(:ids))
   AND status = 'inflight' AND lease_owner = :owner

-- name: extend_lease
-- Push the lease of rows still being worked on.
UPDATE tiktok_outbox SET lease_until = :lease_until
 WHERE id IN (SELECT value FROM json_each(:ids))
   AND status = 'inflight' AND lease_owner = :owner

-- name: rescue_expired
-- Return at most :limit rows whose lease ran out (their daemon died) to pending.
UPDATE tiktok_outbox
   SET status = 'pending', updated_at = :now, lease_owner = NULL, lease_until = NULL
 WHERE id IN (SELECT id FROM tiktok_outbox
               WHERE status = 'inflight' AND lease_until < :now
               LIMIT :limit)

-- name: prune_sent
-- Delete at most :limit rows sent before :before.
DELETE FROM tiktok_outbox
 WHERE id IN (SELECT id FROM tiktok_outbox
               WHERE status = 'sent' AND sent_at < :before
               LIMIT :limit)

-- === The daemons' records and heartbeats =====================================================

-- name: register_daemon
-- Record a daemon as running, its heartbeat now (again, if another daemon found it dead).
INSERT INTO forwarder_daemons (owner, host, pid, boot_id, pid_ns, started_at, heartbeat_at)
VALUES (:owner, :host, :pid, :boot_id, :pid_ns, :now, :now)
ON CONFLICT (owner) DO UPDATE
   SET heartbeat_at = excluded.heartbeat_at, stopped_at = NULL, stopped_by = NULL

-- name: heartbeat
-- Record that a daemon is alive, unless it was marked stopped (found dead while it stalled).
UPDATE forwarder_daemons SET heartbeat_at = :now WHERE owner = :owner AND stopped_at IS NULL

-- name: daemon_stopped
-- Record that a daemon stopped cleanly, holding no lease.
UPDATE forwarder_daemons SET stopped_at = :now, stopped_by = :owner WHERE owner = :owner

-- name: silent_daemons
-- The daemons other than :me, not known to have stopped, whose last heartbeat is before
-- :before, with how long ago that was.
SELECT owner, :now - heartbeat_at FROM forwarder_daemons
 WHERE stopped_at IS NULL AND heartbeat_at < :before AND owner <> :me

-- name: daemons_here
-- The daemons other than :me, not known to have stopped, of this boot and PID namespace.
SELECT owner, host, pid, boot_id, pid_ns FROM forwarder_daemons
 WHERE stopped_at IS NULL AND boot_id = :boot_id AND pid_ns = :pid_ns AND owner <> :me

-- name: rescue_owner
-- Return at most :limit rows :owner leased to pending; with :before, only while its last
-- heartbeat is before :before (a daemon that beats again keeps its rows).
-- "lease_until > 0" holds for every inflight row: it lets the partial index
-- tiktok_outbox_lease serve the lookup, so no index on lease_owner costs every claim and
-- settle a write.
UPDATE tiktok_outbox
   SET status = 'pending', updated_at = :now, lease_owner = NULL, lease_until = NULL
 WHERE id IN (SELECT id FROM tiktok_outbox
               WHERE status = 'inflight' AND lease_until > 0 AND lease_owner = :owner
                 AND (:before IS NULL
                      OR EXISTS (SELECT 1 FROM forwarder_daemons
                                  WHERE owner = :owner AND heartbeat_at < :before))
               LIMIT :limit)

-- name: found_dead
-- Mark :owner stopped by :rescuer once it holds no lease (with :before, while it is silent).
UPDATE forwarder_daemons SET stopped_at = :now, stopped_by = :rescuer
 WHERE owner = :owner AND stopped_at IS NULL
   AND (:before IS NULL OR heartbeat_at < :before)
   AND NOT EXISTS (SELECT 1 FROM tiktok_outbox
                    WHERE status = 'inflight' AND lease_until > 0 AND lease_owner = :owner)

-- name: prune_daemons
-- Delete the records of daemons whose last heartbeat is before :before.
DELETE FROM forwarder_daemons WHERE heartbeat_at < :before

-- === The daemon's state =====================================================================

-- name: set_state
-- Record one key of the daemon's state.
INSERT INTO forwarder_state (key, value, updated_at) VALUES (:key, :value, :now)
ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at

-- name: get_state
-- One key of the daemon's state.
SELECT value FROM forwarder_state WHERE key = :key

-- name: states
-- Every key of the daemon's state.
SELECT key, value FROM forwarder_state

-- === Health =================================================================================

-- name: ping
-- Whether the outbox table answers.
SELECT 1 FROM tiktok_outbox LIMIT 1

-- name: write_probe
-- A write that changes nothing: SQLite says a file is read-only only at the first write.
UPDATE tiktok_outbox SET id = id WHERE 0

-- === Operators' and applications' operations ================================================

-- name: next_due
-- The earliest next attempt among pending rows.
SELECT min(next_attempt_at) FROM tiktok_outbox WHERE status = 'pending'

-- name: insert
-- Insert one event as an application would, unless its (pixel_code, event, event_id) exists.
INSERT INTO tiktok_outbox
       (event_id, event, event_time, payload, pixel_code, event_source, test_event_code,
        payload_format)
VALUES (:event_id, :event, coalesce(:event_time, CAST(strftime('%s', 'now') AS INTEGER)),
        :payload, :pixel_code, :event_source, :test_event_code, :payload_format)
ON CONFLICT DO NOTHING
RETURNING id

-- name: find_key
-- The id of the row with this (pixel_code, event, event_id).
SELECT id FROM tiktok_outbox
 WHERE ifnull(pixel_code, '') = :pixel_code AND event = :event AND event_id = :event_id

-- name: counts
-- All rows, then the pending, inflight and dead ones.
-- Statuses other than sent come from their partial indexes; sent is the rest of the table.
SELECT (SELECT count(*) FROM tiktok_outbox),
       (SELECT count(*) FROM tiktok_outbox WHERE status = 'pending'),
       (SELECT count(*) FROM tiktok_outbox WHERE status = 'inflight'),
       (SELECT count(*) FROM tiktok_outbox WHERE status = 'dead')

-- name: lag
-- When the oldest pending row was made, and when the next one is due.
SELECT min(created_at), min(next_attempt_at) FROM tiktok_outbox WHERE status = 'pending'

-- name: recent_codes
-- The failure codes recorded since :since, most frequent first.
-- Two halves, each served by its partial index, so a table of millions of sent rows is not read.
SELECT last_code, count(*) FROM (
    SELECT last_code FROM tiktok_outbox
     WHERE status = 'pending' AND next_attempt_at >= 0
       AND last_code IS NOT NULL AND updated_at >= :since
    UNION ALL
    SELECT last_code FROM tiktok_outbox
     WHERE status = 'dead' AND updated_at >= :since
) GROUP BY last_code ORDER BY count(*) DESC LIMIT 20

-- name: dead_rows
-- The dead rows a filter without ids names, oldest first; a NULL filter matches every row.
-- :codes and :events are JSON arrays; :limit NULL means all (a negative LIMIT has none).
SELECT id, event_id, event, event_time, payload, pixel_code, event_source, test_event_code,
       status, attempts, next_attempt_at, last_code, last_error, request_id, created_at,
       updated_at, sent_at, payload_format
  FROM tiktok_outbox
 WHERE status = 'dead'
   AND (:codes IS NULL OR last_code IN (SELECT value FROM json_each(:codes)))
   AND (:events IS NULL OR event IN (SELECT value FROM json_each(:events)))
   AND (:since IS NULL OR updated_at >= :since)
 ORDER BY id
 LIMIT coalesce(:limit, -1)

-- name: dead_rows_by_id
-- The dead rows among :ids (a JSON array) a filter names, oldest first (as dead_rows).
-- A statement of its own, not a NULL-able :ids in dead_rows: SQLite then looks the ids up
-- by rowid instead of scanning the table.
SELECT id, event_id, event, event_time, payload, pixel_code, event_source, test_event_code,
       status, attempts, next_attempt_at, last_code, last_error, request_id, created_at,
       updated_at, sent_at, payload_format
  FROM tiktok_outbox
 WHERE status = 'dead' AND id IN (SELECT value FROM json_each(:ids))
   AND (:codes IS NULL OR last_code IN (SELECT value FROM json_each(:codes)))
   AND (:events IS NULL OR event IN (SELECT value FROM json_each(:events)))
   AND (:since IS NULL OR updated_at >= :since)
 ORDER BY id
 LIMIT coalesce(:limit, -1)

-- name: dead_batch
-- The ids of the next :batch dead rows a filter without ids names (as dead_rows).
SELECT id
  FROM tiktok_outbox
 WHERE status = 'dead'
   AND (:codes IS NULL OR last_code IN (SELECT value FROM json_each(:codes)))
   AND (:events IS NULL OR event IN (SELECT value FROM json_each(:events)))
   AND (:since IS NULL OR updated_at >= :since)
 ORDER BY id
 LIMIT :batch

-- name: dead_batch_by_id
-- The ids of the next :batch dead rows among :ids a filter names (as dead_rows_by_id).
SELECT id
  FROM tiktok_outbox
 WHERE status = 'dead' AND id IN (SELECT value FROM json_each(:ids))
   AND (:codes IS NULL OR last_code IN (SELECT value FROM json_each(:codes)))
   AND (:events IS NULL OR event IN (SELECT value FROM json_each(:events)))
   AND (:since IS NULL OR updated_at >= :since)
 ORDER BY id
 LIMIT :batch

-- name: record_replay
-- Record the failure of the dead rows :batch_ids before they are replayed.
INSERT INTO tiktok_outbox_replays
       (outbox_id, replayed_at, attempts, last_code, last_error, request_id, dead_at)
SELECT id, :now, attempts, last_code, last_error, request_id, updated_at
  FROM tiktok_outbox
 WHERE id IN (SELECT value FROM json_each(:batch_ids)) AND status = 'dead'

-- name: replay
-- Return the dead rows :batch_ids to pending, due now, with no attempt counted.
UPDATE tiktok_outbox
   SET status = 'pending', attempts = 0, next_attempt_at = 0, updated_at = :now
 WHERE id IN (SELECT value FROM json_each(:batch_ids)) AND status = 'dead'

-- name: purge
-- Delete the dead rows :batch_ids.
DELETE FROM tiktok_outbox
 WHERE id IN (SELECT value FROM json_each(:batch_ids)) AND status = 'dead'

-- name: find_event
-- Every row with this event_id (any pixel or event name), as an operator sees it.
SELECT id, event_id, event, event_time, payload, pixel_code, event_source, test_event_code,
       status, attempts, next_attempt_at, last_code, last_error, request_id, created_at,
       updated_at, sent_at, payload_format
  FROM tiktok_outbox
 WHERE event_id = :event_id
 ORDER BY id

-- name: replays
-- The failures one row had when it was replayed, oldest first.
SELECT replayed_at, attempts, last_code, last_error, request_id, dead_at
  FROM tiktok_outbox_replays
 WHERE outbox_id = :id
 ORDER BY id
