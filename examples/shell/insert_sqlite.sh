#!/bin/sh
# Write an order and its TikTok Purchase event in one SQLite transaction (sqlite3 CLI).
# Usage: sh insert_sqlite.sh [PATH]   (or DB_PATH=...; default forwarder.db)
set -eu
db=${1:-${DB_PATH:-forwarder.db}}

order_id=10492
email='Alice@Example.com'
phone='+1 213 373 4253'
ip='203.0.113.7'
user_agent='Mozilla/5.0 (X11; Linux x86_64)'
ttclid='E.C.P.abc123'
ttp='2Xwabc123'

# Quote a value as an SQL string literal: wrap in '...' and double every ' inside.
q() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/''/g")"; }

# .timeout 5000 is the busy timeout (PRAGMA busy_timeout = 5000): wait for the daemon's short
# writes instead of failing with "database is locked". -bail: stop at the first error (the open
# transaction is then rolled back, nothing is half-written).
sqlite3 -bail "$db" <<SQL
.timeout 5000
CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, email TEXT, total REAL);
BEGIN;
INSERT INTO orders (id, email, total) VALUES ($order_id, $(q "$email"), 46.0)
ON CONFLICT DO NOTHING;
-- Raw identifiers: the daemon normalises and hashes email and phone itself.
INSERT INTO tiktok_outbox (event_id, event, payload) VALUES (
  'order-$order_id', 'Purchase',
  json_object(
    'user', json_object('email', $(q "$email"), 'phone', $(q "$phone"), 'ip', $(q "$ip"),
                        'user_agent', $(q "$user_agent"), 'ttclid', $(q "$ttclid"),
                        'ttp', $(q "$ttp")),
    'properties', json_object('currency', 'USD', 'value', 46.0, 'content_type', 'product',
                              'contents', json_array(json_object('content_id', 'sku-1077218',
                                                                 'quantity', 2, 'price', 23.0))),
    'page', json_object('url', 'https://shop.example/checkout/thanks'),
    -- The visitor's choice in your consent banner; forwarder enforces it.
    'consent', json_object('ad_user_data', 'granted', 'ad_personalization', 'granted')))
ON CONFLICT DO NOTHING;
COMMIT;
SQL
