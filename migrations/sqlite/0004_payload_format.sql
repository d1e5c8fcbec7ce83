-- Issue 22: the format of a row's payload. NULL (every row written before, and every writer that
-- does not name it) or 'tiktok' is TikTok's own shape, as before; 'meta_capi' is one Meta
-- Conversions API server event, converted by the daemon. No CHECK constraint: an application's
-- insert never fails on it; the daemon refuses a row with a value it does not know, naming it.

ALTER TABLE tiktok_outbox ADD COLUMN payload_format TEXT;
