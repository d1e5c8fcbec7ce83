"""Every Prometheus metric the daemon exports, defined once, on the daemon's own registry."""

from __future__ import annotations

import math
import threading
from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import HistogramMetricFamily, Metric

from forwarder import __version__
from forwarder.pacing import STORM_PREFIX
from forwarder.tiktok import spec
from forwarder.tiktok.classify import CODE_VERDICTS, code_verdict

#: tiktok-events-api.md §8.1 and §8.3, plus the legacy names TikTok still accepts (§8.2).
#: Any other event name is counted as ``custom``: labels come only from closed sets.
STANDARD_EVENTS = frozenset(
    (*spec.WEB_EVENTS, *spec.APP_EVENTS, *spec.RENAMED_EVENTS, *spec.SUNSET_EVENTS)
)

#: Codes reported as their own label value; any other is ``other``: every exact code of the
#: classification table (a closed set), plus our names for answers without one.
KNOWN_CODES = frozenset(
    [
        *(str(code) for code in CODE_VERDICTS),
        "timeout",
        "connection",
        "bad_body",
        "http_301",
        "http_302",
        "http_303",
        "http_307",
        "http_308",
        "http_408",
        "http_401",
        "http_403",
        "http_404",
        "http_413",
        "http_429",
        "http_500",
        "http_502",
        "http_503",
        "http_504",
    ]
)

MATCH_KEYS = ("email", "phone", "external_id", "ttclid", "ttp", "ip", "user_agent")

#: Reasons an event is dead-lettered (payload's malformed/too_old, the worker's oversize,
#: rejected, unknown_code), exported at 0 from the start so rate() and increase() in the alert
#: rules see the first dead letter after a restart too.
DEAD_REASONS = ("malformed", "too_old", "oversize", "rejected", "unknown_code")
#: Why a dead daemon's leases were rescued: its heartbeat stopped, its restart found its process
#: gone, or the lease expired (the last resort).
RESCUE_REASONS = ("heartbeat", "restart", "lease")


def event_label(name: str) -> str:
    """Return *name* if it is a standard TikTok event, else ``custom``."""
    return name if name in STANDARD_EVENTS else "custom"


def code_label(code: str) -> str:
    """Return *code* if it is in the bounded set, else ``other``."""
    return code if code in KNOWN_CODES else "other"


def pause_label(reason: str) -> str:
    """Return the ``forwarder_destination_paused`` label of a pause reason: a closed set.

    Reasons other than the storm rule's come from the classification table. A storm's code is
    TikTok's to choose: ``storm_<code>`` for a known label, ``storm_unknown`` for a body code
    the table does not know, ``storm_other`` for any other (a 51xxx code, an HTTP 501).
    """
    code = reason.removeprefix(STORM_PREFIX)
    if code == reason or code in KNOWN_CODES:
        return reason
    try:
        unknown = code_verdict(int(code)) is None
    except ValueError:  # http_501, say: our name for an answer without a body code
        unknown = False
    return STORM_PREFIX + ("unknown" if unknown else "other")


class BatchHistogram:
    """A histogram fed a request's worth of values at once, exported as a Histogram is.

    prometheus_client's Histogram takes one value per call, under a lock each time: for the
    latencies of a thousand events per request that cost a few percent of a drain's CPU. This
    counts a batch per bucket first (the first bucket whose bound is at least the value, as
    Histogram does) and is read through the registry's public collector interface.
    """

    def __init__(
        self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry
    ) -> None:
        self.name = name
        self.documentation = documentation
        self._bounds = (*(float(bound) for bound in buckets), math.inf)
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, values: Iterable[float]) -> None:
        """Count each of *values* (a negative one as 0)."""
        clamped = [value if value > 0.0 else 0.0 for value in values]
        counts = Tally([bisect_left(self._bounds, value) for value in clamped])
        with self._lock:
            self._sum += sum(clamped)
            for index, count in counts.items():
                self._counts[index] += count

    def collect(self) -> Iterator[Metric]:
        """The histogram as Prometheus reads it: cumulative buckets, the sum."""
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative, buckets = 0, []
        for bound, count in zip(self._bounds, counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if math.isinf(bound) else repr(bound), cumulative))
        yield HistogramMetricFamily(self.name, self.documentation, buckets=buckets, sum_value=total)


