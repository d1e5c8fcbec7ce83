"""The worker in-process: workers on a real store, sending to the fake TikTok over loopback."""

from __future__ import annotations

import random
from typing import Any

import aiohttp

from forwarder.backoff import BackoffPolicy
from forwarder.fake_tiktok import FakeTikTok
from forwarder.metrics import Metrics
from forwarder.pacing import Pacer
from forwarder.store.sqlite import SQLiteStore
from forwarder.tiktok.build import BuildOptions
from forwarder.tiktok.client import TikTokClient
from forwarder.tiktok.destination import Sender, TikTok
from forwarder.worker import Worker, WorkerConfig

from .waiting import ManualClock

#: The access token the fake TikTok expects, the worker and the daemon send.
TOKEN = "test-token"
#: The default pixel (TIKTOK_PIXEL_CODE) of the workers and daemons under test.
PIXEL = "D34FV3JC77U1PDQ72P1G"
#: A pixel a row names itself, which the token may not operate.
OTHER_PIXEL = "OTHERPIXEL77"

#: How the harness's workers build events unless a test says otherwise.
BUILD = BuildOptions(
    default_pixel=PIXEL,
    phone_region="US",
    consent_default="granted",
    max_age_s=7 * 86400,
    test_event_code=None,
)


class Harness:
    """Builds workers that share one store, sender and pacer, as one daemon would."""

    def __init__(
        self, store: SQLiteStore, fake: FakeTikTok, session: aiohttp.ClientSession
    ) -> None:
        self.store = store
        self.fake = fake
        self.session = session
        self.clock = ManualClock()
        self.metrics = Metrics()
        self.pacer = Pacer(
            max_limit=4,
            throttle_max_s=300,
            probe_max_s=60,
            retry_after_max_s=600,
            rng=random.Random(1),
        )
        self.timeout_s = 2.0

    def worker(self, *, drain: bool = True, **overrides: Any) -> Worker:
        build = overrides.pop("build", BUILD)
        max_bytes = overrides.pop("max_bytes", 1_000_000)
        options = {
            "backoff": BackoffPolicy(initial_s=1.0, cap_s=300.0, retry_after_cap_s=600.0),
            "poll_interval_s": 0.02,
            "lease_s": 60.0,
            "shutdown_grace_s": 5.0,
        }
        options.update(overrides)
        config = WorkerConfig(**options)
        sender = TikTokClient(self.session, self.fake.url, TOKEN, self.timeout_s)
        tiktok = TikTok(
            sender, build, max_events=config.max_events, max_bytes=max_bytes, clock=self.clock
        )
        return Worker(
            self.store,
            tiktok,
            config,
            self.pacer,
            self.metrics,
            owner="test",
            drain=drain,
            clock=self.clock,
            rng=random.Random(2),
        )

    async def drain(self, **overrides: Any) -> Any:
        return await self.worker(**overrides).run()


def daemon_worker(
    store: SQLiteStore,
    sender: Sender,
    owner: str,
    clock: ManualClock,
    *,
    drain: bool = True,
    **overrides: Any,
) -> Worker:
    """A daemon's worker: its own pacer, metrics and lease owner, on *clock*."""
    options: dict[str, Any] = {
        "backoff": BackoffPolicy(initial_s=1.0, cap_s=300.0, retry_after_cap_s=600.0),
        "poll_interval_s": 0.02,
        "lease_s": 60.0,
        "shutdown_grace_s": 5.0,
        "heartbeat_s": 0.05,
    }
    options.update(overrides)
    pacer = Pacer(
        max_limit=4, throttle_max_s=300, probe_max_s=60, retry_after_max_s=600, rng=random.Random(1)
    )
    return Worker(
        store,
        TikTok(sender, BUILD, clock=clock),
        WorkerConfig(**options),
        pacer,
        Metrics(),
        owner=owner,
        drain=drain,
        clock=clock,
        rng=random.Random(2),
    )
