"""The one backoff formula every wait uses, and its named uses; pure.

``wait_s`` is the formula: the ceiling ``min(cap, initial * 2**(step - 1))``, jittered (none,
half or full), at least a floor and at least a server-given delay (capped). Retried events,
throttle pauses, probes of a paused destination or pixel, a failing database and a failing
settle all wait through it, each with its own initial value, cap and jitter.
"""

from __future__ import annotations

import enum
import math
import random
from dataclasses import dataclass

#: 2.0 ** 1023 is the largest finite power of two; beyond it every ceiling is the cap anyway.
_MAX_EXPONENT = 1023


class Jitter(enum.Enum):
    """How a wait is spread below its ceiling."""

    #: Exactly the ceiling: one waiter at a time (a probe, the loop retrying its database).
    NONE = "none"
    #: Uniform in [ceiling / 2, ceiling]: every request waits, but not in lock-step.
    HALF = "half"
    #: Uniform in [0, ceiling]: spreads the retries of one failed batch the most.
    FULL = "full"


def _check_positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive, finite number of seconds, not {value!r}")


def wait_s(
    step: int,
    initial_s: float,
    cap_s: float,
    *,
    jitter: Jitter = Jitter.NONE,
    rng: random.Random | None = None,
    server_s: float | None = None,
    server_cap_s: float = math.inf,
) -> float:
    """Return the wait before try *step* + 1 (*step* counts failures, from 1).

    The ceiling is ``min(cap_s, initial_s * 2**(step - 1))``; a step below 1 counts as 1 and a
    cap below *initial_s* wins. Jittered waits make one draw from *rng* whatever the inputs, so
    seeded runs stay reproducible. A positive *server_s* (a Retry-After) is a floor, capped at
    *server_cap_s* so a hostile or broken header cannot park events for days.
    """
    _check_positive("initial_s", initial_s)
    _check_positive("cap_s", cap_s)
    ceiling = min(cap_s, initial_s * 2.0 ** min(max(step - 1, 0), _MAX_EXPONENT))
    if jitter is Jitter.NONE:
        wait = ceiling
    else:
        if rng is None:
            raise ValueError("a jittered wait needs a random generator")
        wait = rng.uniform(ceiling / 2 if jitter is Jitter.HALF else 0.0, ceiling)
    if server_s is not None and server_s > 0:  # NaN compares False: ignored
        wait = max(wait, min(server_s, server_cap_s))
    return wait


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
    """A retried event's delay: full jitter below the ceiling; a Retry-After wins (capped).

    *attempt* is 1 for the first retry (tiktok-events-api.md §3.4: a QPM limit wants minutes,
    which a Retry-After says).
    """
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, not {attempt}")
    return wait_s(
        attempt,
        policy.initial_s,
        policy.cap_s,
        jitter=Jitter.FULL,
        rng=rng,
        server_s=retry_after_s,
        server_cap_s=policy.retry_after_cap_s,
    )


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


def probe_interval_s(consecutive_failures: int, initial_s: float, cap_s: float) -> float:
    """The wait before the next probe of a paused destination or a held pixel: no jitter, as
    only one probe is ever in flight."""
    return wait_s(consecutive_failures, initial_s, cap_s)