class Metrics:
    """The daemon's metrics; a fresh instance (and registry) per daemon or test."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._events(self.registry)
        self._requests(self.registry)
        self._state(self.registry)
        self.build = Info(
            "forwarder_build", "Version of the running daemon.", registry=self.registry
        )
        self.build.info({"version": __version__})

    def _events(self, r: CollectorRegistry) -> None:
        """What happened to events: delivered, retried, dead, their match keys and latency."""
        self.delivered = Counter(
            "forwarder_events_delivered", "Events TikTok accepted.", ["event"], registry=r
        )
        self.retried = Counter(
            "forwarder_events_retried",
            "Events put back to pending for a later attempt, by reason.",
            ["reason"],
            registry=r,
        )
        self.dead = Counter(
            "forwarder_events_dead", "Events dead-lettered, by reason.", ["reason"], registry=r
        )
        self.match_keys = Counter(
            "forwarder_match_keys",
            "Delivered events carrying each match key.",
            ["key"],
            registry=r,
        )
        self.latency_seconds = BatchHistogram(
            "forwarder_delivery_latency_seconds",
            "Time from the row's insert to TikTok accepting it.",
            (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 86400),
            r,
        )
        self.rescued = Counter(
            "forwarder_leases_rescued",
            "Leased rows returned to pending, by reason: heartbeat, restart or lease.",
            ["reason"],
            registry=r,
        )
        self.converted_dropped = Counter(
            "forwarder_converted_fields_dropped",
            "Delivered converted events (payload_format meta_capi) sent without a Meta field, "
            "by field: Meta's own ids, ph (a phone Meta hashed), other.",
            ["field"],
            registry=r,
        )
        # Every value of the closed label sets is exported from the start, at 0.
        for key in MATCH_KEYS:
            self.match_keys.labels(key)
        for reason in DEAD_REASONS:
            self.dead.labels(reason)
        for reason in RESCUE_REASONS:
            self.rescued.labels(reason)

    def _requests(self, r: CollectorRegistry) -> None:
        """The requests: TikTok's answers, their duration and size, how many are in flight."""
        self.responses = Counter(
            "forwarder_tiktok_responses",
            "Answers to requests, by TikTok code (bounded) and verdict.",
            ["code", "outcome"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "forwarder_request_duration_seconds",
            "Time from sending a request to TikTok's answer.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.batch_events = Histogram(
            "forwarder_batch_size_events",
            "Events per request.",
            buckets=(1, 5, 10, 50, 100, 250, 500, 1000),
            registry=r,
        )
        self.in_flight = Gauge(
            "forwarder_requests_in_flight", "Requests waiting for TikTok.", registry=r
        )
        self.concurrency_limit = Gauge(
            "forwarder_concurrency_limit", "Requests allowed in flight now.", registry=r
        )

    def _state(self, r: CollectorRegistry) -> None:
        """The outbox and the destination now: rows by status, the oldest, pauses and holds."""
        self.outbox = Gauge(
            "forwarder_outbox_events", "Rows in the outbox, by status.", ["status"], registry=r
        )
        self.oldest_pending = Gauge(
            "forwarder_oldest_pending_age_seconds",
            "Age of the oldest pending event (0 when none).",
            registry=r,
        )
        self.paused = Gauge(
            "forwarder_destination_paused",
            "1 while delivery is paused, by reason.",
            ["reason"],
            registry=r,
        )
        self.pixels_held = Gauge(
            "forwarder_pixels_held",
            "Pixels named by rows whose delivery is held back: TikTok refused the pixel "
            "(40001) while the default pixel flows.",
            registry=r,
        )

    def observe_latencies(self, seconds: list[float]) -> None:
        """Record the insert-to-accepted latency of a request's events."""
        self.latency_seconds.observe_many(seconds)
