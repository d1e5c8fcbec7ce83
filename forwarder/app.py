"""The composition root: open the store and the HTTP session, build the worker, run it."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress

import aiohttp
import structlog
from aiohttp import web

from forwarder import startup
from forwarder.errors import ConfigError
from forwarder.metrics import Metrics
from forwarder.notify import Notifier, Progress, keepalive
from forwarder.pacing import Pacer
from forwarder.server import Health, serve
from forwarder.settings import Settings, read_token, store_options
from forwarder.store import open_store, redact_url
from forwarder.store.base import Store
from forwarder.tiktok.client import TikTokClient
from forwarder.tiktok.destination import TikTok
from forwarder.worker import STORE_RETRY_MAX_S, Totals, Worker

# After the worker's shutdown deadline (FORWARDER_SHUTDOWN_GRACE + worker.SHUTDOWN_FINISH_S), this
# long to close the HTTP server and the database; whatever is still blocked then is abandoned
# (the rows it holds are rescued by its restart or another daemon). With the default 10 s grace
# the daemon is gone 17 s after SIGTERM at the latest, inside the unit's TimeoutStopSec=30s.
SHUTDOWN_CLOSE_S = 2.0
CLOSE_MIN_S = 0.2  # the least time each close gets, even past the deadline


def lease_owner() -> str:
    """Name this process in the rows it leases: host, pid and a random tag."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@contextmanager
def on_stop(callback: Callable[[], None]) -> Iterator[None]:
    """Call *callback* on SIGTERM or SIGINT while the block runs, then restore the defaults.

    The handlers only ask the worker to stop: asyncio runs them on the loop, between steps, so
    the loop finishes its in-flight requests instead of being interrupted mid-write.
    """
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, callback)
    try:
        yield
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


class TokenReload:
    """Read the access token again on SIGHUP and hand it to the client: a live rotation.

    A token that cannot be read is logged (never shown) and the one in use is kept. A paused
    destination is probed at once, so a fixed token resumes delivery without waiting for the
    next probe.
    """

    def __init__(self, token: Callable[[], str], log: structlog.typing.FilteringBoundLogger):
        self._read = token
        self._log = log
        self.client: TikTokClient | None = None
        self.worker: Worker | None = None

    def __call__(self) -> None:
        """Reload now (a signal handler, run on the loop between steps)."""
        try:
            token = self._read()
        except ConfigError as error:
            self._log.error("token_reload_failed", error=str(error), note="keeping the old token")
            return
        changed = self.client.set_token(token) if self.client else False
        self._log.info("token_reloaded", changed=changed)
        if self.worker is not None:
            self.worker.probe_now()


@contextmanager
def on_signal(sig: signal.Signals, callback: Callable[[], None]) -> Iterator[None]:
    """Call *callback* on *sig* while the block runs, then restore the default action."""
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(sig, callback)
    try:
        yield
    finally:
        loop.remove_signal_handler(sig)


async def run(
    settings: Settings,
    *,
    once: bool = False,
    migrate: bool = True,
    token: Callable[[], str] = read_token,
) -> Totals:
    """Run the daemon: migrate, check the database, deliver until stopped.

    *token* reads the access token again when SIGHUP comes.
    """
    log = structlog.get_logger("forwarder")
    reload = TokenReload(token, log)
    # Installed first: from now on SIGHUP reloads the token instead of ending the process.
    with on_signal(signal.SIGHUP, reload):
        return await _run(settings, reload, once=once, migrate=migrate)


async def _run(settings: Settings, reload: TokenReload, *, once: bool, migrate: bool) -> Totals:
    log = structlog.get_logger("forwarder")
    checked = startup.validate(settings)
    notifier = Notifier.from_env()
    notifier.status("starting: migrating and checking the database")
    store = await open_store(settings.database_url, create=migrate, **store_options(settings))
    try:
        if migrate:
            applied = await store.migrate()
            if applied:
                log.info("migrated", applied=applied)
        await store.ping()
        # What this daemon talks to, in one line: the first thing to check when nothing arrives.
        log.info(
            "daemon_configured",
            api_url=settings.tiktok_api_url,
            database=redact_url(settings.database_url),
            pixel=settings.tiktok_pixel_code or None,
            token_source=checked.token.source,
            concurrency=settings.concurrency,
        )
        for warning in checked.warnings:
            log.warning("setting_warning", note=warning)
        return await _deliver(settings, checked, store, reload, notifier, once=once)
    finally:
        await _close(store.close(), reload.worker, "the database connection")
        notifier.close()


