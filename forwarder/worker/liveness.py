"""Liveness: each daemon records itself and a heartbeat, so the rows a daemon leased return to
pending seconds after it died, not when their lease expires.

Three rules rescue a dead daemon's rows, each logged as ``leases_rescued`` with its reason and
counted in ``forwarder_leases_rescued_total{reason}``:

- restart: before its first claim, a daemon rescues the rows of the daemons recorded with its
  boot and PID namespace whose process is gone (systemd restarting it after a crash);
- heartbeat: every heartbeat interval, any daemon rescues the rows of a daemon whose last
  heartbeat is more than ``silent_after_s`` old (killed on another host, or stalled);
- lease: every quarter lease, the rows whose lease expired, the last resort (a daemon of a
  version without heartbeats, or one whose heartbeat goes on while its loop hangs).

The heartbeat is a task of its own, not a turn of the loop: it goes on while the loop waits for
a slow database or the shutdown waits for in-flight requests, and ends once the leases are given
back. A stalled daemon found dead finds its record marked stopped at its next heartbeat: it
registers again and logs ``daemon_found_dead``; its writes to the rows taken from it change
nothing (each is guarded by the lease) and log ``lease_lost``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from pathlib import Path
from typing import Any

from forwarder.errors import StoreError
from forwarder.store.base import Daemon
from forwarder.worker.shared import Shared

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
PID_NAMESPACE = Path("/proc/self/ns/pid")
# Records of daemons silent for this long are deleted; their rows, if any, went back to pending
# long ago by one rule or another.
DAEMONS_KEEP_S = 86400.0
DAEMONS_PRUNE_EVERY_S = 3600.0
#: Where rows a stopping daemon could not give back go, for the log lines that report them.
LEFT_LEASED = (
    "they return to pending when this daemon starts again, or when another daemon finds its "
    "heartbeat stopped (after 5 s), at the latest when their lease expires (FORWARDER_LEASE)"
)


def this_daemon(owner: str) -> Daemon:
    """Describe this process, which leases rows as *owner*."""
    boot_id = pid_ns = None
    with contextlib.suppress(OSError):
        boot_id = BOOT_ID.read_text(encoding="ascii").strip() or None
    with contextlib.suppress(OSError):
        pid_ns = os.readlink(PID_NAMESPACE)
    return Daemon(owner, socket.gethostname(), os.getpid(), boot_id, pid_ns)


def process_gone(pid: int) -> bool:
    """Whether no process of this PID namespace has *pid* any more (a zombie, killed but not
    reaped, counts as gone); this process and anything uncertain count as alive."""
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # EPERM: another user's live process
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    # The state follows the command name, which is in parentheses and may hold anything.
    fields = stat.rpartition(")")[2].split()
    return bool(fields) and fields[0] in ("Z", "X")


class Liveness:
    """Owns this daemon's record and heartbeat, and the rescue of dead daemons' rows."""

    def __init__(self, shared: Shared, daemon: Daemon) -> None:
        self.shared = shared
        self.daemon = daemon
        #: Registered, and the rows of dead daemons of this boot rescued: claims may start.
        self.started = False
        self._beating: asyncio.Task[None] | None = None
        self._beat_at = 0.0  # the clock's time of the last heartbeat recorded
        self._failing = False  # the last heartbeat failed (logged once per outage)

    async def start(self, now: float) -> None:
        """Register and start the heartbeat, then rescue the rows of the daemons recorded on
        this boot and PID namespace whose process is gone; before the first claim."""
        shared, me = self.shared, self.daemon
        await shared.calls.unless_stopped(shared.store.register_daemon(me, now))
        self._beat_at = now
        if self._beating is None:
            self._beating = asyncio.create_task(self._heartbeats())
        earlier = await shared.calls.unless_stopped(shared.store.daemons_here(me))
        for other in earlier:
            if process_gone(other.pid):
                rows = await shared.calls.unless_stopped(
                    shared.store.rescue_owner(other.owner, me.owner, now)
                )
                self._rescued(rows, "restart", owner=other.owner)
        self.started = True

    async def _heartbeats(self) -> None:
        """Record a heartbeat every interval until cancelled (at the end of shutdown)."""
        while True:
            await asyncio.sleep(self.shared.config.heartbeat_s)
            try:
                await self.beat(self.shared.clock())
            except Exception as error:  # the heartbeat never dies; the loop reports outages
                if not self._failing:
                    self.shared.log.warning("heartbeat_failed", error=str(error))
                self._failing = True

    async def beat(self, now: float) -> None:
        """Record one heartbeat; register again if another daemon found this one dead."""
        shared = self.shared
        alive = await shared.store.heartbeat(self.daemon.owner, now)
        self._failing = False
        if not alive:
            shared.log.warning(
                "daemon_found_dead",
                silent_s=round(now - self._beat_at, 1),
                note="this daemon stalled, and another took the rows it held: it settles none "
                "of them (lease_lost); TikTok counts the ones sent twice once",
            )
            await shared.store.register_daemon(self.daemon, now)
        self._beat_at = now

    async def rescue_silent(self, now: float) -> None:
        """Rescue the rows of every daemon whose heartbeat stopped."""
        shared, silent_s = self.shared, self.shared.config.silent_after_s
        me = self.daemon.owner
        silent = await shared.calls.unless_stopped(shared.store.silent_daemons(me, now, silent_s))
        for other in silent:
            rows = await shared.calls.unless_stopped(
                shared.store.rescue_owner(other.owner, me, now, silent_s)
            )
            self._rescued(rows, "heartbeat", owner=other.owner, silent_s=round(other.silent_s, 1))

    async def rescue_expired(self, now: float) -> None:
        """Rescue the rows whose lease expired, whoever held them (the last resort)."""
        shared = self.shared
        rows = await shared.calls.unless_stopped(shared.store.rescue_expired(now))
        self._rescued(rows, "lease")

    async def prune(self, now: float) -> None:
        """Delete the records of daemons silent for a day."""
        shared = self.shared
        await shared.calls.unless_stopped(shared.store.prune_daemons(now, DAEMONS_KEEP_S))

    def _rescued(self, rows: int, reason: str, **extra: Any) -> None:
        if rows:
            shared = self.shared
            shared.totals.rescued += rows
            shared.metrics.rescued.labels(reason).inc(rows)
            shared.log.warning("leases_rescued", reason=reason, rows=rows, **extra)

    async def stop(self, holding: bool) -> None:
        """End the heartbeat; record a clean stop unless rows may still be leased (then the
        heartbeat rule, or the restart, rescues them within seconds)."""
        beating, self._beating = self._beating, None
        if beating is not None:
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating
        if not self.started or holding:
            return
        shared = self.shared
        with contextlib.suppress(StoreError):  # then another daemon finds it silent
            await shared.calls.settle(
                lambda: shared.store.daemon_stopped(self.daemon.owner, shared.clock())
            )
