"""Tests for forwarder.backoff: jittered exponential retry delays and the probe interval."""

from __future__ import annotations

import math
import random

import pytest

from forwarder.backoff import BackoffPolicy, delay_s, floored_delay_s, probe_interval_s


class MaxRandom(random.Random):
    """A Random whose uniform(a, b) always returns b: exposes the ceiling."""

    def uniform(self, a: float, b: float) -> float:
        """Return the upper bound."""
        return b


class ZeroRandom(random.Random):
    """A Random whose uniform(a, b) always returns a: zero jitter."""

    def uniform(self, a: float, b: float) -> float:
        """Return the lower bound."""
        return a


POLICY = BackoffPolicy(initial_s=1.0, cap_s=300.0, retry_after_cap_s=600.0)


def test_defaults() -> None:
    """The default policy starts at 1 s, caps at 300 s and honours Retry-After up to 600 s."""
    assert BackoffPolicy() == POLICY


def test_ceiling_doubles_per_attempt() -> None:
    """The ceiling is initial * 2**(attempt-1): 1, 2, 4, 8 ... seconds."""
    rng = MaxRandom(0)
    assert [delay_s(n, POLICY, rng) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 64, 128]


def test_ceiling_capped() -> None:
    """The ceiling never exceeds cap_s."""
    rng = MaxRandom(0)
    assert delay_s(9, POLICY, rng) == 256
    assert delay_s(10, POLICY, rng) == 300
    assert delay_s(50, POLICY, rng) == 300


def test_zero_jitter_is_zero() -> None:
    """With the lowest draw the delay is zero, never negative."""
    assert delay_s(5, POLICY, ZeroRandom(0)) == 0.0


def test_huge_attempt_no_overflow() -> None:
    """A huge attempt count gives the cap instead of an OverflowError."""
    for attempt in (1024, 1025, 10_000, 10**100):
        assert delay_s(attempt, POLICY, MaxRandom(0)) == 300.0
        assert 0.0 <= delay_s(attempt, POLICY, random.Random(attempt)) <= 300.0


def test_uniform_within_ceiling_over_many_seeded_draws() -> None:
    """Seeded draws stay within [0, ceiling] and spread over the whole range (full jitter)."""
    rng = random.Random(1234)
    for attempt in (1, 3, 6, 12):
        ceiling = min(300.0, 2.0 ** (attempt - 1))
        draws = [delay_s(attempt, POLICY, rng) for _ in range(5000)]
        assert all(0.0 <= d <= ceiling for d in draws)
        assert min(draws) < 0.05 * ceiling
        assert max(draws) > 0.95 * ceiling
        assert sum(draws) / len(draws) == pytest.approx(ceiling / 2, rel=0.05)


def test_same_seed_same_delays() -> None:
    """Two generators with the same seed give the same delays."""
    a, b = random.Random(7), random.Random(7)
    assert [delay_s(n, POLICY, a) for n in range(1, 20)] == [
        delay_s(n, POLICY, b) for n in range(1, 20)
    ]


def test_retry_after_wins_over_jitter() -> None:
    """A server-given delay longer than the jittered one is used as is."""
    assert delay_s(1, POLICY, MaxRandom(0), retry_after_s=120.0) == 120.0


def test_retry_after_is_a_floor() -> None:
    """A server-given delay shorter than the jittered one does not shorten the wait."""
    assert delay_s(10, POLICY, MaxRandom(0), retry_after_s=5.0) == 300.0


def test_retry_after_capped() -> None:
    """A server-given delay beyond retry_after_cap_s is cut to the cap."""
    assert delay_s(1, POLICY, ZeroRandom(0), retry_after_s=86_400.0) == 600.0
    assert delay_s(1, POLICY, ZeroRandom(0), retry_after_s=math.inf) == 600.0


@pytest.mark.parametrize("retry_after", [None, 0.0, -3.0, math.nan])
def test_retry_after_ignored_when_not_positive(retry_after: float | None) -> None:
    """A missing, zero, negative or NaN server delay leaves the jittered delay alone."""
    assert delay_s(3, POLICY, MaxRandom(0), retry_after_s=retry_after) == 4.0


