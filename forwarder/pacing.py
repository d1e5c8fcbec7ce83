"""How fast the daemon may talk to TikTok right now: concurrency, throttling and pauses.

Pure state: the worker passes the time in and asks how many requests it may start. TikTok's
rate limit is per token (tiktok-events-api.md §3.4), so one Pacer governs every request.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from forwarder.backoff import Jitter, probe_interval_s, wait_s

THROTTLE_INITIAL_S = 1.0  # the first pause after a rate-limit answer
PROBE_INITIAL_S = 1.0  # the first probe after a credential failure
SUCCESSES_PER_STEP = 8  # accepted requests before the concurrency limit grows by one
STORM_PREFIX = "storm_"  # the pause reason of the storm rule: storm_49999, storm_http_503, ...


@dataclass
class Pacer:
    """Additive-increase, multiplicative-decrease concurrency with throttle and pause states.

    - A rate-limit answer halves the limit and holds every request back for a growing,
      jittered pause (a server's Retry-After wins, capped).
    - A credential answer pauses the destination: one probe request at a growing interval,
      capped, until TikTok accepts again.
    - Failed answers in a row (the storm rule, on_failure) pause it the same way: a failure
      that hits every request is TikTok's or the configuration's, not the events'.
    - Accepted answers clear both and grow the limit back, one step per few successes.
    """

    max_limit: int
    throttle_max_s: float
    probe_max_s: float
    retry_after_max_s: float
    rng: random.Random = field(default_factory=random.Random)
    limit: int = 0
    in_flight: int = 0
    throttled_until: float = 0.0
    throttle_streak: int = 0
    paused_reason: str | None = None
    paused_since: float = 0.0
    probe_at: float = 0.0
    probe_failures: int = 0
    successes: int = 0
    ambiguous_streak: int = 0
    failure_streak: int = 0

    def __post_init__(self) -> None:
        self.limit = self.limit or self.max_limit

    @property
    def paused(self) -> bool:
        """Whether credentials or configuration stopped delivery."""
        return self.paused_reason is not None

    def slots(self, now: float) -> int:
        """How many more requests may start now (a paused destination allows one probe)."""
        if now < self.throttled_until:
            return 0
        if self.paused:
            return 1 if now >= self.probe_at and self.in_flight == 0 else 0
        return max(0, self.limit - self.in_flight)

    def resume_at(self, now: float) -> float:
        """When held-back events become due again."""
        if self.paused:
            return max(now, self.probe_at, self.throttled_until)
        return max(now, self.throttled_until)

    def started(self) -> None:
        """Count a request in flight."""
        self.in_flight += 1

    def finished(self) -> None:
        """Count a request done, whatever its answer."""
        self.in_flight = max(0, self.in_flight - 1)

    def on_accepted(self) -> bool:
        """Record an accepted request; return True if it ended a pause."""
        resumed = self.paused
        self.paused_reason, self.probe_failures = None, 0
        self.throttle_streak = self.ambiguous_streak = self.failure_streak = 0
        self.successes += 1
        if self.successes >= SUCCESSES_PER_STEP and self.limit < self.max_limit:
            self.limit += 1
            self.successes = 0
        return resumed

    def on_throttle(self, now: float, retry_after_s: float | None) -> float:
        """Record a rate-limit answer; return when requests may start again."""
        self.throttle_streak += 1
        self.successes = 0
        self.limit = max(1, self.limit // 2)
        pause = wait_s(
            self.throttle_streak,
            THROTTLE_INITIAL_S,
            self.throttle_max_s,
            jitter=Jitter.HALF,
            rng=self.rng,
            server_s=retry_after_s,
            server_cap_s=self.retry_after_max_s,
        )
        self.throttled_until = max(self.throttled_until, now + pause)
        return self.throttled_until

    def on_pause(self, now: float, reason: str) -> float:
        """Record a credential or configuration failure; return the next probe time."""
        if not self.paused:
            self.paused_since = now
        self.paused_reason = reason
        self.probe_failures += 1
        self.probe_at = now + probe_interval_s(
            self.probe_failures, PROBE_INITIAL_S, self.probe_max_s
        )
        return self.probe_at

    def on_ambiguous(self, now: float, code: str, max_answers: int) -> bool:
        """Record a 40101/40102 answer; after *max_answers* in a row, pause and return True."""
        self.ambiguous_streak += 1
        if self.ambiguous_streak < max_answers:
            return False
        self.on_pause(now, f"ambiguous_{code}")
        return True

    def on_failure(
        self, now: float, code: str, max_answers: int, retry_after_s: float | None = None
    ) -> bool:
        """Record a failed answer that is retried; return True if it pauses delivery.

        The storm rule: *max_answers* failed answers in a row, whatever their codes (TikTok's
        body codes, HTTP statuses, timeouts, connection failures), with no request accepted in
        between, pause the destination as ``storm_<code>`` (the latest code). While paused, a
        failed answer (a probe, or a request sent before the pause) keeps the pause going and
        pushes the next probe back, no sooner than a Retry-After asks (capped); only an
        accepted request ends it. Rate limits, pauses and rejections are not counted: they have
        their own handling.
        """
        self.failure_streak += 1
        if self.failure_streak >= max_answers:
            self.on_pause(now, STORM_PREFIX + code)
        elif self.paused_reason is not None:
            self.on_pause(now, self.paused_reason)
        else:
            return False
        if retry_after_s:
            self.probe_at = max(self.probe_at, now + min(retry_after_s, self.retry_after_max_s))
        return True

    def wait_s(self, now: float, idle_s: float) -> float:
        """How long the loop may sleep before the pacer could allow a request."""
        until = self.throttled_until
        if self.paused:
            until = max(until, self.probe_at)
        return max(0.0, min(idle_s, until - now)) if until > now else idle_s
