"""Steady state: an application inserting events at a fixed rate while the daemon runs.

Prints one JSON object. A `forwarder run` daemon (default settings: 200 ms poll interval,
4 requests in flight, 1,000 events per request) delivers to the fake TikTok in its own process,
while a separate process inserts realistic events one per transaction, as an application's
request handlers would, at --rate per second for --seconds (10 rows every 10 ms, catching up
when behind). Insert-to-accepted latency per event is ``sent_at - created_at``: the row's
insert time (the column default, on the inserting process's clock) to the daemon's time when
TikTok's acceptance arrived, on the same host. The daemon's CPU over the run (from
/proc/<pid>/stat) and the application's commit latency are reported too.

Usage: python bench/steady.py [--rate 1000] [--seconds 20] [--latency-ms 0]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from drain import cpu_s, daemon_env, start_daemon, start_fake, stop_daemon
from rows import realistic

from forwarder.store.sqlite import migrate_sync

INSERT = "INSERT INTO tiktok_outbox (event_id, event, payload) VALUES (?, ?, ?)"
TICK_S = 0.01  # the inserter wakes every 10 ms and inserts what the rate owes by then


def insert_at_rate(path: Path, rate: int, seconds: float) -> None:
    """The application: one transaction per event; prints its commit latencies as JSON."""
    rng = random.Random(7)
    total = int(rate * seconds)
    rows = [realistic(i, rng) for i in range(total)]
    conn = sqlite3.connect(path, timeout=10, isolation_level=None)
    commits: list[float] = []
    started = time.monotonic()
    done = 0
    while done < total:
        owed = min(total, int((time.monotonic() - started) * rate) + 1)
        while done < owed:
            before = time.perf_counter()
            conn.execute("BEGIN")
            conn.execute(INSERT, rows[done])
            conn.execute("COMMIT")
            commits.append(time.perf_counter() - before)
            done += 1
        time.sleep(max(0.0, started + done / rate - time.monotonic(), TICK_S / 10))
    conn.close()
    commits.sort()
    print(
        json.dumps(
            {
                "rows": total,
                "seconds": round(time.monotonic() - started, 2),
                "commit_ms_p50": round(commits[len(commits) // 2] * 1000, 2),
                "commit_ms_p99": round(commits[int(len(commits) * 0.99)] * 1000, 2),
                "commit_ms_max": round(commits[-1] * 1000, 2),
            }
        )
    )


def percentile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(len(values) * q))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=int, default=1000, help="events per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--latency-ms", type=int, default=0, help="the fake's answer latency")
    parser.add_argument("--insert", metavar="DB", help=argparse.SUPPRESS)  # the inserter
    parser.add_argument("--keep", metavar="DB", help=argparse.SUPPRESS)  # copy the outbox here
    args = parser.parse_args()
    if args.insert:
        insert_at_rate(Path(args.insert), args.rate, args.seconds)
        return
    total = int(args.rate * args.seconds)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "outbox.db")
        migrate_sync(path)
        fake, url = start_fake(args.latency_ms)
        try:
            daemon = start_daemon(path, url, Path(tmp, "daemon.log"))
            try:
                cpu_before, wall_before = cpu_s(daemon.pid), time.monotonic()
                inserter = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--insert",
                        str(path),
                        "--rate",
                        str(args.rate),
                        "--seconds",
                        str(args.seconds),
                    ],
                    env=daemon_env(path, url),
                    stdout=subprocess.PIPE,
                    text=True,
                    check=True,
                )
                conn = sqlite3.connect(path, timeout=10)
                deadline = time.monotonic() + 60
                while (
                    conn.execute(
                        "SELECT count(*) FROM tiktok_outbox WHERE status = 'sent'"
                    ).fetchone()[0]
                    < total
                ):
                    if time.monotonic() > deadline:
                        raise RuntimeError("the daemon did not deliver every row within 60 s")
                    time.sleep(0.1)
                cpu_s_used = cpu_s(daemon.pid) - cpu_before
                wall_s = time.monotonic() - wall_before
            finally:
                stop_daemon(daemon)
        finally:
            fake.terminate()
            fake.wait(10)
        if args.keep:
            conn.execute("VACUUM INTO ?", (args.keep,))
        latencies = sorted(
            row[0]
            for row in conn.execute(
                "SELECT sent_at - created_at FROM tiktok_outbox WHERE status = 'sent'"
            )
        )
        conn.close()
    app = json.loads(inserter.stdout.strip().splitlines()[-1])
    print(
        json.dumps(
            {
                "benchmark": "steady",
                "date": time.strftime("%Y-%m-%d"),
                "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                f"Python {platform.python_version()}",
                "command": " ".join(["python", *sys.argv]),
                "rate_per_s": args.rate,
                "seconds": args.seconds,
                "latency_ms": args.latency_ms,
                "events": len(latencies),
                "p50_ms": round(percentile(latencies, 0.50) * 1000, 1),
                "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
                "max_ms": round(latencies[-1] * 1000, 1),
                "mean_ms": round(statistics.fmean(latencies) * 1000, 1),
                "daemon_cpu_percent": round(100 * cpu_s_used / wall_s, 1),
                "app_inserts": app,
            }
        )
    )


if __name__ == "__main__":
    main()
