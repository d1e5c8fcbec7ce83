#!/usr/bin/env bash
# make demo: start the fake TikTok on loopback, insert a few hundred varied events with the
# sqlite3 command-line tool (as an application would), deliver them, and show the status.
set -euo pipefail
cd "$(dirname "$0")/.."
# $DEMO_DIR (default: the checkout) is where the databases and logs go; the tests use it.
cd "${DEMO_DIR:-.}"

command -v sqlite3 >/dev/null || { echo "demo: needs the sqlite3 command (apt-get install sqlite3)" >&2; exit 1; }

# Only the settings below: a developer's exported TIKTOK_*/FORWARDER_* or .env must not leak in.
for name in $(compgen -e); do
    case "$name" in TIKTOK_* | FORWARDER_* | CREDENTIALS_DIRECTORY) unset "$name" ;; esac
done

dir=demo-data
rm -rf "$dir" && mkdir -p "$dir"
db="$dir/demo.db"
: > "$dir/empty.env"

python -m forwarder.fake_tiktok --host 127.0.0.1 --port 0 --token demo-token --latency-ms 20 \
    > "$dir/fake.out" 2> "$dir/fake.log" &
fake=$!
trap 'kill $fake 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    grep -q listening "$dir/fake.out" 2>/dev/null && break
    sleep 0.1
done
url=$(sed -n 's/.*listening on //p' "$dir/fake.out")
[ -n "$url" ] || { echo "demo: the fake TikTok did not start; see $dir/fake.log" >&2; exit 1; }
echo "fake TikTok listening on $url"

export TIKTOK_API_URL="$url" TIKTOK_ACCESS_TOKEN=demo-token TIKTOK_PIXEL_CODE=D34FV3JC77U1PDQ72P1G \
       FORWARDER_DATABASE_URL="sqlite:///$db" FORWARDER_PHONE_REGION=US FORWARDER_LOG_LEVEL=warning

forwarder migrate --env-file "$dir/empty.env"

# 300 events as an application would write them, in one transaction: purchases with raw
# identifiers (the daemon hashes them), leads with consent denied, a few test events, and
# three malformed rows that end dead with a reason.
sqlite3 "$db" <<'SQL'
BEGIN;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 240)
INSERT INTO tiktok_outbox (event_id, event, payload)
SELECT 'order-' || i, 'Purchase', json_object(
    'user', json_object('email', ' Customer' || i || '@Example.com ',
                        'phone', '(213) 555-' || printf('%04d', i),
                        'external_id', 'user-' || i, 'ip', '203.0.113.' || (i % 250),
                        'user_agent', 'Mozilla/5.0 demo', 'ttclid', 'E.C.P.demo' || i),
    'properties', json_object('currency', 'USD', 'value', i * 1.5, 'content_type', 'product',
                              'contents', json_array(json_object('content_id', 'sku-' || (i % 17),
                                                                 'quantity', 1, 'price', i * 1.5))),
    'page', json_object('url', 'https://shop.example/thanks?order=' || i))
FROM n;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50)
INSERT INTO tiktok_outbox (event_id, event, payload)
SELECT 'lead-' || i, 'Lead', json_object(
    'user', json_object('email', 'lead' || i || '@example.org', 'ttp', 'ttp-cookie-' || i),
    'consent', json_object('ad_user_data', CASE WHEN i % 2 THEN 'denied' ELSE 'granted' END,
                           'ad_personalization', 'denied'),
    'page', json_object('url', 'https://shop.example/contact'))
FROM n;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 7)
INSERT INTO tiktok_outbox (event_id, event, test_event_code, payload)
SELECT 'test-' || i, 'ViewContent', 'TEST12345', '{"page": {"url": "https://shop.example/p"}}' FROM n;
INSERT INTO tiktok_outbox (event_id, event, payload) VALUES
    ('bad-1', 'Purchase', 'not json'),
    ('bad-2', 'Purchase', '{"properties": {"value": "twelve"}}'),
    ('bad-3', 'Purchase', '{"user": {"emial": "typo@example.com"}}');
-- Inserting an event twice is harmless: the unique key keeps one row.
INSERT INTO tiktok_outbox (event_id, event) VALUES ('order-1', 'Purchase') ON CONFLICT DO NOTHING;
COMMIT;
SQL
echo "inserted $(sqlite3 "$db" 'SELECT count(*) FROM tiktok_outbox') rows with sqlite3"

# --once serves no HTTP port, so the demo runs even beside a `make run` daemon.
forwarder run --once --env-file "$dir/empty.env"
echo
forwarder status --env-file "$dir/empty.env"
echo
echo "dead rows and their reasons:"
sqlite3 -box "$db" "SELECT event_id, last_code, last_error FROM tiktok_outbox WHERE status = 'dead'"
echo
echo "the fake TikTok saw: $(curl -s "$url/_fake/stats" 2>/dev/null || python -c "import urllib.request,sys; print(urllib.request.urlopen(sys.argv[1]).read().decode())" "$url/_fake/stats")"