def test_retry_after_consumes_one_draw() -> None:
    """The generator advances by one draw whether or not a server delay is given."""
    a, b = random.Random(3), random.Random(3)
    delay_s(2, POLICY, a, retry_after_s=50.0)
    delay_s(2, POLICY, b)
    assert a.random() == b.random()


@pytest.mark.parametrize("attempt", [0, -1])
def test_attempt_counts_from_one(attempt: int) -> None:
    """An attempt below 1 is a caller bug and raises ValueError."""
    with pytest.raises(ValueError, match="attempt"):
        delay_s(attempt, POLICY, random.Random(0))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial_s": 0.0},
        {"initial_s": -1.0},
        {"cap_s": 0.0},
        {"retry_after_cap_s": 0.0},
        {"retry_after_cap_s": -10.0},
        {"initial_s": math.nan},
        {"cap_s": math.inf},
        {"initial_s": 10.0, "cap_s": 5.0},
    ],
)
def test_invalid_policy_raises(kwargs: dict[str, float]) -> None:
    """Non-positive or non-finite values, or a cap below the initial delay, raise ValueError."""
    with pytest.raises(ValueError):
        BackoffPolicy(**kwargs)


def test_cap_equal_to_initial_allowed() -> None:
    """A cap equal to the initial delay is valid and fixes the ceiling."""
    policy = BackoffPolicy(initial_s=5.0, cap_s=5.0)
    assert delay_s(1, policy, MaxRandom(0)) == delay_s(30, policy, MaxRandom(0)) == 5.0


def test_probe_interval_doubles() -> None:
    """The probe interval starts at initial_s and doubles per consecutive failure."""
    assert [probe_interval_s(n, 1.0, 60.0) for n in range(1, 7)] == [1, 2, 4, 8, 16, 32]


def test_probe_interval_capped() -> None:
    """The probe interval never exceeds cap_s, even after very many failures."""
    assert probe_interval_s(7, 1.0, 60.0) == 60.0
    assert probe_interval_s(10**9, 1.0, 60.0) == 60.0


def test_probe_interval_deterministic() -> None:
    """The same inputs always give the same probe interval."""
    assert probe_interval_s(4, 0.5, 30.0) == probe_interval_s(4, 0.5, 30.0) == 4.0


def test_probe_interval_lenient_edges() -> None:
    """A count below 1 counts as 1, and a cap below initial_s wins rather than raising."""
    assert probe_interval_s(0, 2.0, 60.0) == 2.0
    assert probe_interval_s(-5, 2.0, 60.0) == 2.0
    assert probe_interval_s(3, 1.0, 0.5) == 0.5


@pytest.mark.parametrize(("initial", "cap"), [(0.0, 1.0), (1.0, 0.0), (-1.0, 5.0), (math.nan, 5.0)])
def test_probe_interval_rejects_nonsense(initial: float, cap: float) -> None:
    """A non-positive or non-finite interval raises ValueError."""
    with pytest.raises(ValueError):
        probe_interval_s(1, initial, cap)


def test_floored_delay_is_spread_above_the_floor() -> None:
    """An unknown code's retry waits between the floor and twice it while backoff is shorter,
    so five attempts cannot fit in seconds and one request's rows come due apart."""
    rng = random.Random(3)
    delays = [floored_delay_s(1, POLICY, rng, None, 60.0) for _ in range(2000)]
    assert all(60.0 <= d <= 120.0 for d in delays)
    assert max(delays) - min(delays) > 50.0
    assert floored_delay_s(1, POLICY, ZeroRandom(0), None, 60.0) == 60.0


def test_floored_delay_keeps_longer_backoff_and_retry_after() -> None:
    """Backoff beyond the floor, or a longer Retry-After, still wins."""
    assert floored_delay_s(12, POLICY, MaxRandom(0), None, 60.0) == 300.0
    assert floored_delay_s(1, POLICY, ZeroRandom(0), 500.0, 60.0) == 500.0


@pytest.mark.parametrize("floor", [0.0, -1.0, math.nan, math.inf])
def test_floored_delay_refuses_a_bad_floor(floor: float) -> None:
    """A floor that is not a positive, finite number of seconds is refused."""
    with pytest.raises(ValueError, match="floor_s"):
        floored_delay_s(1, POLICY, random.Random(0), None, floor)
