"""Drain benchmark: N realistic events through `forwarder run --once` vs two baselines.

Prints one JSON object. In the same run, against the same fake TikTok (started once per run in
its own process on loopback, its counters reset before every measurement):

- forwarder: `forwarder run --once` as a process with its default settings. Its rate counts from
  the worker's start (its ``worker_started`` log line) to the last row's ``sent_at``, so the
  interpreter's start-up (about 0.5 s of imports) is left out, as it is for the baselines. The
  wall time including start-up is reported too.
- minimal loop: the ceiling, run inside this process: claim 1,000 rows, join their stored
  (already normalised and hashed) JSON, POST, mark sent, 4 requests at a time (--concurrency).
  No checks.
- naive sender: one event per request, as Segment's and Stape's TikTok integrations send them,
  4 requests at a time (--concurrency) over one keep-alive session, with the same prebuilt
  payloads (so it is spared the normalisation the forwarder does). It runs on fewer events
  (--naive-events): its rate is bounded per request, not per event.

Every round copies fresh databases and alternates which of forwarder and minimal loop goes first;
the JSON holds the median, every round's figure, and each round's forwarder/minimal ratio (the
paired comparison to trust on a busy machine). CPU seconds of the forwarder process, the minimal
loop and the fake are reported per 1,000 events, to show where the ceiling is.

--concurrency N runs all three with N requests in flight (the forwarder through
FORWARDER_CONCURRENCY); by default 4, the forwarder's default.

Usage: python bench/drain.py [--events 100000] [--latency-ms 0] [--rounds 1] [--naive-events 5000]
                             [--concurrency 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from forwarder.destination import Built
from forwarder.events import OutboxRow
from forwarder.store.sqlite import migrate_sync
from forwarder.tiktok import build as payload

TOKEN = "bench-token"
PIXEL = "D34FV3JC77U1PDQ72P1G"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
CONCURRENCY = 4  # the baselines' requests in flight: forwarder's default


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
    baselines: the fake then accepts their requests after the same validation work.
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
            assert isinstance(built, Built)
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


def copy_db(source: Path, target: Path) -> None:
    """A fresh copy of a template outbox (the template is checkpointed: one file)."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(source, target)


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


def fake_control(url: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """Call one of the fake's /_fake/* endpoints (reset, latency, stats)."""
    data = None if body is None else orjson.dumps(body)
    method = "GET" if body is None and path == "stats" else "POST"
    request = urllib.request.Request(f"{url}/_fake/{path}", data=data, method=method)
    with urllib.request.urlopen(request, timeout=30) as response:
        return orjson.loads(response.read())


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def sent(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT count(*) FROM tiktok_outbox WHERE status = 'sent'").fetchone()[
            0
        ]
    finally:
        conn.close()


def last_sent_at(path: Path) -> float:
    conn = sqlite3.connect(path)
    try:
        return float(conn.execute("SELECT max(sent_at) FROM tiktok_outbox").fetchone()[0])
    finally:
        conn.close()


def daemon_env(path: Path, url: str, **extra: str) -> dict[str, str]:
    """A daemon's environment: this outbox, the fake, default delivery settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIKTOK_", "FORWARDER_"))}
    env.update(
        TIKTOK_ACCESS_TOKEN=TOKEN,
        TIKTOK_PIXEL_CODE=PIXEL,
        TIKTOK_API_URL=url,
        FORWARDER_DATABASE_URL=f"sqlite:///{path}",
        FORWARDER_HTTP_ADDR="127.0.0.1:0",
        FORWARDER_LOG_LEVEL="info",
        FORWARDER_LOG_FORMAT="json",
        FORWARDER_PHONE_REGION="US",
    )
    env.update(extra)
    return env


def start_daemon(path: Path, url: str, log: Path, **extra: str) -> subprocess.Popen[bytes]:
    """`forwarder run` on *path* (default settings), once its worker has started."""
    with log.open("wb") as out:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "forwarder", "run", "--no-migrate"],
            env=daemon_env(path, url, **extra),
            stdout=subprocess.DEVNULL,
            stderr=out,
        )
    deadline = time.monotonic() + 60
    while '"worker_started"' not in log.read_text(errors="replace"):
        if daemon.poll() is not None or time.monotonic() > deadline:
            daemon.kill()
            raise RuntimeError(f"the daemon did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.05)
    return daemon


def stop_daemon(daemon: subprocess.Popen[bytes]) -> None:
    daemon.terminate()
    try:
        daemon.wait(30)
    except subprocess.TimeoutExpired:
        daemon.kill()
        daemon.wait()


def log_time(lines: str, event: str) -> float:
    """The Unix time of the first JSON log line of *event*."""
    for line in lines.splitlines():
        if f'"{event}"' in line:
            stamp = json.loads(line)["timestamp"]
            return datetime.fromisoformat(stamp).timestamp()
    raise RuntimeError(f"no {event} log line in:\n{lines[-2000:]}")


def run_forwarder(path: Path, url: str, events: int, **extra: str) -> dict[str, float]:
    """Deliver the whole outbox with `forwarder run --once`; seconds and CPU seconds."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "forwarder", "run", "--once", "--no-migrate"],
        env=daemon_env(path, url, **extra),
        stderr=subprocess.PIPE,
        text=True,
    )
    _, stderr = process.communicate()
    wall_s = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"forwarder exited with {process.returncode}:\n{stderr[-2000:]}")
    delivery_s = last_sent_at(path) - log_time(stderr, "worker_started")
    assert sent(path) == events, "forwarder left rows undelivered"
    return {"s": delivery_s, "wall_s": wall_s}


