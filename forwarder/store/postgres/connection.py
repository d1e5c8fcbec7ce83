"""The PostgreSQL pool and the store's use of it: opening it, turning database and network errors
into StoreErrors without a password or row contents, migration, and closing."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, Self
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

import asyncpg
import structlog

from forwarder import migrate
from forwarder.errors import ConfigError, MigrationError, StoreError
from forwarder.store import queries

SQL = queries.load("forwarder.store.postgres")

#: pg_advisory_xact_lock key serialising `migrate` across daemons ("forwardr" in ASCII).
MIGRATION_LOCK = 0x666F7277_61726472
MIGRATE_TIMEOUT_S = 600.0  # a daemon waits this long for another one's migration
CLOSE_TIMEOUT_S = 5.0  # how long close() waits for a connection before terminating it

#: What a broken connection, an unreachable server or a failing statement raise.
ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    # Raised by a connection caught mid-operation by a server shutdown ("cannot switch to
    # state ..."): the connection is unusable, like a closed one.
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)


def redact_url(url: str) -> str:
    """*url* with its password replaced by ``***`` (for messages and logs)."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        userinfo, at, host = netloc.rpartition("@")
        if at and ":" in userinfo:
            netloc = f"{userinfo.split(':', 1)[0]}:***@{host}"
        query = "&".join(
            f"{key}={'***' if key == 'password' else quote(value, safe='')}"
            for key, value in parse_qsl(parts.query, keep_blank_values=True)
        )
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return "postgresql://(unparsable URL)"


def _secrets(url: str) -> list[str]:
    """The password of *url*, as written and decoded, wherever it is given."""
    found: list[str] = []
    try:
        parts = urlsplit(url)
        userinfo, at, _ = parts.netloc.rpartition("@")
        if at and ":" in userinfo:
            found.append(userinfo.split(":", 1)[1])
        found += [value for key, value in parse_qsl(parts.query) if key == "password"]
    except ValueError:
        pass
    found += [unquote(secret) for secret in found]
    return sorted({secret for secret in found if secret}, key=len, reverse=True)


def _describe(error: BaseException) -> str:
    """A one-line account of *error*: its class, SQLSTATE and the server's message.

    Only the primary message is used, never the DETAIL field, which may quote row values.
    """
    if isinstance(error, TimeoutError):
        return "timed out"
    text = str(error).strip() or type(error).__name__
    sqlstate = getattr(error, "sqlstate", None)
    if sqlstate:
        return f"{text} (SQLSTATE {sqlstate})"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return text


def _connection_broke(error: BaseException) -> bool:
    """Whether *error* means the connection (or the server) is gone, not the statement."""
    if isinstance(error, asyncpg.PostgresError):
        # Class 08: connection exception; 57: operator intervention (shutdown, restart).
        return str(getattr(error, "sqlstate", "") or "")[:2] in ("08", "57")
    return True


