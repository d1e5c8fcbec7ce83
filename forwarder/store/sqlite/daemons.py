"""The daemons' records on SQLite: registration, heartbeats, and the rescue of the leases of a
daemon found dead. Every daemon on one file runs on one host, so times come from its clock."""

from __future__ import annotations

import sqlite3

from forwarder.store.base import Daemon, Silent
from forwarder.store.sqlite.connection import SQL
from forwarder.store.sqlite.outbox import SQLiteOutbox


class SQLiteDaemons(SQLiteOutbox):
    """What the worker records about itself and reads about other daemons on SQLite."""

    async def register_daemon(self, daemon: Daemon, now: float) -> None:
        """Upsert *daemon*'s record, running, its heartbeat *now*."""
        params = {
            "owner": daemon.owner,
            "host": daemon.host,
            "pid": daemon.pid,
            "boot_id": daemon.boot_id,
            "pid_ns": daemon.pid_ns,
            "now": now,
        }
        await self._write("register the daemon", lambda _: [(SQL["register_daemon"], params)])

    async def heartbeat(self, owner: str, now: float) -> bool:
        """Record *owner*'s heartbeat ahead of the writes waiting (it says the loop is alive)."""
        params = {"owner": owner, "now": now}
        changed = await self._call(
            "record the heartbeat",
            lambda conn: self._writer.write(conn, [(SQL["heartbeat"], params)]),
            urgent=True,
        )
        return changed == 1

    async def daemon_stopped(self, owner: str, now: float) -> None:
        """Mark *owner* stopped by itself."""
        params = {"owner": owner, "now": now}
        await self._write("record the stop", lambda _: [(SQL["daemon_stopped"], params)])

    async def silent_daemons(self, me: str, now: float, silent_s: float) -> list[Silent]:
        """Read on the reading connection: the check runs every second and finds none."""
        params = {"me": me, "now": now, "before": now - silent_s}
        rows = await self._read("read the heartbeats", SQL["silent_daemons"], params)
        return [Silent(owner, float(silent)) for owner, silent in rows]

    async def daemons_here(self, me: Daemon) -> list[Daemon]:
        """The other running records of *me*'s boot and PID namespace."""
        if me.boot_id is None or me.pid_ns is None:
            return []
        params = {"me": me.owner, "boot_id": me.boot_id, "pid_ns": me.pid_ns}
        rows = await self._read("read the daemons", SQL["daemons_here"], params)
        return [Daemon(*row) for row in rows]

    async def rescue_owner(
        self, owner: str, rescuer: str, now: float, silent_s: float | None = None
    ) -> int:
        """Return *owner*'s rows to pending a few hundred per transaction (each one checking
        its heartbeat again), then mark it found dead once it holds none."""
        before = None if silent_s is None else now - silent_s
        params = {"owner": owner, "rescuer": rescuer, "now": now, "before": before}

        def rescue(conn: sqlite3.Connection) -> int:
            rows = self._until_done(conn, SQL["rescue_owner"], params)
            self._writer.write(conn, [(SQL["found_dead"], params)])
            return rows

        return await self._call("rescue a dead daemon's leases", rescue)

    async def prune_daemons(self, now: float, silent_s: float) -> int:
        """Delete the records of daemons silent for longer than *silent_s*."""
        params = {"before": now - silent_s}
        return await self._write("prune daemons", lambda _: [(SQL["prune_daemons"], params)])
