"""systemd: the unit file passes systemd-analyze, and the daemon speaks the notify protocol."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from forwarder.app import SHUTDOWN_CLOSE_S
from forwarder.fake_tiktok import FakeTikTok
from forwarder.notify import Notifier, Progress, keepalive, socket_address, watchdog_timeout
from forwarder.settings import Settings, parse_duration
from forwarder.worker import SHUTDOWN_FINISH_S

from .helpers import ManualClock, purchase, query, statuses, wait_until
from .test_e2e import TOKEN, daemon_env, finish, forwarder, insert_rows

UNIT = Path(__file__).resolve().parent.parent / "deploy" / "forwarder.service"
#: The exposure `systemd-analyze security --offline=true` gave the unit (systemd 252, Debian 12).
EXPOSURE_MAX = 1.1


def systemd_analyze() -> str:
    """The systemd-analyze binary, or a failure telling how to install it."""
    path = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
    if not Path(path).exists():
        pytest.fail("systemd-analyze is missing: apt-get install systemd (Debian's package)")
    return path


def unit_settings(text: str) -> dict[str, list[str]]:
    """Every assignment of a unit file, by key, in order (a key may repeat)."""
    settings: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


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


def test_unit_declares_the_contract() -> None:
    """The unit is Type=notify with a watchdog, runs the documented install path and reads /etc."""
    settings = unit_settings(UNIT.read_text())
    assert settings["Type"] == ["notify"]
    assert settings["NotifyAccess"] == ["main"]
    assert settings["WatchdogSec"] == ["30s"]
    assert settings["Restart"] == ["on-failure"]
    assert settings["ExecStart"] == ["/opt/forwarder/.venv/bin/forwarder run"]
    assert settings["ExecReload"] == ["/bin/kill -HUP $MAINPID"]  # reads the token again
    assert settings["EnvironmentFile"] == ["/etc/forwarder/forwarder.env"]
    assert settings["StateDirectory"] == ["forwarder"]
    assert (
        "FORWARDER_DATABASE_URL=sqlite:////var/lib/forwarder/forwarder.db"
        in (settings["Environment"])
    )
    assert settings["ReadWritePaths"] == ["/var/lib/forwarder"]


def test_stop_timeout_covers_the_shutdown_deadline() -> None:
    """TimeoutStopSec exceeds the shutdown deadline (grace, finish, close) with room to spare."""
    settings = unit_settings(UNIT.read_text())
    stop_s = parse_duration(settings["TimeoutStopSec"][0])
    grace_s = Settings.model_fields["shutdown_grace"].default
    assert isinstance(stop_s, float)
    assert stop_s >= 1.5 * (grace_s + SHUTDOWN_FINISH_S + SHUTDOWN_CLOSE_S)


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


class NotifyListener:
    """The service manager's end of NOTIFY_SOCKET: collects datagrams with their sender's pid."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.setblocking(False)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.messages: list[tuple[int, list[str]]] = []

    def drain(self) -> None:
        """Read every datagram waiting in the socket."""
        while True:
            try:
                data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except BlockingIOError:
                return
            pid = 0
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("iII", payload[:12])[0]
            self.messages.append((pid, data.decode().split("\n")))

    def index(self, line: str, after: int = -1) -> int:
        """The index of the first datagram after *after* that carries *line*, or -1."""
        self.drain()
        for i, (_, lines) in enumerate(self.messages):
            if i > after and line in lines:
                return i
        return -1

    async def expect(self, line: str, after: int = -1, timeout: float = 30.0) -> int:
        """Wait (bounded) for a datagram carrying *line* after index *after*; return its index."""
        await wait_until(lambda: self.index(line, after) >= 0, timeout, line)
        return self.index(line, after)

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()


@pytest.fixture
async def fake() -> AsyncIterator[FakeTikTok]:
    """The fake TikTok on a free loopback port."""
    async with FakeTikTok(token=TOKEN) as server:
        yield server


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


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


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


def test_socket_address_forms() -> None:
    """A path is used as is, @name becomes an abstract address, anything else is refused."""
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@forwarder/notify") == "\0forwarder/notify"
    assert socket_address("") is None
    assert socket_address("@") is None
    assert socket_address("vsock:2:1234") is None


async def test_abstract_socket_receives_ready() -> None:
    """A notifier aimed at @name delivers READY=1 and STATUS= to the abstract socket."""
    name = f"forwarder-test-{uuid.uuid4().hex}"
    receiver = NotifyListener("\0" + name)
    try:
        notifier = Notifier.from_env({"NOTIFY_SOCKET": "@" + name})
        assert notifier.enabled
        assert notifier.ready("delivering\nREADY=0")
        await wait_until(lambda: receiver.index("READY=1") >= 0, 5, "READY=1")
        assert receiver.messages[0] == (os.getpid(), ["READY=1", "STATUS=delivering READY=0"])
        notifier.close()
    finally:
        receiver.close()


def test_unset_socket_is_a_no_op() -> None:
    """Without NOTIFY_SOCKET nothing is sent, nothing is opened and nothing raises."""
    notifier = Notifier.from_env({"WATCHDOG_USEC": "30000000"})
    assert not notifier.enabled
    assert notifier.watchdog_s is None
    assert not notifier.ready("x")
    assert not notifier.watchdog()
    assert not notifier.status("x")
    assert not notifier.stopping()
    notifier.close()


