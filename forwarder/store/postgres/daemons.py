"""The daemons' records on PostgreSQL: registration, heartbeats, and the rescue of the leases of
a daemon found dead. Their times come from the server's clock, not the daemons': daemons on
hosts whose clocks disagree still judge each other's heartbeats alike."""

from __future__ import annotations

from forwarder.store.base import Daemon, Silent
from forwarder.store.postgres.connection import SQL, PostgresConnection


class PostgresDaemons(PostgresConnection):
    """What the worker records about itself and reads about other daemons on PostgreSQL."""

    async def register_daemon(self, daemon: Daemon, now: float) -> None:
        """Upsert *daemon*'s record, running, its heartbeat the server's now."""
        await self._execute(
            "register the daemon",
            SQL["register_daemon"],
            daemon.owner,
            daemon.host,
            daemon.pid,
            daemon.boot_id,
            daemon.pid_ns,
        )

    async def heartbeat(self, owner: str, now: float) -> bool:
        """Record *owner*'s heartbeat at the server's now."""
        return await self._execute("record the heartbeat", SQL["heartbeat"], owner) == 1

    async def daemon_stopped(self, owner: str, now: float) -> None:
        """Mark *owner* stopped by itself."""
        await self._execute("record the stop", SQL["daemon_stopped"], owner)

    async def silent_daemons(self, me: str, now: float, silent_s: float) -> list[Silent]:
        """The silent daemons, by the server's clock."""
        rows = await self._fetch("read the heartbeats", SQL["silent_daemons"], me, silent_s)
        return [Silent(owner, float(silent)) for owner, silent in rows]

    async def daemons_here(self, me: Daemon) -> list[Daemon]:
        """The other running records of *me*'s boot and PID namespace."""
        if me.boot_id is None or me.pid_ns is None:
            return []
        rows = await self._fetch(
            "read the daemons", SQL["daemons_here"], me.owner, me.boot_id, me.pid_ns
        )
        return [Daemon(*row) for row in rows]

    async def rescue_owner(
        self, owner: str, rescuer: str, now: float, silent_s: float | None = None
    ) -> int:
        """Return *owner*'s rows to pending in one statement, then mark it found dead once it
        holds none (a row skipped while its owner settled it is taken at the next try)."""
        rows = await self._execute(
            "rescue a dead daemon's leases", SQL["rescue_owner"], owner, silent_s, now
        )
        await self._execute("mark a daemon dead", SQL["found_dead"], owner, silent_s, rescuer)
        return rows

    async def prune_daemons(self, now: float, silent_s: float) -> int:
        """Delete the records of daemons silent for longer than *silent_s*."""
        return await self._execute("prune daemons", SQL["prune_daemons"], silent_s)
