"""The `forwarder` command as a process on a SQLite outbox: its environment, start, stop, logs."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from forwarder.fake_tiktok import FakeTikTok

from .harness import PIXEL, TOKEN

FORWARDER = [sys.executable, "-m", "forwarder"]


def daemon_env(db_path: Path, fake: FakeTikTok, **extra: str) -> dict[str, str]:
    """The environment of a daemon delivering *db_path* to *fake*, with quick retries."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIKTOK_", "FORWARDER_"))}
    env.update(
        TIKTOK_ACCESS_TOKEN=TOKEN,
        TIKTOK_PIXEL_CODE=PIXEL,
        TIKTOK_API_URL=fake.url,
        FORWARDER_DATABASE_URL=f"sqlite:///{db_path}",
        FORWARDER_HTTP_ADDR="127.0.0.1:0",
        FORWARDER_LOG_FORMAT="json",
        FORWARDER_BACKOFF_INITIAL="50ms",
        FORWARDER_BACKOFF_MAX="200ms",
        FORWARDER_THROTTLE_MAX_PAUSE="300ms",
        FORWARDER_PAUSE_PROBE_MAX="300ms",
        FORWARDER_POLL_INTERVAL="20ms",
        FORWARDER_REQUEST_TIMEOUT="1s",
        FORWARDER_LEASE="3s",
        FORWARDER_PHONE_REGION="US",
    )
    env.update(extra)
    return env


def sqlite3_cli(db_path: Path, sql: str) -> None:
    """Run SQL through the sqlite3 command-line tool, as an operator or a shell script would,
    with the busy timeout the README asks every writer for (without one, the tool failed with
    "database is locked" whenever it met one of the daemon's claims)."""
    script = ".timeout 5000\n" + sql
    subprocess.run(["sqlite3", str(db_path)], input=script.encode(), check=True, timeout=60)


def insert_rows(db_path: Path, rows: list[dict[str, object]]) -> None:
    """Insert rows with the sqlite3 CLI in one transaction."""

    def literal(value: object) -> str:
        if value is None:
            return "NULL"
        if isinstance(value, int):
            return str(value)
        return "'" + str(value).replace("'", "''") + "'"

    lines = ["BEGIN;"]
    for row in rows:
        names = ", ".join(row)
        values = ", ".join(literal(v) for v in row.values())
        lines.append(
            f"INSERT INTO tiktok_outbox ({names}) VALUES ({values}) ON CONFLICT DO NOTHING;"
        )
    lines.append("COMMIT;")
    sqlite3_cli(db_path, "\n".join(lines))


async def forwarder(env: dict[str, str], *args: str) -> asyncio.subprocess.Process:
    """Start `forwarder ARGS` as a process."""
    return await asyncio.create_subprocess_exec(
        *FORWARDER, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )


async def finish(process: asyncio.subprocess.Process, timeout: float = 30) -> tuple[int, str, str]:
    """Wait for a process; return its exit code, stdout and stderr."""
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def migrated(db_path: Path, env: dict[str, str]) -> None:
    """Run `forwarder migrate` and check it succeeded."""
    code, _, err = await finish(await forwarder(env, "migrate"))
    assert code == 0, err


def spawn(
    env: dict[str, str], log: Path, *args: str, prefix: tuple[str, ...] = ()
) -> subprocess.Popen[bytes]:
    """Start `forwarder ARGS` (run by default) with its output in *log* (a pipe nobody reads
    could block it)."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [*prefix, *FORWARDER, *(args or ("run",))], env=env, stdout=out, stderr=out
        )


async def stop(daemon: subprocess.Popen[bytes]) -> int:
    """SIGTERM the daemon and return its exit code."""
    if daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)
    try:
        return await asyncio.to_thread(daemon.wait, 30)
    except subprocess.TimeoutExpired:
        daemon.kill()
        raise


def log_lines(log: Path) -> list[dict[str, object]]:
    """The JSON log lines of one daemon; the last one may be cut short by SIGKILL."""
    lines = []
    for raw in log.read_bytes().splitlines():
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if isinstance(line, dict):
            lines.append(line)
    return lines


def events(log: Path, name: str) -> list[dict[str, object]]:
    """The daemon's log lines with this event name."""
    return [line for line in log_lines(log) if line.get("event") == name]


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def readyz(port: int) -> tuple[int, dict[str, Any]]:
    """GET the daemon's /readyz: its status and JSON body, or (0, {}) while nothing listens."""
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/readyz") as response,
        ):
            return response.status, orjson.loads(await response.read())
    except aiohttp.ClientConnectionError:
        return 0, {}
