"""The pure decision: what happens to each row of a request, from the answer alone."""

from __future__ import annotations

import random

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from forwarder import decide
from forwarder.backoff import BackoffPolicy
from forwarder.decide import Action
from forwarder.errors import TransportError
from forwarder.outcome import ApiResponse, Outcome, Verdict
from forwarder.tiktok.classify import classify, classify_transport

PIXEL = "D34FV3JC77U1PDQ72P1G"
POLICY = decide.Policy(
    default_source=PIXEL,
    default_test_code=None,
    backoff=BackoffPolicy(initial_s=1.0, cap_s=300.0, retry_after_cap_s=600.0),
    storm_answers=3,
    unknown_code_max_attempts=5,
    unknown_code_min_delay_s=60.0,
)


def answer(code: int, message: str = "", retry_after: str | None = None) -> Outcome:
    """TikTok's answer with *code*, as classify() reads it."""
    body = orjson.dumps({"code": code, "message": message, "request_id": "r1"})
    return classify(ApiResponse(200, body, retry_after), 1_000.0)


def request(events: int, *, pixel: str = PIXEL, attempts: int = 0) -> decide.Request:
    """A request of *events* events that each had *attempts* attempts before."""
    return decide.Request(pixel, None, (attempts,) * events)


def judged(outcome: Outcome, events: int = 4, **kwargs: object) -> decide.Decision:
    """decide() on *outcome* as its own verdict, with a seeded generator."""
    req = request(events, **kwargs)  # type: ignore[arg-type]
    return decide.decide(outcome, outcome.verdict, req, POLICY, random.Random(7))


@pytest.mark.parametrize(
    ("code", "action"),
    [(0, Action.SENT), (20001, Action.SENT), (40100, Action.THROTTLE), (61000, Action.THROTTLE)],
)
def test_accepted_and_throttled_answers_concern_every_row(code: int, action: Action) -> None:
    """An accepted or rate-limited request moves all its rows alike, with no row named."""
    decision = judged(answer(code))
    assert decision.action is action
    assert (decision.dead, decision.retry_in, decision.resend) == ((), (), ())


def test_a_credential_answer_pauses_with_its_code() -> None:
    """40105 pauses the destination with reason 40105, killing nothing."""
    decision = judged(answer(40105, "Access token is incorrect or has been revoked."))
    assert (decision.action, decision.pause_reason, decision.dead) == (Action.PAUSE, "40105", ())


def test_a_pause_the_state_made_carries_no_reason_of_its_own() -> None:
    """A retry the storm rule turned into a pause is paused already: no new reason."""
    outcome = answer(49999, "new")
    decision = decide.decide(outcome, Verdict.PAUSE, request(3), POLICY, random.Random(1))
    assert (decision.action, decision.pause_reason) == (Action.PAUSE, None)


def test_a_refused_own_pixel_is_held_the_default_one_pauses() -> None:
    """40001 for a pixel the rows named holds that pixel; for the default pixel it pauses."""
    refused = answer(40001, "No permission to operate pixel code")
    assert judged(refused, pixel="OTHER1").action is Action.HOLD
    assert judged(refused).action is Action.PAUSE


def test_retries_count_an_attempt_with_delays_within_the_backoff() -> None:
    """A 50000 retries every row after a delay below the ceiling of its next attempt."""
    decision = judged(answer(50000), events=3, attempts=2)
    assert decision.action is Action.RETRY and decision.dead == ()
    assert [position for position, _ in decision.retry_in] == [0, 1, 2]
    assert all(0 <= delay <= 4.0 for _, delay in decision.retry_in)  # attempt 3: ceiling 4 s


def test_a_retry_after_is_a_floor() -> None:
    """TikTok's Retry-After is waited at least, capped by the policy."""
    decision = judged(answer(50000, retry_after="120"), events=2)
    assert all(delay >= 120.0 for _, delay in decision.retry_in)


def test_an_unknown_code_spreads_its_late_retries_and_kills_the_exhausted() -> None:
    """Attempts past FORWARDER_STORM_ANSWERS wait at least the floor; the last attempt dies."""
    unknown = answer(49999, "something new")
    quick = judged(unknown, events=1, attempts=0)
    assert quick.retry_in[0][1] <= 1.0
    spread = judged(unknown, events=1, attempts=3)
    assert 60.0 <= spread.retry_in[0][1] <= 120.0
    dead = judged(unknown, events=2, attempts=4)
    assert (dead.retry_in, dead.dead, dead.dead_label) == ((), (0, 1), "unknown_code")
    assert "49999" in dead.dead_reason and "something new" in dead.dead_reason


def test_a_rejection_naming_an_event_kills_it_and_resends_the_rest() -> None:
    """40002 naming data.2 kills the third event; the other three go again in one request."""
    decision = judged(answer(40002, "data.2.properties.value: Not a valid number"))
    assert decision.action is Action.REJECT
    assert decision.dead == (2,) and decision.resend == ((0, 1, 3),)
    assert decision.dead_label == "rejected"


def test_a_rejection_naming_no_event_splits_the_request_in_halves() -> None:
    """Without an index nothing dies yet: the request is resent as two halves."""
    decision = judged(answer(40002, "Invalid value"), events=5)
    assert decision.dead == () and decision.resend == ((0, 1), (2, 3, 4))


def test_a_rejected_single_event_dies() -> None:
    """A request of one event that TikTok refuses kills that event."""
    decision = judged(answer(40002, "Invalid value"), events=1)
    assert decision.dead == (0,) and decision.resend == ()


def test_a_refusal_of_the_whole_request_is_the_rows_for_their_own_pixel_only() -> None:
    """event_source_id refused: the rows of their own pixel die; for the default, a pause."""
    refused = answer(40002, "Invalid value for event_source_id: not a valid string.")
    own = judged(refused, events=3, pixel="OTHER1")
    assert (own.action, own.dead, own.resend) == (Action.REJECT, (0, 1, 2), ())
    default = judged(refused, events=3)
    assert (default.action, default.pause_reason) == (Action.PAUSE, "config_40002")


def test_transport_failures_retry() -> None:
    """A timeout retries every row, unbounded (it is not the events' fault)."""
    outcome = classify_transport(TransportError("timeout", "no answer"))
    decision = judged(outcome, events=2, attempts=10)
    assert decision.action is Action.RETRY and decision.dead == ()


@given(
    events=st.integers(min_value=1, max_value=40),
    index=st.one_of(st.none(), st.integers(min_value=-2, max_value=45)),
)
def test_a_rejection_accounts_for_every_row_exactly_once(events: int, index: int | None) -> None:
    """Whatever TikTok names, each row is dead or resent, once; no resent request is empty."""
    message = "Invalid value" if index is None else f"data.{index}.x: bad"
    decision = judged(answer(40002, message), events=events)
    resent = [position for part in decision.resend for position in part]
    assert sorted([*decision.dead, *resent]) == list(range(events))
    assert all(decision.resend)
