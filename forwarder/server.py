"""The daemon's HTTP endpoint: /metrics, /healthz and /readyz (loopback by default)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from forwarder.errors import StoreError
from forwarder.metrics import Metrics
from forwarder.store.base import OutboxStore

GAUGE_REFRESH_S = 10.0  # how stale the outbox gauges may be when scraped
# A request still being answered at shutdown (a scrape waiting for a blocked database) is cut
# after this, so it cannot hold up the stop.
SHUTDOWN_TIMEOUT_S = 1.0


class Health:
    """Answers the three endpoints from the worker's and the store's state."""

    def __init__(
        self,
        metrics: Metrics,
        store: OutboxStore,
        last_tick: Callable[[], float],
        paused_reason: Callable[[], str | None],
        stale_after_s: float,
        clock: Callable[[], float] = time.time,
        held_pixels: Callable[[], list[str]] = list,
    ) -> None:
        self.metrics = metrics
        self.store = store
        self.last_tick = last_tick
        self.paused_reason = paused_reason
        self.stale_after_s = stale_after_s
        self.clock = clock
        self.held_pixels = held_pixels
        self._refreshed = 0.0

    async def refresh_gauges(self) -> None:
        """Read the outbox counts and lag into their gauges, at most every few seconds."""
        now = self.clock()
        if now - self._refreshed < GAUGE_REFRESH_S:
            return
        self._refreshed = now
        summary = await self.store.summary(now)
        for status, count in summary.counts.items():
            self.metrics.outbox.labels(status).set(count)
        self.metrics.oldest_pending.set(summary.oldest_pending_age_s or 0.0)

    async def metrics_view(self, request: web.Request) -> web.Response:
        """Prometheus text exposition of the daemon's own registry."""
        # /readyz reports a failing database; the counters are still worth scraping.
        with contextlib.suppress(StoreError):
            await self.refresh_gauges()
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(self, request: web.Request) -> web.Response:
        """200 while the loop ticked recently, else 503."""
        age = self.clock() - self.last_tick()
        ok = age <= self.stale_after_s
        return web.json_response(
            {"ok": ok, "last_tick_age_s": round(age, 3)}, status=200 if ok else 503
        )

    async def readyz(self, request: web.Request) -> web.Response:
        """200 when the database answers and the destination is not paused, else 503.

        Pixels held back (a row's own pixel TikTok refuses) leave the daemon ready: the
        default pixel flows. They are listed, and counted by forwarder_pixels_held.
        """
        try:
            await self.store.ping()
        except StoreError as error:
            return web.json_response({"ready": False, "reason": f"database: {error}"}, status=503)
        paused = self.paused_reason()
        if paused:
            return web.json_response(
                {"ready": False, "reason": f"destination paused: {paused}"}, status=503
            )
        return web.json_response({"ready": True, "held_pixels": self.held_pixels()})

    def app(self) -> web.Application:
        """The aiohttp application serving the three routes."""
        application = web.Application()
        application.router.add_get("/metrics", self.metrics_view)
        application.router.add_get("/healthz", self.healthz)
        application.router.add_get("/readyz", self.readyz)
        return application


async def serve(health: Health, addr: str) -> web.AppRunner:
    """Start serving on *addr* (host:port); the caller cleans the runner up."""
    host, _, port = addr.rpartition(":")
    runner = web.AppRunner(health.app(), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    site = web.TCPSite(runner, host.strip("[]"), int(port))
    await site.start()
    return runner
