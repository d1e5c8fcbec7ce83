"""Whose fault a refusal is, and how a held pixel is probed: the decisions, without a network.

The worker holding a pixel is in tests/integration/test_holds.py; the daemon in tests/e2e.
"""

from __future__ import annotations

import random

import orjson
import pytest

from forwarder import decide
from forwarder.backoff import BackoffPolicy
from forwarder.holds import Holds
from forwarder.outcome import ApiResponse, Outcome
from forwarder.tiktok.classify import classify
from tests.support.harness import OTHER_PIXEL, PIXEL

BAD_TEST_CODE = "Invalid value for test_event_code: not a valid test event code."
PERMISSION = "No permission to operate pixel code: X. You must be an admin or operator."


def outcome(code: int, message: str) -> Outcome:
    """TikTok's answer with *code* and *message*, as classify() reads it."""
    body = orjson.dumps({"code": code, "message": message, "request_id": "req"})
    return classify(ApiResponse(200, body, None), 0.0)


POLICY = decide.Policy(
    default_source=f" {PIXEL} ",
    default_test_code="CONFIGURED",
    backoff=BackoffPolicy(),
    storm_answers=3,
    unknown_code_max_attempts=5,
    unknown_code_min_delay_s=60.0,
)
HOLD, PAUSE, ROWS = decide.Action.HOLD, decide.Action.PAUSE, decide.Action.REJECT


@pytest.mark.parametrize(
    "answer, pixel, test_code, expected",
    [
        (outcome(40001, PERMISSION), OTHER_PIXEL, None, HOLD),
        (outcome(40001, PERMISSION), PIXEL, None, PAUSE),
        (outcome(40001, PERMISSION), OTHER_PIXEL, "MINE", HOLD),
        (outcome(40007, "Not exist"), OTHER_PIXEL, None, HOLD),
        (outcome(40105, "Access token is incorrect"), OTHER_PIXEL, None, PAUSE),
        (outcome(40104, "Access token is null"), OTHER_PIXEL, None, PAUSE),
        (outcome(40006, "version"), OTHER_PIXEL, None, PAUSE),
        (outcome(40002, BAD_TEST_CODE), PIXEL, "MINE", ROWS),
        (outcome(40002, BAD_TEST_CODE), OTHER_PIXEL, "MINE", ROWS),
        (outcome(40002, BAD_TEST_CODE), PIXEL, "CONFIGURED", PAUSE),
        (outcome(40002, BAD_TEST_CODE), PIXEL, None, PAUSE),
        (outcome(40002, "Invalid value for event_source_id: x"), OTHER_PIXEL, None, ROWS),
        (outcome(40002, "Invalid value for event_source_id: x"), PIXEL, None, PAUSE),
        (outcome(40002, "access_token is invalid"), OTHER_PIXEL, None, PAUSE),
    ],
)
def test_whose_fault_a_refusal_is(
    answer: Outcome, pixel: str, test_code: str | None, expected: decide.Action
) -> None:
    """Only the token, the default pixel and the configured test code concern everything."""
    request = decide.Request(pixel, test_code, (0, 0))
    decision = decide.decide(answer, answer.verdict, request, POLICY, random.Random(1))
    assert decision.action is expected
    if expected is ROWS:
        assert decision.dead == (0, 1) and decision.resend == ()


def test_a_hold_probes_on_a_growing_interval_counted_once_per_probe() -> None:
    """Refusals of requests sent together count once; each refused probe doubles the wait."""
    holds = Holds(initial_s=1.0, max_s=4.0)
    assert holds.hold(OTHER_PIXEL, 100.0, "40001", "no").probe_at == 101.0
    assert holds.hold(OTHER_PIXEL, 100.1, "40001", "no").probe_at == 101.0  # sent before the hold
    assert not holds.take_probe(OTHER_PIXEL, 100.5)
    assert holds.take_probe(OTHER_PIXEL, 101.0)
    assert not holds.take_probe(OTHER_PIXEL, 101.1)  # one probe at a time
    assert holds.held[OTHER_PIXEL].probe_at == 103.0
    assert holds.hold(OTHER_PIXEL, 101.2, "40001", "no").probe_at == 103.2
    for now in (104.0, 110.0, 120.0):
        assert holds.take_probe(OTHER_PIXEL, now)
        hold = holds.hold(OTHER_PIXEL, now, "40001", "no")
    assert hold.probe_at - 120.0 == 4.0  # capped
    holds.probe_now(121.0)
    assert holds.take_probe(OTHER_PIXEL, 121.0)
    assert holds.release(OTHER_PIXEL) is not None and holds.release(OTHER_PIXEL) is None
    assert not holds.take_probe(OTHER_PIXEL, 200.0)
