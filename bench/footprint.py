"""The daemon's footprint: CPU with nothing to do, memory with a large backlog.

Prints one JSON object.

- idle: `forwarder run` (default settings) on an empty outbox, after it has settled for a few
  seconds; its user + system CPU over --idle-seconds, from /proc/<pid>/stat, as a percentage of
  one core.
- memory: --rows realistic pending events inserted in one transaction (executemany), then
  `forwarder run` against a fake TikTok that answers only after --hold-ms, so the daemon claims
  and holds full batches (4 in flight and 1 built ahead); its peak resident memory (VmHWM in
  /proc/<pid>/status) while it claims, builds and waits over --memory-seconds.

Usage: python bench/footprint.py [--idle-seconds 30] [--rows 1000000] [--memory-seconds 15]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from drain import cpu_s, start_daemon, start_fake, stop_daemon
from rows import realistic

from forwarder.store.sqlite import migrate_sync

SETTLE_S = 3.0  # after the worker starts, before idle CPU is measured


def status_kib(pid: int, field: str) -> int:
    """A memory field of /proc/<pid>/status (VmHWM, VmRSS), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(field)


def idle(tmp: str, url: str, seconds: float) -> dict[str, float]:
    path = Path(tmp, "idle.db")
    migrate_sync(path)
    daemon = start_daemon(path, url, Path(tmp, "idle.log"))
    try:
        time.sleep(SETTLE_S)
        before, started = cpu_s(daemon.pid), time.monotonic()
        time.sleep(seconds)
        used, elapsed = cpu_s(daemon.pid) - before, time.monotonic() - started
        rss = status_kib(daemon.pid, "VmRSS")
    finally:
        stop_daemon(daemon)
    return {
        "idle_seconds": round(elapsed, 1),
        "idle_cpu_s": round(used, 3),
        "idle_cpu_percent": round(100 * used / elapsed, 2),
        "idle_rss_mib": round(rss / 1024, 1),
    }


def fill(path: Path, rows: int) -> float:
    """Insert *rows* pending realistic events in one transaction; return the seconds it took."""
    migrate_sync(path)
    rng = random.Random(11)
    started = time.monotonic()
    conn = sqlite3.connect(path)
    with conn:
        conn.executemany(
            "INSERT INTO tiktok_outbox (event_id, event, payload) VALUES (?, ?, ?)",
            (realistic(i, rng) for i in range(rows)),
        )
    conn.close()
    return time.monotonic() - started


def memory(tmp: str, url: str, rows: int, seconds: float) -> dict[str, float]:
    path = Path(tmp, "backlog.db")
    fill_s = fill(path, rows)
    daemon = start_daemon(path, url, Path(tmp, "memory.log"))
    try:
        inflight = 0
        deadline = time.monotonic() + seconds
        conn = sqlite3.connect(path, timeout=10)
        while time.monotonic() < deadline:
            time.sleep(0.5)
        inflight = conn.execute(
            "SELECT count(*) FROM tiktok_outbox WHERE status = 'inflight'"
        ).fetchone()[0]
        pending = conn.execute(
            "SELECT count(*) FROM tiktok_outbox WHERE status = 'pending'"
        ).fetchone()[0]
        conn.close()
        peak, rss = status_kib(daemon.pid, "VmHWM"), status_kib(daemon.pid, "VmRSS")
    finally:
        stop_daemon(daemon)
    return {
        "rows": rows,
        "fill_s": round(fill_s, 1),
        "db_mib": round(path.stat().st_size / 2**20),
        "memory_seconds": seconds,
        "held_inflight_rows": inflight,
        "pending_rows": pending,
        "peak_rss_mib": round(peak / 1024, 1),
        "rss_mib": round(rss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--idle-seconds", type=float, default=30.0, help="0 skips idle")
    parser.add_argument("--rows", type=int, default=1_000_000, help="0 skips memory")
    parser.add_argument("--memory-seconds", type=float, default=15.0)
    parser.add_argument("--hold-ms", type=int, default=60_000, help="the fake's latency")
    args = parser.parse_args()
    result: dict[str, object] = {
        "benchmark": "footprint",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "command": " ".join(["python", *sys.argv]),
    }
    with tempfile.TemporaryDirectory() as tmp:
        if args.idle_seconds:
            fake, url = start_fake(0)
            try:
                result.update(idle(tmp, url, args.idle_seconds))
            finally:
                fake.terminate()
                fake.wait(10)
        if args.rows:
            fake, url = start_fake(args.hold_ms)
            try:
                result.update(memory(tmp, url, args.rows, args.memory_seconds))
            finally:
                fake.terminate()
                fake.wait(10)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
