#!/usr/bin/env bash
# make try: the daemon delivering ./try.db to the project's fake TikTok on loopback, so that a
# newcomer can watch one event go from an INSERT to "TikTok" without a token. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
# $TRY_DIR (default: the checkout) is where the databases and logs go; the tests use it.
cd "${TRY_DIR:-.}"

# Only the settings below: a developer's exported TIKTOK_*/FORWARDER_* or .env must not leak in.
for name in $(compgen -e); do
    case "$name" in TIKTOK_* | FORWARDER_* | CREDENTIALS_DIRECTORY) unset "$name" ;; esac
done

dir=try-data
mkdir -p "$dir"
: > "$dir/empty.env"
python -m forwarder.fake_tiktok --port 0 --token try-token --print-events \
    > "$dir/fake.out" 2> "$dir/fake.log" &
fake=$!
tail_pid=""
trap 'kill $fake $tail_pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    grep -q listening "$dir/fake.out" 2>/dev/null && break
    sleep 0.1
done
url=$(sed -n 's/.*listening on //p' "$dir/fake.out")
[ -n "$url" ] || { echo "try: the fake TikTok did not start; see $dir/fake.log" >&2; exit 1; }
tail -n +2 -f "$dir/fake.out" &
tail_pid=$!

export TIKTOK_API_URL="$url" TIKTOK_ACCESS_TOKEN=try-token TIKTOK_PIXEL_CODE=TRYPIXEL0001 \
       FORWARDER_DATABASE_URL=sqlite:///try.db FORWARDER_HTTP_ADDR=127.0.0.1:0 \
       FORWARDER_PHONE_REGION=US FORWARDER_LOG_FORMAT=console

rm -f try.db try.db-wal try.db-shm  # a fresh outbox each time: the README's insert works again
forwarder migrate --env-file "$dir/empty.env" >/dev/null
cat <<TEXT

forwarder delivers ./try.db to a fake TikTok at $url (no token needed).
In another terminal, insert an event as your application would:

  sqlite3 -cmd '.timeout 5000' try.db "INSERT INTO tiktok_outbox (event_id, event, payload)
    VALUES ('order-1', 'Purchase', json_object('user', json_object('email', ' Alice@Example.com'),
            'properties', json_object('currency', 'USD', 'value', 46.0))) ON CONFLICT DO NOTHING"

This terminal then shows the fake TikTok receiving it, e.g.
  fake-tiktok: accepted 1 event(s) for web pixel TRYPIXEL0001: Purchase 'order-1'; user fields: email
and '.venv/bin/forwarder inspect order-1 --database-url sqlite:///try.db' shows it sent, hashed.
Ctrl-C stops the daemon and the fake.

TEXT
forwarder run --env-file "$dir/empty.env"