def _count(status: str) -> int:
    """The row count of a command status such as ``UPDATE 3`` or ``DELETE 0``."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


class PostgresConnection:
    """The store's connections to PostgreSQL: a small asyncpg pool plus one LISTEN connection
    (opened by the listen module's part of the store)."""

    def __init__(
        self,
        url: str,
        pool: Any,
        *,
        poll_only: bool = False,
        connect_timeout_s: float = 10.0,
        command_timeout_s: float = 30.0,
    ) -> None:
        self._url = url
        self._pool = pool
        self.poll_only = poll_only
        self._connect_timeout_s = connect_timeout_s
        self._command_timeout_s = command_timeout_s
        self._secrets = _secrets(url)
        self._listener: Any = None
        self._listen_lock = asyncio.Lock()
        self._listen_checked = 0.0
        self._listened_before = False
        self._closed = False
        self._log = structlog.get_logger("forwarder.store")
        #: Set when the trigger's NOTIFY arrives (never with poll_only): a row was inserted.
        self.new_rows = asyncio.Event()

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        poll_only: bool = False,
        pool_size: int = 4,
        connect_timeout_s: float = 10.0,
        command_timeout_s: float = 30.0,
    ) -> Self:
        """Connect a pool to *url*; the schema is made by migrate().

        *poll_only* (PgBouncer in transaction mode): no LISTEN, and no named prepared
        statements, which such a pooler cannot keep across transactions.
        """
        secrets = _secrets(url)
        try:
            # min_size 0: no background task retrying (and logging) while the server is down;
            # connections open on demand and stay open while in use.
            pool = await asyncpg.create_pool(
                dsn=url,
                min_size=0,
                max_size=pool_size,
                timeout=connect_timeout_s,
                command_timeout=command_timeout_s,
                statement_cache_size=0 if poll_only else 100,
                server_settings=server_settings(url),
            )
            try:
                async with pool.acquire(timeout=connect_timeout_s):
                    pass  # fail now, with one clear line, if the server cannot be reached
            except BaseException:
                pool.terminate()
                raise
        except ValueError as error:  # asyncpg's ClientConfigurationError is one too
            detail = _redact(str(error), secrets)
            message = f"FORWARDER_DATABASE_URL is not a valid PostgreSQL URL: {detail}"
            raise ConfigError(message) from None
        except ERRORS as error:
            detail = _redact(_describe(error), secrets)
            message = f"cannot connect to PostgreSQL at {redact_url(url)}: {detail}"
            raise StoreError(message) from None
        return cls(
            url,
            pool,
            poll_only=poll_only,
            connect_timeout_s=connect_timeout_s,
            command_timeout_s=command_timeout_s,
        )

    async def _fail(
        self, action: str, error: BaseException, kind: type[StoreError] = StoreError
    ) -> StoreError:
        """A StoreError saying what failed, with no password and no row contents in it."""
        if _connection_broke(error):
            # Every pooled connection may be as dead as this one (a server restart): replace
            # them all on their next use rather than failing once per connection.
            await self._pool.expire_connections()
        return kind(f"PostgreSQL failed to {action}: {_redact(_describe(error), self._secrets)}")

    @contextlib.asynccontextmanager
    async def _connection(
        self, action: str, kind: type[StoreError] = StoreError
    ) -> AsyncIterator[Any]:
        """A pooled connection; database and network errors become *kind* (a StoreError)."""
        try:
            async with self._pool.acquire(timeout=self._command_timeout_s) as conn:
                yield conn
        except ERRORS as error:
            raise await self._fail(action, error, kind) from None

    async def _execute(self, action: str, sql: str, *args: Any) -> int:
        """Run *sql* on a pooled connection; return the rows it changed."""
        async with self._connection(action) as conn:
            return _count(await conn.execute(sql, *args))

    async def _fetch(self, action: str, sql: str, *args: Any) -> list[Any]:
        """The rows *sql* gives on a pooled connection."""
        async with self._connection(action) as conn:
            return list(await conn.fetch(sql, *args))

    async def _fetchrow(self, action: str, sql: str, *args: Any) -> Any:
        """The first row *sql* gives on a pooled connection (None if none)."""
        async with self._connection(action) as conn:
            return await conn.fetchrow(sql, *args)

    async def migrate(self) -> list[str]:
        """Apply pending migrations in one transaction under an advisory lock.

        The lock serialises daemons starting at once: the second waits for the first to commit,
        then finds nothing to do. A failure rolls everything back.
        """
        applied: list[str] = []
        migrations = migrate.load("postgresql")
        async with (
            self._connection("migrate the database", MigrationError) as conn,
            conn.transaction(),
        ):
            await conn.execute(SQL["migration_lock"], MIGRATION_LOCK, timeout=MIGRATE_TIMEOUT_S)
            await conn.execute(SQL["migrations_table"])
            done = {r[0] for r in await conn.fetch(SQL["applied_migrations"])}
            for migration in migrations:
                if migration.name in done:
                    continue
                # No arguments: the simple query protocol runs a whole file of statements.
                await conn.execute(migration.sql, timeout=MIGRATE_TIMEOUT_S)
                await conn.execute(SQL["record_migration"], migration.name, time.time())
                applied.append(migration.name)
        return applied

    async def ping(self) -> None:
        """Check that the outbox table answers."""
        await self._fetch("reach the outbox table", SQL["ping"])

    async def close(self) -> None:
        """Close the LISTEN connection and the pool (waiting briefly for calls in progress)."""
        self._closed = True
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                await asyncio.wait_for(listener.close(), CLOSE_TIMEOUT_S)
            except ERRORS:
                listener.terminate()
        try:
            await asyncio.wait_for(self._pool.close(), CLOSE_TIMEOUT_S)
        except ERRORS:
            self._pool.terminate()


def server_settings(url: str) -> dict[str, str]:
    """Name the daemon in pg_stat_activity unless the URL names it already."""
    return {} if "application_name" in url else {"application_name": "forwarder"}


#: A password at least this long is starred wherever it shows; a shorter one would star
#: innocent text ("1" in "127.0.0.1") and so give itself away: such a detail is withheld.
REDACT_MIN_CHARS = 8


def _redact(detail: str, secrets: Sequence[str]) -> str:
    """*detail* (an error's text, never a URL) without the password in it."""
    for secret in secrets:
        if secret not in detail:
            continue
        if len(secret) < REDACT_MIN_CHARS:
            return "details withheld: they contain the password's text"
        detail = detail.replace(secret, "***")
    return detail
