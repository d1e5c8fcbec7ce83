"""Retry delays: capped exponential backoff with full jitter, and the pause-probe interval; pure."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

#: 2.0 ** 1023 is the largest finite power of two; beyond it every ceiling is the cap anyway.
_MAX_EXPONENT = 1023


def _check_positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive, finite number of seconds, not {value!r}")


def _ceiling(steps: int, initial_s: float, cap_s: float) -> float:
    """Return min(cap_s, initial_s * 2**steps) without overflowing for huge *steps*."""
    return min(cap_s, initial_s * 2.0 ** min(max(steps, 0), _MAX_EXPONENT))


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """How long a failed event waits before its next attempt."""

    initial_s: float = 1.0  # the first retry's ceiling
    cap_s: float = 300.0  # the largest computed delay
    retry_after_cap_s: float = 600.0  # the largest server-given delay honoured

    def __post_init__(self) -> None:
        _check_positive("initial_s", self.initial_s)
        _check_positive("cap_s", self.cap_s)
        _check_positive("retry_after_cap_s", self.retry_after_cap_s)
        if self.cap_s < self.initial_s:
            raise ValueError(
                f"cap_s ({self.cap_s}) must not be smaller than initial_s ({self.initial_s})"
            )


def delay_s(
    attempt: int, policy: BackoffPolicy, rng: random.Random, retry_after_s: float | None = None
) -> float:
    """Capped exponential backoff with full jitter; a server-given delay wins (capped).

    *attempt* is 1 for the first retry. The ceiling is ``min(cap, initial * 2**(attempt-1))`` and
    the delay is uniform in [0, ceiling] (full jitter spreads retries of one failed batch). A
    positive *retry_after_s* (tiktok-events-api.md §3.4: S10 waits minutes after a QPM limit) is
    a floor, capped at ``retry_after_cap_s`` so a hostile or broken header cannot park events
    for days. One random draw is made whatever the inputs, so seeded runs stay reproducible.
    """
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, not {attempt}")
    ceiling = _ceiling(attempt - 1, policy.initial_s, policy.cap_s)
    jittered = rng.uniform(0.0, ceiling)
    if retry_after_s is not None and retry_after_s > 0:  # NaN compares False: ignored
        return max(jittered, min(retry_after_s, policy.retry_after_cap_s))
    return jittered


def probe_interval_s(consecutive_failures: int, initial_s: float, cap_s: float) -> float:
    """Return the wait before the next probe of a paused destination: doubling per failure, capped.

    One failure waits *initial_s*, two wait twice that, and so on up to *cap_s*. No jitter: only
    one probe is ever in flight. A count below 1 counts as 1, and a cap below *initial_s* wins
    (the settings bound the cap, not the pacer's initial interval), so a running worker never
    raises here; only a non-positive or non-finite interval is refused.
    """
    _check_positive("initial_s", initial_s)
    _check_positive("cap_s", cap_s)
    return _ceiling(consecutive_failures - 1, initial_s, cap_s)


def floored_delay_s(
    attempt: int,
    policy: BackoffPolicy,
    rng: random.Random,
    retry_after_s: float | None,
    floor_s: float,
) -> float:
    """delay_s, but never less than a floor drawn uniformly from [floor_s, 2 * floor_s].

    For answers forwarder does not know (FORWARDER_UNKNOWN_CODE_MIN_DELAY): their last retries
    are spread over minutes, so the attempts before a dead letter cannot all fit in a short
    burst of failures, and the rows of one failed request come due apart, in new batches.
    """
    _check_positive("floor_s", floor_s)
    delay = delay_s(attempt, policy, rng, retry_after_s)
    return max(delay, rng.uniform(floor_s, 2.0 * floor_s))
