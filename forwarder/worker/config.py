"""What the worker is given: its configuration; and what one run did."""

from __future__ import annotations

from dataclasses import dataclass

from forwarder import backoff


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """What the worker needs from the settings."""

    backoff: backoff.BackoffPolicy
    max_events: int = 1000  # rows per claim at most: fewer when fewer fill a request's bytes
    poll_interval_s: float = 0.2
    lease_s: float = 60.0
    heartbeat_s: float = 1.0  # how often the daemon records that it is alive
    # A daemon whose last heartbeat is older than this is dead: its rows return to pending.
    silent_after_s: float = 5.0
    shutdown_grace_s: float = 10.0
    unknown_code_max_attempts: int = 5
    unknown_code_min_delay_s: float = 60.0  # the floor of an unknown code's retry delay
    ambiguous_code_max_answers: int = 3
    storm_answers: int = 3  # failed answers in a row that pause delivery (the storm rule)
    retention_s: float = 7 * 86400.0
    scrub: bool = True  # replace a sent row's payload by what was sent (hashed identifiers)


@dataclass
class Totals:
    """What one run did, in events."""

    delivered: int = 0
    retried: int = 0
    dead: int = 0
    released: int = 0
    rescued: int = 0
    requests: int = 0
    paused_reason: str | None = None
