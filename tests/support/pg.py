"""A real PostgreSQL server for the tests: fixtures ``pg_server`` and ``pg_url``.

tests/conftest.py loads this module as a plugin (so pytest rewrites its asserts).

``FORWARDER_TEST_POSTGRES_URL`` (a superuser URL, PostgreSQL 13 or later) names a server to use;
otherwise the session starts a throwaway cluster with initdb and pg_ctl (on PATH or from the
Debian package's /usr/lib/postgresql/<version>/bin) on 127.0.0.1 and a free port, and stops it
at the end. As root, the cluster runs as the ``postgres`` user (or ``nobody``): initdb refuses
root. Each test gets a database of its own, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from .daemon import free_port

# Read at import: the autouse clean_env fixture removes FORWARDER_* variables before each test.
TEST_URL = os.environ.get("FORWARDER_TEST_POSTGRES_URL", "")
START_TIMEOUT_S = 60


def pg_bin(name: str) -> str | None:
    """The PostgreSQL program *name*: on PATH, else the newest Debian package's copy.

    Debian's /usr/bin wrapper (pg_wrapper, a Perl script) is skipped for the real program when
    that is installed: it costs 40 ms a call.
    """
    found = shutil.which(name)
    if found and not os.path.realpath(found).endswith("pg_wrapper"):
        return found

    def version(path: str) -> int:
        part = Path(path).parts[-3]
        return int(part) if part.isdigit() else 0

    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=version)
    return candidates[-1] if candidates else found


def _cluster_user() -> str | None:
    """The user that runs the cluster when we are root (initdb refuses root), else None."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise RuntimeError("running as root, and neither a postgres nor a nobody user exists")


@dataclass
class PgServer:
    """A PostgreSQL server: its superuser URL, and (for our own cluster) how to restart it."""

    url: str
    datadir: Path | None = None
    user: str | None = None
    version: int = 0  # server_version_num

    @property
    def can_restart(self) -> bool:
        """Whether the tests own the server and may restart it."""
        return self.datadir is not None

    def database_url(self, name: str) -> str:
        """The URL of database *name* on this server."""
        parts = urlsplit(self.url)
        return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))

    def _as_owner(self, command: list[str]) -> list[str]:
        return ["runuser", "-u", self.user, "--", *command] if self.user else command

    def pg_ctl(self, *args: str) -> list[str]:
        """The pg_ctl command line for this cluster, run as its owner."""
        pg_ctl = pg_bin("pg_ctl")
        assert pg_ctl is not None and self.datadir is not None
        return self._as_owner([pg_ctl, "-D", str(self.datadir / "data"), *args])

    async def restart(self) -> None:
        """``pg_ctl restart -m fast``: every connection is cut, the server comes back."""
        assert self.datadir is not None
        log = str(self.datadir / "log")  # the server's output, or it would hold our pipe open
        process = await asyncio.create_subprocess_exec(
            *self.pg_ctl("restart", "-m", "fast", "-w", "-t", str(START_TIMEOUT_S), "-l", log),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(process.communicate(), START_TIMEOUT_S + 10)
        assert process.returncode == 0, out.decode()

    async def psql(self, url: str, sql: str, timeout: float = 120) -> str:
        """Run *sql* with psql without blocking the event loop (the fake TikTok runs on it)."""
        return await psql(url, sql, timeout)

    def psql_sync(self, url: str, sql: str) -> str:
        """Run *sql* with psql against *url*; return its output."""
        return subprocess.run(
            psql_command(url),
            input=sql.encode(),
            capture_output=True,
            check=True,
            timeout=120,
        ).stdout.decode()


def psql_command(url: str) -> list[str]:
    """psql reading SQL from stdin, stopping at the first error, ignoring ~/.psqlrc.

    Output is bare values (unaligned, tuples only), one row a line.
    """
    psql = pg_bin("psql")
    if psql is None:
        pytest.skip("psql is not installed (apt-get install postgresql-client)")
    return [psql, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url]


async def psql(url: str, sql: str, timeout: float = 120) -> str:
    """Run *sql* with psql without blocking the event loop (the fake TikTok runs on it)."""
    process = await asyncio.create_subprocess_exec(
        *psql_command(url),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(sql.encode()), timeout)
    assert process.returncode == 0, err.decode()
    return out.decode()


def _start_cluster(root: Path, user: str | None) -> PgServer:
    initdb, pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip(
            "PostgreSQL server programs not found: apt-get install postgresql, "
            "or set FORWARDER_TEST_POSTGRES_URL"
        )
    server = PgServer(url="", datadir=root, user=user)
    if user is not None:
        shutil.chown(root, user=user)
    subprocess.run(
        server._as_owner(
            [initdb, "-D", str(root / "data"), "-U", "postgres", "--auth=trust", "-E", "UTF8"]
        ),
        check=True,
        capture_output=True,
        timeout=START_TIMEOUT_S,
    )
    port = free_port()
    options = " ".join(
        [
            "-c listen_addresses=127.0.0.1",
            f"-c port={port}",
            f"-c unix_socket_directories={root}",
            # A throwaway cluster: durability off for speed (a clean restart still keeps data).
            "-c fsync=off",
            "-c synchronous_commit=off",
            "-c full_page_writes=off",
            "-c max_connections=200",
        ]
    )
    subprocess.run(
        server.pg_ctl(
            "start", "-w", "-t", str(START_TIMEOUT_S), "-l", str(root / "log"), "-o", options
        ),
        check=True,
        capture_output=True,
        timeout=START_TIMEOUT_S + 10,
    )
    server.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    return server


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The PostgreSQL server of this test session."""
    if TEST_URL:
        server = PgServer(url=TEST_URL)
        server.version = int(server.psql_sync(TEST_URL, "SHOW server_version_num").strip())
        yield server
        return
    user = _cluster_user()
    # Not pytest's tmp_path: its parent is private to root, and the cluster runs as *user*.
    root = Path(tempfile.mkdtemp(prefix="forwarder-pg-"))
    try:
        server = _start_cluster(root, user)
        server.version = int(server.psql_sync(server.url, "SHOW server_version_num").strip())
        try:
            yield server
        finally:
            subprocess.run(
                server.pg_ctl("stop", "-m", "immediate", "-w"),
                check=False,
                capture_output=True,
                timeout=60,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """The URL of a new, empty database on the session's server, dropped after the test."""
    name = f"forwarder_test_{uuid.uuid4().hex[:12]}"
    # FILE_COPY (PostgreSQL 15+) copies template1 twice as fast as logging it to the WAL.
    strategy = " STRATEGY = FILE_COPY" if pg_server.version >= 150000 else ""
    pg_server.psql_sync(pg_server.url, f"CREATE DATABASE {name}{strategy}")
    try:
        yield pg_server.database_url(name)
    finally:
        pg_server.psql_sync(pg_server.url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