async def minimal_loop(path: Path, url: str, concurrency: int = CONCURRENCY) -> float:
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


async def naive_sender(path: Path, url: str, concurrency: int = CONCURRENCY) -> float:
    """One event per request, *concurrency* at a time; rows claimed and marked 1,000 at a time."""
    conn = sqlite3.connect(path, isolation_level=None)
    claim = """UPDATE tiktok_outbox SET status = 'inflight' WHERE id IN
               (SELECT id FROM tiktok_outbox WHERE status = 'pending' LIMIT 1000)
               RETURNING id, event_id, event, payload"""
    head = b'{"event_source":"web","event_source_id":"%s","data":[' % PIXEL.encode()
    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        slots = asyncio.Semaphore(concurrency)

        async def one(event_id: str, event: str, body: str) -> None:
            data = b'%s{"event":"%s","event_id":"%s","event_time":%d,%s]}' % (
                head,
                event.encode(),
                event_id.encode(),
                int(time.time()),
                body.encode()[1:],
            )
            async with (
                slots,
                session.post(
                    f"{url}/open_api/v1.3/event/track/", data=data, headers={"Access-Token": TOKEN}
                ) as response,
            ):
                answer = await response.read()
                assert b'"code":0' in answer, answer

        while rows := conn.execute(claim).fetchall():
            await asyncio.gather(*(one(i, e, p) for _, i, e, p in rows))
            ids = orjson.dumps([r[0] for r in rows]).decode()
            conn.execute(
                "UPDATE tiktok_outbox SET status = 'sent' WHERE id IN "
                "(SELECT value FROM json_each(?))",
                (ids,),
            )
    conn.close()
    return time.perf_counter() - started


