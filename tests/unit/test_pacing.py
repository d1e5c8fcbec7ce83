"""The pacer: concurrency, throttling and credential pauses, with the time passed in."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

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


# --- The storm rule: failed answers in a row pause like credentials -----------------------------


def test_failures_in_a_row_pause_as_a_storm() -> None:
    """The third failed answer in a row pauses as storm_<latest code>; the first two do not."""
    pacer = _pacer(4)
    assert pacer.on_failure(10.0, "49999", 3) is False
    assert pacer.on_failure(10.0, "49999", 3) is False
    assert not pacer.paused
    assert pacer.on_failure(10.0, "49999", 3) is True
    assert pacer.paused_reason == "storm_49999"
    assert pacer.paused_since == 10.0
    assert pacer.slots(10.0) == 0
    assert pacer.slots(pacer.probe_at) == 1


def test_any_failures_count_together() -> None:
    """Different codes, HTTP statuses and timeouts in a row make one storm, named by the last."""
    pacer = _pacer(4)
    for code in ("http_503", "timeout"):
        assert pacer.on_failure(0.0, code, 3) is False
    assert pacer.on_failure(0.0, "49999", 3) is True
    assert pacer.paused_reason == "storm_49999"


def test_an_accepted_answer_resets_the_streak() -> None:
    """A code confined to some requests, with others accepted in between, never pauses."""
    pacer = _pacer(4)
    for _ in range(50):
        assert pacer.on_failure(0.0, "49999", 3) is False
        assert pacer.on_failure(0.0, "49999", 3) is False
        assert pacer.on_accepted() is False
    assert not pacer.paused


def test_other_answers_leave_the_streak_alone() -> None:
    """Rate limits in between neither reset the streak nor count toward it."""
    pacer = _pacer(4)
    pacer.on_failure(0.0, "http_502", 3)
    pacer.on_throttle(0.0, None)
    pacer.on_failure(0.0, "http_502", 3)
    pacer.on_throttle(0.0, None)
    assert pacer.on_failure(0.0, "http_502", 3) is True


def test_failed_probes_keep_the_storm_and_back_off() -> None:
    """While paused, each failed probe keeps the pause (no attempt is the caller's to count) and
    doubles the probe interval up to the cap; an accepted probe resumes at once."""
    pacer = _pacer(4)
    for _ in range(3):
        pacer.on_failure(0.0, "49999", 3)
    intervals = []
    for _ in range(10):
        assert pacer.on_failure(0.0, "49999", 3) is True
        intervals.append(pacer.probe_at)
    assert intervals == sorted(intervals)
    assert intervals[-1] == 60.0
    assert pacer.paused_reason == "storm_49999"
    assert pacer.on_accepted() is True
    assert not pacer.paused
    assert pacer.on_failure(0.0, "49999", 3) is False


def test_a_failure_during_another_pause_keeps_that_pause() -> None:
    """A credential pause stays one until the failures in a row make a storm of their own."""
    pacer = _pacer(4)
    pacer.on_pause(0.0, "40105")
    assert pacer.on_failure(1.0, "http_503", 3) is True
    assert pacer.paused_reason == "40105"
    pacer.on_failure(1.0, "http_503", 3)
    assert pacer.on_failure(1.0, "http_503", 3) is True
    assert pacer.paused_reason == "storm_http_503"
    assert pacer.paused_since == 0.0


def test_a_threshold_of_one_pauses_at_the_first_failure() -> None:
    """FORWARDER_STORM_ANSWERS=1 pauses at the first failed answer."""
    pacer = _pacer(4)
    assert pacer.on_failure(0.0, "timeout", 1) is True
    assert pacer.paused_reason == "storm_timeout"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["ok", "fail", "throttle"]), max_size=60))
def test_storm_iff_three_failures_since_the_last_acceptance(answers: list[str]) -> None:
    """The pacer is paused exactly when the answers since the last accepted one hold at least
    three failures."""
    pacer = _pacer(4)
    since = 0
    for answer in answers:
        if answer == "ok":
            pacer.on_accepted()
            since = 0
        elif answer == "fail":
            pacer.on_failure(0.0, "49999", 3)
            since += 1
        else:
            pacer.on_throttle(0.0, None)
        assert pacer.paused is (since >= 3)


def test_a_storm_probes_no_sooner_than_retry_after() -> None:
    """A Retry-After on the failed answers holds the next probe back that long, capped."""
    pacer = _pacer(4)
    pacer.on_failure(0.0, "http_503", 3, 120.0)
    pacer.on_failure(0.0, "http_503", 3, 120.0)
    assert pacer.on_failure(0.0, "http_503", 3, 120.0) is True
    assert pacer.probe_at == 120.0
    assert pacer.slots(119.0) == 0
    assert pacer.on_failure(200.0, "http_503", 3, 10_000.0) is True
    assert pacer.probe_at == 800.0
    assert pacer.on_failure(900.0, "http_503", 3) is True
    assert pacer.probe_at == 900.0 + 4.0  # the third failed probe: 1, 2, then 4 s
