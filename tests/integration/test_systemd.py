"""systemd's notify protocol over real datagram sockets: READY, STOPPING, and the watchdog."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from forwarder.notify import Notifier, Progress, keepalive
from tests.support.notify import NotifyListener
from tests.support.waiting import ManualClock, wait_until


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
