"""PostgreSQL benchmark: daemons sharing one outbox database, throughput and wake-up latency.

Prints one JSON object. The fake TikTok runs in its own process on loopback (as in drain.py);
each daemon is a `forwarder run` process with default settings (4 requests in flight, 1,000
events per request, 200 ms poll interval, LISTEN/NOTIFY on).

- drain: N realistic events copied into the outbox in one transaction while 1 or 3 daemons
  wait; events/s from the commit until every row is sent, with the fake at 0 and 100 ms.
- latency: an application inserting about 1,000 events/s (10 rows every 10 ms) for a while;
  insert-to-accepted latency per event is ``sent_at - created_at`` (the row's insert time on
  the server's clock, the daemon's time on the same host when TikTok's acceptance arrived).

Uses the server FORWARDER_BENCH_POSTGRES_URL names (a superuser URL; a database is created
and dropped), else a throwaway cluster started with initdb/pg_ctl on loopback.
Usage: python bench/postgres.py [--events 50000] [--rate 1000] [--seconds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import glob
import json
import os
import platform
import pwd
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
from drain import PIXEL, TOKEN, start_fake  # bench/ is sys.path[0] as a script
from rows import realistic

WARMUP_S = 2.0  # latency samples from the first seconds (daemons settling in) are dropped


def pg_bin(name: str) -> str:
    """initdb or pg_ctl: on PATH, else from the newest Debian package."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda path: int(p) if (p := Path(path).parts[-3]).isdigit() else 0,
    )
    if not candidates:
        sys.exit(
            f"{name} not found: apt-get install postgresql, or set FORWARDER_BENCH_POSTGRES_URL"
        )
    return candidates[-1]


@contextlib.contextmanager
def cluster() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on 127.0.0.1; yields its superuser URL."""
    root = Path(tempfile.mkdtemp(prefix="forwarder-bench-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root
        user = "postgres" if _user_exists("postgres") else "nobody"
        shutil.chown(root, user=user)
        as_user = ["runuser", "-u", user, "--"]
    data = str(root / "data")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    subprocess.run(
        [*as_user, pg_bin("initdb"), "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    # Durable settings (fsync on), as a real server would run, but a bigger pool of connections.
    options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={root}"
    pg_ctl = [*as_user, pg_bin("pg_ctl"), "-D", data]
    subprocess.run(
        [*pg_ctl, "start", "-w", "-l", str(root / "log"), "-o", options],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*pg_ctl, "stop", "-m", "fast", "-w"], check=False, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@contextlib.asynccontextmanager
async def database(admin_url: str) -> AsyncIterator[str]:
    """A new database on the server, migrated by `forwarder migrate`; dropped afterwards."""
    name = f"forwarder_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        url = admin_url.rsplit("/", 1)[0] + f"/{name}"
        migrating = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "forwarder",
            "migrate",
            env={**base_env(url, "http://127.0.0.1:9"), "FORWARDER_LOG_LEVEL": "warning"},
            stdout=asyncio.subprocess.DEVNULL,
        )
        if await migrating.wait() != 0:
            raise RuntimeError("forwarder migrate failed")
        yield url
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


def base_env(url: str, fake_url: str) -> dict[str, str]:
    """A daemon's environment: the database, the fake, default delivery settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIKTOK_", "FORWARDER_"))}
    env.update(
        TIKTOK_ACCESS_TOKEN=TOKEN,
        TIKTOK_PIXEL_CODE=PIXEL,
        TIKTOK_API_URL=fake_url,
        FORWARDER_DATABASE_URL=url,
        FORWARDER_HTTP_ADDR="127.0.0.1:0",
        FORWARDER_LOG_LEVEL="warning",
        FORWARDER_PHONE_REGION="US",
    )
    return env


@contextlib.asynccontextmanager
async def daemons(url: str, fake_url: str, n: int) -> AsyncIterator[None]:
    """*n* `forwarder run` processes, listening before the block starts, stopped after it."""
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "forwarder",
            "run",
            "--no-migrate",
            env=base_env(url, fake_url),
            stdout=asyncio.subprocess.DEVNULL,
        )
        for _ in range(n)
    ]
    try:
        conn = await asyncpg.connect(url)
        try:
            deadline = time.monotonic() + 60
            while (
                await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND application_name = 'forwarder' AND query LIKE 'LISTEN%'"
                )
                < n
            ):
                if time.monotonic() > deadline:
                    raise RuntimeError("the daemons did not start listening within 60 s")
                await asyncio.sleep(0.05)
        finally:
            await conn.close()
        yield
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            await asyncio.wait_for(process.wait(), 30)


