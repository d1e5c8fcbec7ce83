"""systemd: the unit file passes systemd-analyze, and the daemon speaks the notify protocol."""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from forwarder.fake_tiktok import FakeTikTok
from tests.support.daemon import daemon_env, finish, forwarder, free_port, insert_rows
from tests.support.notify import NotifyListener
from tests.support.repo import UNIT
from tests.support.rows import purchase, query, statuses
from tests.support.waiting import wait_until

#: The exposure `systemd-analyze security --offline=true` gave the unit (systemd 252, Debian 12).
EXPOSURE_MAX = 1.1


def systemd_analyze() -> str:
    """The systemd-analyze binary, or a failure telling how to install it."""
    path = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
    if not Path(path).exists():
        pytest.fail("systemd-analyze is missing: apt-get install systemd (Debian's package)")
    return path


@pytest.fixture
def testable_unit(tmp_path: Path) -> Path:
    """A copy of the unit whose ExecStart and EnvironmentFile exist on this machine."""
    executable = Path(sys.executable).with_name("forwarder")
    if not executable.exists():
        executable = Path(shutil.which("forwarder") or executable)
    assert executable.exists(), f"the forwarder script is not installed next to {sys.executable}"
    env_file = tmp_path / "forwarder.env"
    env_file.write_text("TIKTOK_ACCESS_TOKEN=verify-token\n")
    env_file.chmod(0o600)
    replace = {"ExecStart": f"{executable} run", "EnvironmentFile": str(env_file)}
    lines = []
    for line in UNIT.read_text().splitlines():
        key = line.partition("=")[0]
        lines.append(f"{key}={replace[key]}" if key in replace else line)
    unit = tmp_path / "forwarder.service"
    unit.write_text("\n".join(lines) + "\n")
    return unit


def test_systemd_analyze_verify(testable_unit: Path) -> None:
    """`systemd-analyze verify` accepts the unit without a single complaint about it."""
    result = subprocess.run(
        [systemd_analyze(), "verify", str(testable_unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = result.stdout + result.stderr
    about_unit = [line for line in output.splitlines() if "forwarder" in line]
    assert result.returncode == 0, output
    assert about_unit == []


def test_systemd_analyze_security(testable_unit: Path) -> None:
    """`systemd-analyze security --offline=true` rates the sandbox at or below EXPOSURE_MAX."""
    result = subprocess.run(
        [systemd_analyze(), "security", "--offline=true", "--no-pager", str(testable_unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = result.stdout + result.stderr
    match = re.search(r"Overall exposure level for forwarder\.service: (\d+\.\d+)", output)
    assert match, output
    assert float(match.group(1)) <= EXPOSURE_MAX, output


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[NotifyListener]:
    """A notify socket bound in tmp_path, as systemd binds /run/systemd/notify."""
    path = tmp_path / "notify.sock"
    assert len(str(path)) < 100, f"{path} is too long for an AF_UNIX address"
    bound = NotifyListener(str(path))
    try:
        yield bound
    finally:
        bound.close()


def notify_env(db_path: Path, fake: FakeTikTok, notify_socket: str, **extra: str) -> dict[str, str]:
    """The daemon's environment under a service manager with a one-second watchdog."""
    env = daemon_env(db_path, fake, **extra)
    env.pop("WATCHDOG_PID", None)
    env.update(NOTIFY_SOCKET=notify_socket, WATCHDOG_USEC="1000000")
    return env


async def healthz_answers(port: int) -> bool:
    """Whether the daemon's HTTP server accepts a connection on *port*."""
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    await writer.wait_closed()
    return True


async def test_daemon_notifies_ready_watchdog_stopping(
    db_path: Path, fake: FakeTikTok, listener: NotifyListener, tmp_path: Path
) -> None:
    """The daemon sends READY=1 once migrated and listening, then WATCHDOG=1, then STOPPING=1."""
    port = free_port()
    env = notify_env(
        db_path,
        fake,
        str(tmp_path / "notify.sock"),
        FORWARDER_HTTP_ADDR=f"127.0.0.1:{port}",
        FORWARDER_REQUEST_TIMEOUT="5s",  # longer than the slow answer below
        FORWARDER_LEASE="10s",
    )
    daemon = await forwarder(env, "run")
    signalled = False
    try:
        ready = await listener.expect("READY=1")
        # Ready means migrated, the database answered and the HTTP server listens.
        assert query(db_path, "SELECT name FROM sqlite_master WHERE name = 'tiktok_outbox'")
        assert await healthz_answers(port)
        ready_lines = listener.messages[ready][1]
        assert any(line.startswith("STATUS=delivering") for line in ready_lines)
        insert_rows(db_path, [purchase(i) for i in range(5)])
        await wait_until(lambda: statuses(db_path) == {"sent": 5}, 30, "rows sent")
        await listener.expect("WATCHDOG=1", after=ready, timeout=10)
        fake.latency_s = 1.5
        before = fake.requests
        insert_rows(db_path, [purchase(i) for i in range(5, 10)])
        # The request has reached TikTok (rows merely leased would be released on shutdown).
        await wait_until(lambda: fake.requests > before, 30, "a request in flight")
        daemon.send_signal(signal.SIGTERM)
        signalled = True
        await listener.expect("STOPPING=1", after=ready, timeout=20)
        # STOPPING=1 goes out as shutdown begins, before the in-flight request is settled.
        assert "inflight" in statuses(db_path)
    finally:
        if not signalled:
            daemon.send_signal(signal.SIGTERM)
        code, _, err = await finish(daemon)
    assert code == 0, err
    assert statuses(db_path) == {"sent": 10}
    listener.drain()
    # NotifyAccess=main: every message comes from the process systemd started.
    assert {pid for pid, _ in listener.messages} == {daemon.pid}


async def test_no_ready_when_the_database_fails(
    tmp_path: Path, fake: FakeTikTok, listener: NotifyListener
) -> None:
    """A daemon that cannot open its database exits 1 without ever sending READY=1."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    env = notify_env(blocker / "outbox.db", fake, str(tmp_path / "notify.sock"))
    code, _, err = await finish(await forwarder(env, "run"))
    assert code == 1, err
    listener.drain()
    assert listener.messages, "the daemon sent no STATUS= while starting"
    assert listener.index("READY=1") == -1