async def _deliver(
    settings: Settings,
    checked: startup.Startup,
    store: Store,
    reload: TokenReload,
    notifier: Notifier,
    *,
    once: bool,
) -> Totals:
    """Compose the worker over one HTTP session, serve /metrics and the health checks, run."""
    metrics = Metrics()
    pacer = Pacer(
        max_limit=settings.concurrency,
        throttle_max_s=settings.throttle_max_pause,
        probe_max_s=settings.pause_probe_max,
        retry_after_max_s=settings.retry_after_max,
        rng=random.Random(),
    )
    connector = aiohttp.TCPConnector(limit=settings.concurrency * 2)
    async with aiohttp.ClientSession(connector=connector) as session:
        sender = TikTokClient(
            session, settings.tiktok_api_url, checked.token.value, settings.request_timeout
        )
        tiktok = TikTok(
            sender,
            checked.build,
            max_events=settings.batch_max_events,
            max_bytes=settings.batch_max_bytes,
        )
        worker = Worker(
            store, tiktok, checked.worker, pacer, metrics, owner=lease_owner(), drain=once
        )
        reload.client, reload.worker = sender, worker
        health = Health(
            metrics,
            store,
            last_tick=lambda: worker.last_tick,
            paused_reason=lambda: _paused_text(worker, pacer),
            stale_after_s=max(30.0, 3 * settings.request_timeout),
            held_pixels=lambda: sorted(worker.holds.held),
        )
        # `run --once` serves nothing: it can run beside a daemon that holds the port.
        log = structlog.get_logger("forwarder")
        runner = None if once else await _serve(health, settings.http_addr, log)
        try:
            # Ready only now: migrated, the database answered, the HTTP server listens.
            notifier.ready(_status_line(worker, pacer))

            def stop() -> None:
                notifier.stopping("stopping: finishing in-flight requests")
                worker.stop()

            with on_stop(stop):
                async with _supervised(notifier, worker, pacer):
                    return await worker.run()
        finally:
            notifier.stopping("stopping")
            if runner is not None:
                await _close(runner.cleanup(), worker, "the HTTP server")


async def _close(closing: Awaitable[None], worker: Worker | None, what: str) -> None:
    """Await *closing*; once the worker has stopped, no later than its shutdown deadline plus
    SHUTDOWN_CLOSE_S."""
    deadline = worker.stop_deadline if worker is not None else None
    if deadline is None:
        await closing
        return
    try:
        within_s = max(CLOSE_MIN_S, deadline + SHUTDOWN_CLOSE_S - time.monotonic())
        await asyncio.wait_for(closing, within_s)
    except TimeoutError:
        structlog.get_logger("forwarder").warning(
            "shutdown_close_left",
            what=what,
            note="not closed by the shutdown deadline; rows still leased return to pending "
            "when the daemon starts again or another daemon finds it silent (5 s)",
        )


def _paused_text(worker: Worker, pacer: Pacer) -> str | None:
    """Why delivery is paused, for /readyz: the reason code and the message that caused it."""
    reason = pacer.paused_reason
    if reason is None or not worker.paused_message:
        return reason
    return f"{reason}: {worker.paused_message}"


def _status_line(worker: Worker, pacer: Pacer) -> str:
    """The one-line state `systemctl status` shows."""
    totals = worker.totals
    state = f"paused ({pacer.paused_reason})" if pacer.paused_reason else "delivering"
    return f"{state}: {totals.delivered} delivered, {totals.retried} retried, {totals.dead} dead"


@asynccontextmanager
async def _supervised(notifier: Notifier, worker: Worker, pacer: Pacer) -> AsyncIterator[None]:
    """Ping systemd's watchdog while the worker loop makes passes, for as long as the block runs."""
    # The loop passes at least every poll interval, or every STORE_RETRY_MAX_S while the
    # database fails; a loop silent for longer than that plus the watchdog timeout is hung.
    stale_after_s = (notifier.watchdog_s or 0.0) + STORE_RETRY_MAX_S
    progress = Progress(lambda: worker.last_tick, stale_after_s)
    task = asyncio.create_task(keepalive(notifier, progress, lambda: _status_line(worker, pacer)))
    try:
        yield
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


async def _serve(
    health: Health, addr: str, log: structlog.typing.FilteringBoundLogger
) -> web.AppRunner:
    try:
        runner = await serve(health, addr)
    except OSError as error:
        raise ConfigError(f"FORWARDER_HTTP_ADDR {addr}: cannot listen: {error.strerror}") from None
    # The address really bound: with port 0 the system picked a free one.
    bound = [_address(entry) for entry in runner.addresses]
    log.info("http_listening", addr=", ".join(bound), paths=["/metrics", "/healthz", "/readyz"])
    return runner


def _address(entry: object) -> str:
    """host:port of one listening socket address (an IPv6 host in brackets)."""
    if isinstance(entry, tuple) and len(entry) >= 2:
        host, port = str(entry[0]), entry[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(entry)