async def wait_all_sent(conn: asyncpg.Connection, n: int, within_s: float = 600) -> float:
    """Wait until *n* rows are sent; return the monotonic time it was seen."""
    deadline = time.monotonic() + within_s
    while True:
        sent = await conn.fetchval("SELECT count(*) FROM tiktok_outbox WHERE status = 'sent'")
        if sent >= n:
            return time.monotonic()
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {sent} of {n} rows sent after {within_s} s")
        await asyncio.sleep(0.02)


def rows(first: int, n: int, rng: random.Random) -> list[tuple[str, str, str]]:
    """Realistic (event_id, event, payload) rows, numbered from *first*."""
    return [realistic(i, rng) for i in range(first, first + n)]


async def drain(url: str, fake_url: str, n_daemons: int, events: int) -> dict[str, object]:
    """Events/s for *n_daemons* to deliver *events* copied in at once."""
    data = rows(0, events, random.Random(42))
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("TRUNCATE tiktok_outbox, forwarder_state")
        async with daemons(url, fake_url, n_daemons):
            started = time.monotonic()
            await conn.copy_records_to_table(
                "tiktok_outbox", records=data, columns=["event_id", "event", "payload"]
            )
            finished = await wait_all_sent(conn, events)
    finally:
        await conn.close()
    seconds = finished - started
    return {
        "daemons": n_daemons,
        "events_per_s": round(events / seconds),
        "seconds": round(seconds, 2),
    }


async def latency(
    url: str, fake_url: str, n_daemons: int, rate: int, seconds: float
) -> dict[str, object]:
    """Insert-to-accepted latency with an application inserting *rate* events/s."""
    rng = random.Random(7)
    per_tick, tick_s = max(1, rate // 100), 0.01
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("TRUNCATE tiktok_outbox, forwarder_state")
        async with daemons(url, fake_url, n_daemons):
            start = time.monotonic()
            wall_start = time.time()
            inserted, ticks = 0, 0
            while time.monotonic() - start < seconds:
                batch = rows(inserted, per_tick, rng)
                await conn.execute(
                    "INSERT INTO tiktok_outbox (event_id, event, payload)"
                    " SELECT * FROM unnest($1::text[], $2::text[], $3::text[])",
                    [r[0] for r in batch],
                    [r[1] for r in batch],
                    [r[2] for r in batch],
                )
                inserted += per_tick
                ticks += 1
                # Keep to the schedule (10 rows every 10 ms), whatever one insert took.
                await asyncio.sleep(max(0.0, start + ticks * tick_s - time.monotonic()))
            insert_s = time.monotonic() - start
            await wait_all_sent(conn, inserted)
        samples = [
            r[0]
            for r in await conn.fetch(
                "SELECT sent_at - created_at FROM tiktok_outbox WHERE created_at >= $1",
                wall_start + WARMUP_S,
            )
        ]
    finally:
        await conn.close()
    cuts = statistics.quantiles(samples, n=100)
    return {
        "daemons": n_daemons,
        "insert_rate_per_s": round(inserted / insert_s),
        "events": len(samples),
        "p50_ms": round(cuts[49] * 1000, 1),
        "p99_ms": round(cuts[98] * 1000, 1),
        "max_ms": round(max(samples) * 1000, 1),
    }


async def run(admin_url: str, args: argparse.Namespace) -> dict[str, object]:
    result: dict[str, object] = {
        "benchmark": "postgres",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "events": args.events,
    }
    admin = await asyncpg.connect(admin_url)
    result["server"] = await admin.fetchval("SHOW server_version")
    await admin.close()
    async with database(admin_url) as url:
        drains = []
        for latency_ms in (0, 100):
            fake, fake_url = start_fake(latency_ms)
            try:
                for n in (1, 3):
                    drains.append(
                        {"latency_ms": latency_ms, **await drain(url, fake_url, n, args.events)}
                    )
            finally:
                fake.terminate()
                fake.wait(10)
        result["drain"] = drains
        fake, fake_url = start_fake(0)
        try:
            result["latency"] = [
                await latency(url, fake_url, n, args.rate, args.seconds) for n in (1, 3)
            ]
        finally:
            fake.terminate()
            fake.wait(10)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=50_000, help="rows per drain run")
    parser.add_argument("--rate", type=int, default=1000, help="events/s in the latency runs")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of a latency run")
    args = parser.parse_args()
    given = os.environ.get("FORWARDER_BENCH_POSTGRES_URL")
    with contextlib.nullcontext(given) if given else cluster() as admin_url:
        result = asyncio.run(run(admin_url, args))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