def per_k(cpu: float, events: int) -> float:
    return round(cpu / events * 1000 * 1000, 1)  # CPU milliseconds per 1,000 events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--latency-ms", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--naive-events", type=int, default=5000, help="0 skips the naive sender")
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY, help="requests in flight")
    args = parser.parse_args()
    rounds: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        ours_src, base_src = Path(tmp, "forwarder.src.db"), Path(tmp, "minimal.src.db")
        naive_src = Path(tmp, "naive.src.db")
        make_db(ours_src, args.events)
        make_db(base_src, args.events, prebuilt=True)
        if args.naive_events:
            make_db(naive_src, args.naive_events, prebuilt=True)
        ours, base, naive = Path(tmp, "forwarder.db"), Path(tmp, "minimal.db"), Path(tmp, "n.db")
        fake, url = start_fake(args.latency_ms)
        try:
            for index in range(args.rounds):
                result: dict[str, float] = {}

                def forwarder(result: dict[str, float] = result) -> None:
                    copy_db(ours_src, ours)
                    fake_control(url, "reset", {})
                    fake_before = cpu_s(fake.pid)
                    children = os.times()
                    settings: dict[str, str] = {}
                    if args.concurrency != CONCURRENCY:
                        settings["FORWARDER_CONCURRENCY"] = str(args.concurrency)
                    timing = run_forwarder(ours, url, args.events, **settings)
                    after = os.times()
                    result["forwarder_s"] = timing["s"]
                    result["forwarder_wall_s"] = timing["wall_s"]
                    result["forwarder_cpu_s"] = (
                        after.children_user
                        + after.children_system
                        - children.children_user
                        - children.children_system
                    )
                    result["fake_cpu_forwarder_s"] = cpu_s(fake.pid) - fake_before
                    assert fake_control(url, "stats")["accepted"] == args.events

                def minimal(result: dict[str, float] = result) -> None:
                    copy_db(base_src, base)
                    fake_control(url, "reset", {})
                    fake_before, own_before = cpu_s(fake.pid), time.process_time()
                    result["minimal_s"] = asyncio.run(minimal_loop(base, url, args.concurrency))
                    result["minimal_cpu_s"] = time.process_time() - own_before
                    result["fake_cpu_minimal_s"] = cpu_s(fake.pid) - fake_before
                    assert sent(base) == args.events, "the minimal loop left rows undelivered"

                for step in (forwarder, minimal) if index % 2 == 0 else (minimal, forwarder):
                    step()
                if args.naive_events:
                    copy_db(naive_src, naive)
                    fake_control(url, "reset", {})
                    fake_before, own_before = cpu_s(fake.pid), time.process_time()
                    result["naive_s"] = asyncio.run(naive_sender(naive, url, args.concurrency))
                    result["naive_cpu_s"] = time.process_time() - own_before
                    result["fake_cpu_naive_s"] = cpu_s(fake.pid) - fake_before
                    assert sent(naive) == args.naive_events, "the naive sender left rows"
                rounds.append(result)
        finally:
            fake.terminate()
            fake.wait(10)

    def rate(key: str, events: int) -> list[float]:
        return [round(events / r[key]) for r in rounds]

    ours_rate, base_rate = rate("forwarder_s", args.events), rate("minimal_s", args.events)
    out: dict[str, Any] = {
        "benchmark": "drain",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "command": " ".join(["python", *sys.argv]),
        "events": args.events,
        "latency_ms": args.latency_ms,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "forwarder_events_per_s": statistics.median(ours_rate),
        "minimal_loop_events_per_s": statistics.median(base_rate),
        "ratio_to_minimal": statistics.median(
            round(r["minimal_s"] / r["forwarder_s"], 3) for r in rounds
        ),
        "forwarder_runs": ours_rate,
        "minimal_runs": base_rate,
        "ratio_runs": [round(r["minimal_s"] / r["forwarder_s"], 3) for r in rounds],
        "forwarder_wall_events_per_s": statistics.median(rate("forwarder_wall_s", args.events)),
        # CPU milliseconds per 1,000 events, medians over the rounds.
        "cpu_ms_per_1k": {
            "forwarder": per_k(
                statistics.median(r["forwarder_cpu_s"] for r in rounds), args.events
            ),
            "fake_serving_forwarder": per_k(
                statistics.median(r["fake_cpu_forwarder_s"] for r in rounds), args.events
            ),
            "minimal_loop": per_k(
                statistics.median(r["minimal_cpu_s"] for r in rounds), args.events
            ),
            "fake_serving_minimal": per_k(
                statistics.median(r["fake_cpu_minimal_s"] for r in rounds), args.events
            ),
        },
    }
    if args.naive_events:
        out["cpu_ms_per_1k"]["naive_sender"] = per_k(
            statistics.median(r["naive_cpu_s"] for r in rounds), args.naive_events
        )
        out["cpu_ms_per_1k"]["fake_serving_naive"] = per_k(
            statistics.median(r["fake_cpu_naive_s"] for r in rounds), args.naive_events
        )
        naive_rate = rate("naive_s", args.naive_events)
        out["naive_events"] = args.naive_events
        out["naive_events_per_s"] = statistics.median(naive_rate)
        out["naive_runs"] = naive_rate
        out["ratio_to_naive"] = round(out["forwarder_events_per_s"] / out["naive_events_per_s"], 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