def test_watchdog_pid_must_be_ours() -> None:
    """WATCHDOG_USEC counts only when WATCHDOG_PID is unset or names this process."""
    usec = {"WATCHDOG_USEC": "30000000"}
    assert watchdog_timeout(usec, pid=42) == 30.0
    assert watchdog_timeout({**usec, "WATCHDOG_PID": "42"}, pid=42) == 30.0
    assert watchdog_timeout({**usec, "WATCHDOG_PID": "41"}, pid=42) is None
    assert watchdog_timeout({"WATCHDOG_USEC": "0"}, pid=42) is None
    assert watchdog_timeout({"WATCHDOG_USEC": "soon"}, pid=42) is None
    assert watchdog_timeout({}, pid=42) is None
    notifier = Notifier.from_env(
        {"NOTIFY_SOCKET": "/run/x", **usec, "WATCHDOG_PID": "1"}, pid=os.getpid()
    )
    assert notifier.enabled and notifier.watchdog_s is None


def test_send_failure_warns_once_and_never_raises(tmp_path: Path) -> None:
    """Sending to a socket nobody listens on returns False and logs one warning, not an error."""
    notifier = Notifier(str(tmp_path / "nobody.sock"), watchdog_s=30.0)
    with capture_logs() as logs:
        assert not notifier.ready("x")
        assert not notifier.watchdog()
        assert not notifier.watchdog()
    assert [entry["event"] for entry in logs] == ["notify_failed"]
    assert logs[0]["log_level"] == "warning"
    notifier.close()


def test_send_survives_a_broken_log_stream(tmp_path: Path) -> None:
    """A failed send whose warning cannot be written (stderr gone) still returns, not raises."""

    class BrokenLog:
        def warning(self, event: str, **fields: object) -> None:
            raise BrokenPipeError(32, "Broken pipe")

    notifier = Notifier(str(tmp_path / "nobody.sock"))
    notifier._log = BrokenLog()  # type: ignore[assignment]
    assert not notifier.ready("x")
    notifier.close()


def test_stopping_is_sent_once(tmp_path: Path) -> None:
    """STOPPING=1 goes out on the first call only."""
    receiver = NotifyListener(str(tmp_path / "n.sock"))
    try:
        notifier = Notifier(str(tmp_path / "n.sock"))
        assert notifier.stopping("bye")
        assert not notifier.stopping("again")
        receiver.drain()
        assert [lines for _, lines in receiver.messages] == [["STOPPING=1", "STATUS=bye"]]
        notifier.close()
    finally:
        receiver.close()


@pytest.fixture
async def pinged(tmp_path: Path) -> AsyncIterator[tuple[NotifyListener, Notifier]]:
    """A listener and a notifier with a 40 ms watchdog aimed at it."""
    receiver = NotifyListener(str(tmp_path / "w.sock"))
    notifier = Notifier(str(tmp_path / "w.sock"), watchdog_s=0.04)
    try:
        yield receiver, notifier
    finally:
        notifier.close()
        receiver.close()


async def test_keepalive_withholds_pings_while_the_loop_is_stuck(
    pinged: tuple[NotifyListener, Notifier],
) -> None:
    """WATCHDOG=1 stops once the loop's tick has not moved for too long, and resumes after."""
    receiver, notifier = pinged
    tick = [0.0]
    reads = [0]

    def read() -> float:
        reads[0] += 1
        return tick[0]

    clock = ManualClock(start=0.0)
    progress = Progress(read, stale_after_s=5.0, clock=clock)
    with capture_logs() as logs:
        task = asyncio.create_task(keepalive(notifier, progress, lambda: "delivering"))
        try:
            await receiver.expect("WATCHDOG=1", timeout=5)
            await receiver.expect("STATUS=delivering", timeout=5)
            clock.advance(6.0)  # the loop made no pass for longer than stale_after_s
            await wait_until(lambda: any(e["event"] == "watchdog_withheld" for e in logs), 5)
            receiver.drain()
            stalled, looked = len(receiver.messages), reads[0]
            # Three more rounds of the keepalive loop (each reads the tick once), none pinging.
            await wait_until(lambda: reads[0] >= looked + 3, 5, "three keepalive rounds")
            assert receiver.index("WATCHDOG=1", after=stalled - 1) == -1
            tick[0] = 1.0  # the loop passes again
            await receiver.expect("WATCHDOG=1", after=stalled - 1, timeout=5)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_keepalive_pings_through_shutdown(pinged: tuple[NotifyListener, Notifier]) -> None:
    """After STOPPING=1 the watchdog is pinged even though the loop no longer ticks."""
    receiver, notifier = pinged
    clock = ManualClock(start=0.0)
    progress = Progress(lambda: 0.0, stale_after_s=5.0, clock=clock)
    notifier.stopping()
    clock.advance(60.0)
    task = asyncio.create_task(keepalive(notifier, progress))
    try:
        await receiver.expect("WATCHDOG=1", timeout=5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
