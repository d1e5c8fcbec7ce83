"""Drain benchmark: N realistic events through `forwarder run --once` vs a minimal loop.

Prints one JSON object. Both runs deliver the same rows to the project's fake TikTok, started
in its own process on loopback, in the same run, so the ratio is what to compare across
machines. Usage: python bench/drain.py [--events 100000] [--latency-ms 0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson

from forwarder import payload
from forwarder.events import OutboxRow
from forwarder.store.sqlite import migrate_sync

TOKEN = "bench-token"
PIXEL = "D34FV3JC77U1PDQ72P1G"


def realistic(i: int, rng: random.Random) -> tuple[str, str, str]:
    """One Purchase row with raw identifiers in mixed formats."""
    phone = rng.choice(
        [
            f"+1 213 555 {i % 10000:04d}",
            f"(213) 555-{i % 10000:04d}",
            f"+44 20 7946 {i % 10000:04d}",
        ]
    )
    payload = {
        "user": {
            "email": f"  Customer.{i}@Example.COM ",
            "phone": phone,
            "external_id": f"crm-{i}",
            "ip": f"203.0.113.{i % 250}",
            "user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36",
            "ttclid": f"E.C.P.{i:x}abcdef",
            "ttp": f"2Xw{i:x}ttpcookie",
        },
        "properties": {
            "currency": "USD",
            "value": round(rng.uniform(5, 500), 2),
            "content_type": "product",
            "contents": [
                {
                    "content_id": f"sku-{rng.randrange(1000)}",
                    "quantity": rng.randint(1, 3),
                    "price": round(rng.uniform(5, 100), 2),
                }
                for _ in range(rng.randint(1, 3))
            ],
        },
        "page": {"url": f"https://shop.example/checkout/thanks?order={i}"},
    }
    return f"order-{i}", "Purchase", orjson.dumps(payload).decode()


def make_db(path: Path, n: int, *, prebuilt: bool = False) -> None:
    """A migrated outbox holding *n* pending realistic rows.

    *prebuilt* stores each payload already normalised and hashed, as TikTok wants it, for the
    minimal loop: the fake then accepts its requests after the same validation work.
    """
    migrate_sync(path)
    rng = random.Random(42)
    options = payload.BuildOptions(
        default_pixel=PIXEL,
        phone_region="US",
        consent_default="granted",
        max_age_s=1e9,
        test_event_code=None,
    )
    rows = []
    for i in range(n):
        event_id, event, body = realistic(i, rng)
        if prebuilt:
            row = OutboxRow(i, event_id, event, None, body, "", "web", "", 0, time.time())
            built = payload.build(row, options, time.time())
            assert isinstance(built, payload.Built)
            fields = {
                k: v for k, v in built.event.items() if k not in ("event", "event_id", "event_time")
            }
            body = orjson.dumps(fields).decode()
        rows.append((event_id, event, body))
    conn = sqlite3.connect(path)
    with conn:
        conn.executemany(
            "INSERT INTO tiktok_outbox (event_id, event, payload) VALUES (?, ?, ?)", rows
        )
    conn.close()


def start_fake(latency_ms: int) -> tuple[subprocess.Popen[str], str]:
    """Start the fake TikTok in its own process; return it and its URL."""
    fake = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "forwarder.fake_tiktok",
            "--port",
            "0",
            "--token",
            TOKEN,
            "--latency-ms",
            str(latency_ms),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert fake.stdout is not None
    line = fake.stdout.readline()
    return fake, line.rsplit(" ", 1)[-1].strip()


def sent(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT count(*) FROM tiktok_outbox WHERE status = 'sent'").fetchone()[
            0
        ]
    finally:
        conn.close()


def run_forwarder(path: Path, url: str) -> float:
    """Seconds `forwarder run --once` takes to deliver the whole outbox."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIKTOK_", "FORWARDER_"))}
    env.update(
        TIKTOK_ACCESS_TOKEN=TOKEN,
        TIKTOK_PIXEL_CODE=PIXEL,
        TIKTOK_API_URL=url,
        FORWARDER_DATABASE_URL=f"sqlite:///{path}",
        FORWARDER_HTTP_ADDR="127.0.0.1:0",
        FORWARDER_LOG_LEVEL="warning",
        FORWARDER_PHONE_REGION="US",
    )
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "forwarder", "run", "--once", "--no-migrate"], env=env, check=True
    )
    return time.perf_counter() - started


async def minimal_loop(path: Path, url: str, concurrency: int = 4) -> float:
    """The ceiling: claim 1,000 rows, join their stored JSON, POST, mark sent. No checks."""
    conn = sqlite3.connect(path, isolation_level=None)
    claim = """UPDATE tiktok_outbox SET status = 'inflight' WHERE id IN
               (SELECT id FROM tiktok_outbox WHERE status = 'pending' LIMIT 1000)
               RETURNING id, event_id, event, payload"""
    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:

        async def one(rows: list[tuple[int, str, str, str]]) -> None:
            events = b",".join(
                b'{"event":"%s","event_id":"%s","event_time":%d,%s'
                % (e.encode(), i.encode(), int(time.time()), p.encode()[1:])
                for _, i, e, p in rows
            )
            body = b'{"event_source":"web","event_source_id":"%s","data":[%s]}' % (
                PIXEL.encode(),
                events,
            )
            async with session.post(
                f"{url}/open_api/v1.3/event/track/", data=body, headers={"Access-Token": TOKEN}
            ) as response:
                await response.read()
            ids = orjson.dumps([r[0] for r in rows]).decode()
            conn.execute(
                "UPDATE tiktok_outbox SET status = 'sent' WHERE id IN "
                "(SELECT value FROM json_each(?))",
                (ids,),
            )

        while True:
            batches = [conn.execute(claim).fetchall() for _ in range(concurrency)]
            batches = [b for b in batches if b]
            if not batches:
                break
            await asyncio.gather(*(one(b) for b in batches))
    conn.close()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--latency-ms", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ours, base = Path(tmp, "forwarder.db"), Path(tmp, "minimal.db")
        make_db(ours, args.events)
        make_db(base, args.events, prebuilt=True)
        fake, url = start_fake(args.latency_ms)
        try:
            forwarder_s = run_forwarder(ours, url)
            minimal_s = asyncio.run(minimal_loop(base, url))
        finally:
            fake.terminate()
            fake.wait(10)
        assert sent(ours) == args.events, "forwarder left rows undelivered"
        assert sent(base) == args.events, "the minimal loop left rows undelivered"
    result = {
        "benchmark": "drain",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "events": args.events,
        "latency_ms": args.latency_ms,
        "forwarder_events_per_s": round(args.events / forwarder_s),
        "minimal_loop_events_per_s": round(args.events / minimal_s),
        "ratio_to_minimal": round(minimal_s / forwarder_s, 3),
        "forwarder_s": round(forwarder_s, 2),
        "minimal_s": round(minimal_s, 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
