"""Contention benchmark: an application inserting while the daemon drains a backlog (SQLite).

An application process inserts one outbox row per transaction at a steady rate, with the busy
timeout the README asks for (5 s), while `forwarder run` (default settings) drains a backlog of
realistic events into the fake TikTok (its own process, loopback). Each insert's latency is the
whole transaction (BEGIN, INSERT, COMMIT) as the application sees it. The figures are split into
"idle" (before the daemon starts) and "drain" (while the backlog is being delivered).

Prints one JSON object: insert latency percentiles and maximum in ms (and, while draining, those
of the COMMIT alone, which waits for no lock: the rest is the INSERT waiting for the daemon's
write lock), failed inserts (with the first few errors), the drain's duration and rate, and
whether the issue's goal (p99 <= 10 ms, max <= 250 ms, no failed insert) was met.

Usage: python bench/contention.py [--events 100000] [--rate 200] [--latency-ms 0]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from forwarder.store.sqlite import migrate_sync

TOKEN = "bench-token"
PIXEL = "D34FV3JC77U1PDQ72P1G"
IDLE_S = 3.0  # inserts measured before the daemon starts, for comparison
GOAL_P99_MS = 10.0
GOAL_MAX_MS = 250.0


def row(i: int) -> tuple[str, str, str]:
    """A realistic Purchase row with raw identifiers, as an application writes it."""
    body = {
        "user": {
            "email": f" Buyer{i}@Example.com ",
            "phone": f"+1 (213) 555-{i % 10000:04d}",
            "external_id": f"user-{i}",
            "ip": "203.0.113.7",
            "user_agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
            "ttclid": f"E.C.P.{i}",
            "ttp": f"2X{i:08d}",
        },
        "properties": {
            "currency": "USD",
            "value": 23.5 + i % 100,
            "content_type": "product",
            "contents": [{"content_id": f"sku-{i % 97}", "quantity": 1, "price": 23.5}],
        },
        "page": {"url": f"https://shop.example/checkout/thanks?order={i}"},
    }
    return f"order-{i}", "Purchase", json.dumps(body)


# --- The application: one row per transaction at a steady rate ---------------------------------


def application(db: Path, rate: float, first: int, out: Path, stop: Path) -> None:
    """Insert rows at *rate* per second until *stop* exists; write [(t, ms, error)] to *out*."""
    conn = sqlite3.connect(db, isolation_level=None, timeout=5.0)
    conn.execute("PRAGMA busy_timeout = 5000")
    samples: list[tuple[float, float, float, str | None]] = []
    start = time.monotonic()
    i = 0
    while not stop.exists():
        due = start + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        event_id, event, body = row(first + i)
        began = time.perf_counter()
        error = None
        inserted = began
        try:
            conn.execute("BEGIN")
            conn.execute(
                "INSERT INTO tiktok_outbox (event_id, event, payload) VALUES (?, ?, ?)",
                (event_id, event, body),
            )
            inserted = time.perf_counter()  # the write lock is ours: what is left is COMMIT
            conn.execute("COMMIT")
        except sqlite3.Error as failure:
            error = f"{type(failure).__name__}: {failure}"
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        done = time.perf_counter()
        samples.append((time.time(), (done - began) * 1000, (done - inserted) * 1000, error))
        i += 1
    conn.close()
    out.write_text(json.dumps(samples))


# --- The orchestration --------------------------------------------------------------------------


def start_fake(latency_ms: int) -> tuple[subprocess.Popen[str], str]:
    """The fake TikTok in its own process on loopback; return it and its URL."""
    fake = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "forwarder.fake_tiktok",
            "--token",
            TOKEN,
            "--latency-ms",
            str(latency_ms),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert fake.stdout is not None
    return fake, fake.stdout.readline().rsplit(" ", 1)[-1].strip()


def count(db: Path, sql: str) -> int:
    conn = sqlite3.connect(db, timeout=30)
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


def percentiles(values: list[float]) -> dict[str, float]:
    """p50, p90, p99, p99.9 and max, in ms, rounded."""
    if not values:
        return {}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)

    return {
        "n": len(ordered),
        "p50": at(0.50),
        "p90": at(0.90),
        "p99": at(0.99),
        "p99_9": at(0.999),
        "max": round(ordered[-1], 3),
        "mean": round(statistics.fmean(ordered), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000, help="backlog to drain")
    parser.add_argument("--rate", type=float, default=200.0, help="application inserts per s")
    parser.add_argument("--latency-ms", type=int, default=0, help="the fake's answer delay")
    parser.add_argument(
        "--app", nargs=4, metavar=("DB", "FIRST", "OUT", "STOP"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.app:
        db, first, out, stop = args.app
        application(Path(db), args.rate, int(first), Path(out), Path(stop))
        return

    with tempfile.TemporaryDirectory(prefix="contention-") as folder:
        work = Path(folder)
        db = work / "outbox.db"
        migrate_sync(db)
        conn = sqlite3.connect(db)
        with conn:
            conn.executemany(
                "INSERT INTO tiktok_outbox (event_id, event, payload) VALUES (?, ?, ?)",
                (row(i) for i in range(args.events)),
            )
        conn.close()
        samples_file, stop = work / "samples.json", work / "stop"
        fake, url = start_fake(args.latency_ms)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TIKTOK_", "FORWARDER_"))}
        env.update(
            TIKTOK_ACCESS_TOKEN=TOKEN,
            TIKTOK_PIXEL_CODE=PIXEL,
            TIKTOK_API_URL=url,
            FORWARDER_DATABASE_URL=f"sqlite:///{db}",
            FORWARDER_HTTP_ADDR="127.0.0.1:0",
            FORWARDER_LOG_FORMAT="json",
            FORWARDER_PHONE_REGION="US",
        )
        app = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--rate",
                str(args.rate),
                "--app",
                str(db),
                str(args.events),
                str(samples_file),
                str(stop),
            ]
        )
        daemon = None
        try:
            time.sleep(IDLE_S)  # the idle baseline: the application alone
            drain_start = time.time()
            daemon = subprocess.Popen(
                [sys.executable, "-m", "forwarder", "run"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            backlog = (
                f"SELECT count(*) FROM tiktok_outbox WHERE status = 'sent' AND id <= {args.events}"
            )
            while count(db, backlog) < args.events:
                if daemon.poll() is not None:
                    raise SystemExit(f"the daemon exited {daemon.returncode}")
                time.sleep(0.1)
            drain_end = time.time()
        finally:
            stop.touch()
            app.wait(60)
            if daemon is not None:
                daemon.send_signal(signal.SIGTERM)
                _, err = daemon.communicate(timeout=60)
            fake.terminate()
            fake.wait(30)
        samples = json.loads(samples_file.read_text())
        errors = [line for line in err.decode().splitlines() if '"level": "error"' in line]

    idle = [ms for t, ms, _, e in samples if t < drain_start and e is None]
    during = [ms for t, ms, _, e in samples if drain_start <= t <= drain_end and e is None]
    # The COMMIT alone (the application's own fsync of the WAL), to tell it from waiting for the
    # write lock (the INSERT, which waits in SQLite's busy handler while the daemon writes).
    commits = [c for t, _, c, e in samples if drain_start <= t <= drain_end and e is None]
    failed = [e for _, _, _, e in samples if e is not None]
    drain = percentiles(during)
    result: dict[str, Any] = {
        "benchmark": "contention",
        "command": " ".join(["python", "bench/contention.py", *sys.argv[1:]]),
        "backlog_events": args.events,
        "app_rate_per_s": args.rate,
        "fake_latency_ms": args.latency_ms,
        "drain_s": round(drain_end - drain_start, 2),
        "drain_events_per_s": round(args.events / (drain_end - drain_start)),
        "inserts": len(samples),
        "failed_inserts": len(failed),
        "failures": failed[:5],
        "insert_latency_ms_idle": percentiles(idle),
        "insert_latency_ms_drain": drain,
        "commit_latency_ms_drain": percentiles(commits),
        "daemon_error_lines": len(errors),
        "goal": {
            "p99_ms": GOAL_P99_MS,
            "max_ms": GOAL_MAX_MS,
            "met": not failed
            and drain.get("p99", 1e9) <= GOAL_P99_MS
            and drain.get("max", 1e9) <= GOAL_MAX_MS,
        },
        "machine": {
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version,
            "cpus": os.cpu_count(),
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
