"""systemd's readiness and watchdog protocol (sd_notify(3)), spoken without a dependency.

Under ``Type=notify`` the service manager puts the path of a datagram socket in
``NOTIFY_SOCKET`` (``@name`` for the abstract namespace) and, with ``WatchdogSec=``, the
timeout in ``WATCHDOG_USEC`` (meant for the process ``WATCHDOG_PID`` when that is set). The
daemon sends newline-separated assignments: ``READY=1``, ``WATCHDOG=1``, ``STOPPING=1``,
``STATUS=...``. Outside systemd nothing is set and every call here does nothing. Sending never
raises: a lost notification must not take the daemon down with it.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from typing import Any

import structlog

SEND_TIMEOUT_S = 1.0  # the longest a send may block the loop when the manager's queue is full
STATUS_PERIOD_S = 10.0  # how often STATUS= is refreshed when no watchdog sets the pace


def socket_address(value: str) -> str | None:
    """Return the AF_UNIX address NOTIFY_SOCKET names, or None when it names none we speak."""
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    return None


def watchdog_timeout(env: Mapping[str, str], pid: int) -> float | None:
    """Return the watchdog timeout in seconds WATCHDOG_USEC sets for process *pid*, or None."""
    usec = env.get("WATCHDOG_USEC", "").strip()
    owner = env.get("WATCHDOG_PID", "").strip()
    if owner and owner != str(pid):
        return None
    if not usec.isdigit() or int(usec) == 0:
        return None
    return int(usec) / 1_000_000


class Notifier:
    """Sends state changes to the service manager; a no-op when NOTIFY_SOCKET is unset."""

    def __init__(self, address: str | None, watchdog_s: float | None = None) -> None:
        self.address = address
        #: The manager's watchdog timeout in seconds, or None when it expects no pings.
        self.watchdog_s = watchdog_s if address else None
        self.stopping_sent = False
        self._sock: socket.socket | None = None
        self._failing = False
        self._log = structlog.get_logger("forwarder.notify")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, pid: int | None = None) -> Notifier:
        """Build a notifier from NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID."""
        env = os.environ if env is None else env
        raw = env.get("NOTIFY_SOCKET", "")
        address = socket_address(raw)
        if raw and address is None:
            _quietly(
                structlog.get_logger("forwarder.notify").warning,
                "notify_socket_unsupported",
                notify_socket=raw,
                note="only a path or an @abstract Unix socket is supported; not notifying",
            )
        return cls(address, watchdog_timeout(env, os.getpid() if pid is None else pid))

    @property
    def enabled(self) -> bool:
        """Whether a service manager listens."""
        return self.address is not None

    def send(self, *assignments: str) -> bool:
        """Send one datagram of ``NAME=value`` lines; return whether it left, never raise."""
        if self.address is None or not assignments:
            return False
        data = "\n".join(assignments).encode("utf-8", "replace")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.settimeout(SEND_TIMEOUT_S)
            self._sock.sendto(data, self.address)
        except OSError as error:
            if not self._failing:
                _quietly(
                    self._log.warning,
                    "notify_failed",
                    message=assignments[0],
                    error=str(error),
                    note="systemd may think the daemon is not ready or hung",
                )
            self._failing = True
            return False
        self._failing = False
        return True

    def ready(self, status: str = "") -> bool:
        """Tell the manager start-up is complete (READY=1), with a STATUS line."""
        return self.send("READY=1", *_status(status))

    def watchdog(self) -> bool:
        """Tell the manager the daemon is alive (WATCHDOG=1)."""
        return self.send("WATCHDOG=1")

    def stopping(self, status: str = "") -> bool:
        """Tell the manager shutdown has begun (STOPPING=1), once."""
        if self.stopping_sent:
            return False
        self.stopping_sent = True
        return self.send("STOPPING=1", *_status(status))

    def status(self, text: str) -> bool:
        """Set the free-form status line `systemctl status` shows."""
        return self.send(*_status(text))

    def close(self) -> None:
        """Close the socket (a later send opens a new one)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _quietly(emit: Callable[..., Any], event: str, **fields: Any) -> None:
    """Log *event*, unless the log stream itself is broken (say, stderr's reader is gone)."""
    with suppress(OSError, ValueError):
        emit(event, **fields)


def _status(text: str) -> tuple[str, ...]:
    """The STATUS= assignment for *text* on one line, or nothing for an empty text."""
    line = " ".join(text.split())
    return (f"STATUS={line}",) if line else ()


class Progress:
    """Tells whether a value that a healthy loop keeps changing changed recently."""

    def __init__(
        self,
        read: Callable[[], float],
        stale_after_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._clock = clock
        self.stale_after_s = stale_after_s
        self._seen = read()
        self._moved_at = clock()

    def age(self) -> float:
        """Seconds since the value was last seen to change (or since this watch began)."""
        now = self._clock()
        value = self._read()
        if value != self._seen:
            self._seen = value
            self._moved_at = now
        return now - self._moved_at

    def alive(self) -> bool:
        """Whether the value changed within the last *stale_after_s* seconds."""
        return self.age() <= self.stale_after_s


async def keepalive(
    notifier: Notifier, progress: Progress, status: Callable[[], str] | None = None
) -> None:
    """Ping the watchdog every half timeout while *progress* is alive; refresh STATUS=."""
    # Pings are withheld while the loop is stuck, so systemd restarts the daemon; once shutdown
    # has begun (STOPPING=1) they go on regardless, as the shutdown has deadlines of its own.
    if not notifier.enabled:
        return
    log = structlog.get_logger("forwarder.notify")
    period = notifier.watchdog_s / 2 if notifier.watchdog_s else STATUS_PERIOD_S
    last_status = ""
    withheld = False
    while True:
        if notifier.watchdog_s:
            age = progress.age()
            if age <= progress.stale_after_s or notifier.stopping_sent:
                notifier.watchdog()
                withheld = False
            elif not withheld:
                withheld = True
                _quietly(
                    log.error,
                    "watchdog_withheld",
                    loop_stalled_s=round(age, 1),
                    note="the delivery loop made no pass; systemd will restart the daemon",
                )
        text = status() if status is not None else ""
        if text and text != last_status and not notifier.stopping_sent:
            notifier.status(text)
            last_status = text
        await asyncio.sleep(period)
