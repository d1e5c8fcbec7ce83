"""LISTEN/NOTIFY: how a PostgreSQL store hears of inserted rows and wakes the worker.

An insert trigger NOTIFYs ``tiktok_outbox``; the store LISTENs on a connection of its own and
sets ``new_rows``, and the worker polls as well, so a lost notification only costs a poll
interval. ``poll_only`` skips LISTEN, for PgBouncer's transaction pooling.
"""

from __future__ import annotations

import time
from typing import Any

import asyncpg

from forwarder.store.postgres.connection import (
    ERRORS,
    SQL,
    PostgresConnection,
    server_settings,
)

#: The channel the insert trigger of migrations/postgresql/0001_outbox.sql notifies.
CHANNEL = "tiktok_outbox"
LISTEN_CHECK_S = 30.0  # how often an idle LISTEN connection is checked for a silent break
LISTEN_CHECK_TIMEOUT_S = 5.0


class PostgresListen(PostgresConnection):
    """The LISTEN connection of a PostgreSQL store, (re)opened before each claim."""

    async def _listen(self) -> None:
        """Make sure a live connection LISTENs, (re)opening it if needed.

        LISTEN is in place before the claim that follows reads the table, so a row inserted in
        between is either claimed or announced: no wake-up is lost.
        """
        if self.poll_only or self._closed:
            return
        async with self._listen_lock:
            conn = self._listener
            if conn is not None and not conn.is_closed():
                if time.monotonic() - self._listen_checked < LISTEN_CHECK_S:
                    return
                try:  # an idle connection can die silently (a dropped NAT entry, a failover)
                    await conn.fetchval(SQL["check_connection"], timeout=LISTEN_CHECK_TIMEOUT_S)
                    self._listen_checked = time.monotonic()
                    return
                except ERRORS:
                    conn.terminate()
            self._listener = None
            try:
                conn = await asyncpg.connect(
                    self._url,
                    timeout=self._connect_timeout_s,
                    command_timeout=self._command_timeout_s,
                    server_settings=server_settings(self._url),
                )
            except ERRORS as error:
                raise await self._fail("open the LISTEN connection", error) from None
            try:
                await conn.add_listener(CHANNEL, self._notified)
            except ERRORS as error:
                conn.terminate()
                raise await self._fail(f"LISTEN {CHANNEL}", error) from None
            conn.add_termination_listener(self._listener_lost)
            self._listener = conn
            self._listen_checked = time.monotonic()
            self._log.info("postgres_listening", channel=CHANNEL, reconnected=self._listened_before)
            self._listened_before = True

    def _notified(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        """Wake the worker: the insert trigger (or a replay) announced rows."""
        self.new_rows.set()

    def _listener_lost(self, conn: Any) -> None:
        """Forget a LISTEN connection that broke, and wake the worker to open another."""
        if conn is not self._listener or self._closed:
            return
        self._listener = None
        self._log.warning("postgres_listen_lost", note="reconnecting on the next claim")
        # Wake the worker: its next claim reopens the connection, or reports why it cannot.
        self.new_rows.set()
