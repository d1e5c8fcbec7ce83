#!/bin/sh
# Write an order and its TikTok Purchase event in one PostgreSQL transaction (psql).
# Usage: sh insert_postgres.sh [URL]   (or DATABASE_URL=postgresql://user:pass@host/db)
set -eu
url=${1:-${DATABASE_URL:?pass a URL or set DATABASE_URL}}

# psql quotes each -v variable itself where the SQL says :'name'. ON_ERROR_STOP=1: the first
# error ends psql (exit 3) and its open transaction is rolled back, nothing is half-written.
psql -X -q -v ON_ERROR_STOP=1 -d "$url" \
  -v order_id=10492 \
  -v email='Alice@Example.com' \
  -v phone='+1 213 373 4253' \
  -v ip='203.0.113.7' \
  -v user_agent='Mozilla/5.0 (X11; Linux x86_64)' \
  -v ttclid='E.C.P.abc123' \
  -v ttp='2Xwabc123' <<'SQL'
CREATE TABLE IF NOT EXISTS orders (id bigint PRIMARY KEY, email text, total numeric(12, 2));
BEGIN;
INSERT INTO orders (id, email, total) VALUES (:'order_id', :'email', 46.00)
ON CONFLICT DO NOTHING;
-- Raw identifiers: the daemon normalises and hashes email and phone itself.
INSERT INTO tiktok_outbox (event_id, event, payload) VALUES (
  'order-' || :'order_id', 'Purchase',
  json_build_object(
    'user', json_build_object('email', :'email', 'phone', :'phone', 'ip', :'ip',
                              'user_agent', :'user_agent', 'ttclid', :'ttclid', 'ttp', :'ttp'),
    'properties', json_build_object('currency', 'USD', 'value', 46.0, 'content_type', 'product',
                                    'contents', json_build_array(json_build_object(
                                      'content_id', 'sku-1077218', 'quantity', 2, 'price', 23.0))),
    'page', json_build_object('url', 'https://shop.example/checkout/thanks'),
    -- The visitor's choice in your consent banner; forwarder enforces it.
    'consent', json_build_object('ad_user_data', 'granted', 'ad_personalization', 'granted')
  )::text)
ON CONFLICT DO NOTHING;
COMMIT;
SQL
