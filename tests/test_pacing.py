"""The pacer: concurrency, throttling and credential pauses, with the time passed in."""

from __future__ import annotations

import random

from forwarder.pacing import SUCCESSES_PER_STEP, Pacer


def _pacer(limit: int = 4) -> Pacer:
    return Pacer(
        max_limit=limit,
        throttle_max_s=300,
        probe_max_s=60,
        retry_after_max_s=600,
        rng=random.Random(7),
    )


def test_slots_follow_in_flight() -> None:
    """Free slots are the limit minus requests in flight."""
    pacer = _pacer(4)
    pacer.started()
    pacer.started()
    assert pacer.slots(0) == 2
    pacer.finished()
    assert pacer.slots(0) == 3


def test_throttle_halves_and_holds() -> None:
    """A rate-limit answer halves the limit and allows nothing until the pause ends."""
    pacer = _pacer(4)
    until = pacer.on_throttle(100.0, None)
    assert pacer.limit == 2
    assert 100.5 <= until <= 101.0
    assert pacer.slots(100.2) == 0
    assert pacer.slots(until) == 2


def test_throttle_pause_grows_and_is_capped() -> None:
    """Rate-limit answers in a row double the pause up to the configured maximum."""
    pacer = _pacer(4)
    pauses = [pacer.on_throttle(0.0, None) for _ in range(12)]
    assert pauses[3] >= 4.0
    assert max(pauses) <= 300.0
    assert pacer.limit == 1


def test_retry_after_wins_and_is_capped() -> None:
    """A server's Retry-After sets the pause, up to the maximum honoured."""
    pacer = _pacer(4)
    assert pacer.on_throttle(0.0, 42.0) == 42.0
    other = _pacer(4)
    assert other.on_throttle(0.0, 10_000.0) == 600.0


def test_success_grows_limit_back() -> None:
    """Accepted requests grow the limit one step at a time back to the maximum."""
    pacer = _pacer(4)
    pacer.on_throttle(0.0, None)
    pacer.on_throttle(0.0, None)
    assert pacer.limit == 1
    for _ in range(SUCCESSES_PER_STEP * 3):
        pacer.on_accepted()
    assert pacer.limit == 4
    for _ in range(SUCCESSES_PER_STEP * 3):
        pacer.on_accepted()
    assert pacer.limit == 4


def test_pause_allows_one_probe_at_growing_intervals() -> None:
    """A paused destination allows one probe when due, at intervals that double to a cap."""
    pacer = _pacer(4)
    first = pacer.on_pause(0.0, "40105")
    assert pacer.paused and pacer.paused_reason == "40105"
    assert pacer.slots(first - 0.01) == 0
    assert pacer.slots(first) == 1
    pacer.started()
    assert pacer.slots(first) == 0
    pacer.finished()
    intervals = [pacer.on_pause(0.0, "40105") for _ in range(10)]
    assert intervals[0] > first
    assert max(intervals) == 60.0
    assert pacer.paused_since == 0.0


def test_accepted_ends_pause() -> None:
    """An accepted probe resumes delivery and reports that it did."""
    pacer = _pacer(4)
    pacer.on_pause(0.0, "40105")
    assert pacer.on_accepted() is True
    assert not pacer.paused
    assert pacer.slots(0.0) == 4
    assert pacer.on_accepted() is False


def test_ambiguous_codes_pause_after_a_few() -> None:
    """40101/40102 answers in a row pause delivery after the configured count."""
    pacer = _pacer(4)
    assert pacer.on_ambiguous(0.0, "40102", 3) is False
    assert pacer.on_ambiguous(0.0, "40102", 3) is False
    assert pacer.on_ambiguous(0.0, "40102", 3) is True
    assert pacer.paused_reason == "ambiguous_40102"


def test_wait_is_bounded_by_idle_and_pause() -> None:
    """The loop sleeps no longer than the poll interval, or until a pause ends if sooner."""
    pacer = _pacer(4)
    assert pacer.wait_s(0.0, 0.2) == 0.2
    until = pacer.on_throttle(0.0, None)
    assert pacer.wait_s(0.0, 5.0) == until
    assert pacer.wait_s(0.0, 0.2) == 0.2
