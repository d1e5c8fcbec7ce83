"""Daemons as processes on one PostgreSQL outbox, and psql inserting as an application would."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from forwarder.fake_tiktok import FakeTikTok

from .daemon import FORWARDER
from .daemon import daemon_env as sqlite_daemon_env
from .rows import purchase
from .waiting import wait_until

CHUNK = 500  # rows per psql transaction


@dataclass
class Daemon:
    """One `forwarder run` process and the file its logs go to."""

    process: asyncio.subprocess.Process
    log_path: Path

    def log(self) -> str:
        """Everything it has logged so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def events(self, name: str) -> list[dict[str, Any]]:
        """Its JSON log lines whose event is *name*."""
        found = []
        for line in self.log().splitlines():
            if line.startswith("{") and f'"{name}"' in line:
                record = orjson.loads(line)
                if record.get("event") == name:
                    found.append(record)
        return found


def daemon_env(url: str, fake: FakeTikTok, **extra: str) -> dict[str, str]:
    """The environment of a daemon delivering the outbox at *url* to *fake*: the SQLite
    daemons' quick retries, with the default request timeout, lease and poll interval (NOTIFY,
    not polling, wakes the daemons)."""
    env = sqlite_daemon_env(Path("unused.db"), fake, FORWARDER_DATABASE_URL=url)
    for name in ("FORWARDER_REQUEST_TIMEOUT", "FORWARDER_LEASE", "FORWARDER_POLL_INTERVAL"):
        del env[name]
    env.update(extra)
    return env


@contextlib.asynccontextmanager
async def daemons(env: dict[str, str], tmp_path: Path, n: int) -> AsyncIterator[list[Daemon]]:
    """Start *n* daemons at once (they migrate concurrently); make sure they are gone after."""
    started = []
    for i in range(n):
        log_path = tmp_path / f"daemon-{i}.log"
        with log_path.open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                *FORWARDER, "run", env=env, stdout=log, stderr=log
            )
        started.append(Daemon(process, log_path))
    try:
        await wait_until(
            lambda: all(d.events("postgres_listening") for d in started),
            60,
            "every daemon listening",
        )
        yield started
    finally:
        for daemon in started:
            if daemon.process.returncode is None:
                daemon.process.kill()
                await daemon.process.wait()


async def stop(daemon: Daemon, timeout: float = 30) -> int:
    """SIGTERM *daemon* and return its exit code."""
    daemon.process.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(daemon.process.wait(), timeout)


def _literal(value: object) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def insert_script(first: int, last: int) -> str:
    """SQL inserting events *first*..*last*-1 in transactions of CHUNK rows, as an app would."""
    lines = []
    for start in range(first, last, CHUNK):
        values = ",\n".join(
            f"({_literal(row['event_id'])}, {_literal(row['event'])}, {_literal(row['payload'])})"
            for row in (purchase(i) for i in range(start, min(start + CHUNK, last)))
        )
        lines.append(
            "BEGIN;\nINSERT INTO tiktok_outbox (event_id, event, payload) VALUES\n"
            f"{values}\nON CONFLICT DO NOTHING;\nCOMMIT;"
        )
    return "\n".join(lines)


async def statuses(url: str) -> dict[str, int] | None:
    """Rows per status, or None while the server does not answer (it is restarting)."""
    try:
        conn = await asyncpg.connect(url, timeout=5)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
        return None
    try:
        rows = await conn.fetch("SELECT status, count(*) FROM tiktok_outbox GROUP BY status")
    except (asyncpg.PostgresError, asyncpg.InterfaceError):
        return None
    finally:
        await conn.close()
    return {status: count for status, count in rows}


async def all_sent(url: str, n: int) -> bool:
    """Whether exactly *n* rows exist and every one is sent."""
    return await statuses(url) == {"sent": n}
