"""What happens to each row of a request, given the answer: a pure function, no I/O.

``decide`` takes the answer (an Outcome), the verdict the destination's state makes of it (a
retry may have become a pause under the storm rule), what it needs to know of the request (its
source, its test code, each row's attempts so far) and the policy, and returns a Decision:
sent, held back for the whole destination (throttle, pause), held back for the request's own
pixel, retried per row with backoff, or rejected (some rows dead, the rest resent). The worker
applies it (forwarder/worker/settle.py); nothing here touches a database, a clock or the network.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

from forwarder import backoff
from forwarder.outcome import About, Outcome, Verdict


class Action(enum.StrEnum):
    """What happens to the request's rows."""

    #: Accepted: the rows are sent.
    SENT = "sent"
    #: A rate limit: every row waits for the destination's throttle; no attempt counted.
    THROTTLE = "throttle"
    #: The destination pauses (or has paused): every row waits for the next probe; no attempt.
    PAUSE = "pause"
    #: The request's own pixel is refused: its rows wait for that pixel's probe; the rest flows.
    HOLD = "hold"
    #: Transient: each row retries after its own delay (an attempt counted), or dies exhausted.
    RETRY = "retry"
    #: Refused content: the rows named are dead (an attempt counted), the rest is resent.
    REJECT = "reject"


@dataclass(frozen=True, slots=True)
class Request:
    """What a decision needs to know of one request."""

    source: str  # the pixel (event_source_id)
    test_code: str | None
    attempts: tuple[int, ...]  # each event's attempts before this request, in request order


@dataclass(frozen=True, slots=True)
class Policy:
    """The settings decisions follow."""

    default_source: str  # TIKTOK_PIXEL_CODE
    default_test_code: str | None  # TIKTOK_TEST_EVENT_CODE
    backoff: backoff.BackoffPolicy
    storm_answers: int  # FORWARDER_STORM_ANSWERS
    unknown_code_max_attempts: int  # FORWARDER_UNKNOWN_CODE_MAX_ATTEMPTS
    unknown_code_min_delay_s: float  # FORWARDER_UNKNOWN_CODE_MIN_DELAY


@dataclass(frozen=True, slots=True)
class Decision:
    """What happens to each row of a request; rows are named by their position in it."""

    action: Action
    #: PAUSE: the reason to pause with; None when the destination's state paused it already
    #: (the storm rule, repeated ambiguous answers).
    pause_reason: str | None = None
    #: RETRY: (position, seconds until the next attempt) for the rows that retry.
    retry_in: tuple[tuple[int, float], ...] = ()
    #: RETRY and REJECT: the positions of the rows that are dead, with one reason for all.
    dead: tuple[int, ...] = ()
    dead_reason: str = ""
    #: The label dead rows are counted under (``rejected``, ``unknown_code``).
    dead_label: str = ""
    #: REJECT: the positions of the rows to resend, one tuple per new request.
    resend: tuple[tuple[int, ...], ...] = ()


def decide(
    outcome: Outcome, verdict: Verdict, request: Request, policy: Policy, rng: random.Random
) -> Decision:
    """Decide the fate of *request*'s rows from *outcome*, judged as *verdict*."""
    if verdict is Verdict.ACCEPTED:
        return Decision(Action.SENT)
    if verdict is Verdict.THROTTLE:
        return Decision(Action.THROTTLE)
    if verdict is Verdict.PAUSE:
        if outcome.verdict is not Verdict.PAUSE:
            return Decision(Action.PAUSE)  # the destination's state has paused it
        if outcome.about is About.SOURCE and _own_source(request, policy):
            return Decision(Action.HOLD)
        return Decision(Action.PAUSE, pause_reason=outcome.code)
    if verdict is Verdict.RETRY:
        return _retry(outcome, request, policy, rng)
    return _reject(outcome, request, policy)


def _own_source(request: Request, policy: Policy) -> bool:
    """Whether the request goes to a pixel the row named, not the default one."""
    return request.source != policy.default_source.strip()


def _retry(outcome: Outcome, request: Request, policy: Policy, rng: random.Random) -> Decision:
    """Back every row off, counting an attempt; a code forwarder does not know kills the rows
    it exhausted.

    Fewer than FORWARDER_STORM_ANSWERS requests failed since one was accepted (else the storm
    rule had paused), so an unknown code may be these events' own: its first retries are quick,
    so a storm is recognised in seconds even when one request carries the whole backlog; later
    ones wait at least FORWARDER_UNKNOWN_CODE_MIN_DELAY; the last attempt kills the row.
    """
    retry_in: list[tuple[int, float]] = []
    dead: list[int] = []
    for position, done in enumerate(request.attempts):
        attempt = done + 1
        if not outcome.bounded or attempt < policy.storm_answers:
            delay = backoff.delay_s(attempt, policy.backoff, rng, outcome.retry_after_s)
        elif attempt < policy.unknown_code_max_attempts:
            delay = backoff.floored_delay_s(
                attempt, policy.backoff, rng, outcome.retry_after_s, policy.unknown_code_min_delay_s
            )
        else:
            dead.append(position)
            continue
        retry_in.append((position, delay))
    reason = (
        f"TikTok answered code {outcome.code}, which forwarder does not know, to attempt "
        f"{policy.unknown_code_max_attempts} of this event: {outcome.message}"
    )
    return Decision(
        Action.RETRY,
        retry_in=tuple(retry_in),
        dead=tuple(dead),
        dead_reason=reason if dead else "",
        dead_label="unknown_code",
    )


def _reject(outcome: Outcome, request: Request, policy: Policy) -> Decision:
    """Find the refused rows: all of them for a fault of the whole request, the one TikTok's
    message names, or none yet: then the request is resent in halves to find it."""
    count = len(request.attempts)
    everyone = tuple(range(count))
    if outcome.whole_request and not _rows_fault(outcome, request, policy):
        # TikTok refuses the request's own fields for the configured pixel or test code, or the
        # token: a configuration fault, not the events'. Pause, lose nothing.
        return Decision(Action.PAUSE, pause_reason=f"config_{outcome.code}")
    reason = f"TikTok rejected the event (code {outcome.code}): {outcome.message}"
    index = outcome.bad_index
    dead: tuple[int, ...]
    resend: tuple[tuple[int, ...], ...]
    if outcome.whole_request or count == 1:
        dead, resend = everyone, ()
    elif index is not None and 0 <= index < count:
        dead, resend = (index,), (everyone[:index] + everyone[index + 1 :],)
    else:
        middle = count // 2
        dead, resend = (), (everyone[:middle], everyone[middle:])
    return Decision(
        Action.REJECT, dead=dead, dead_reason=reason, dead_label="rejected", resend=resend
    )


def _rows_fault(outcome: Outcome, request: Request, policy: Policy) -> bool:
    """Whether a refusal of the whole request belongs to its rows: they named their own pixel
    or their own test code, and that is what TikTok refuses (not the token)."""
    if outcome.about is About.TOKEN:
        return False
    if outcome.about is About.TEST_CODE:
        own = request.test_code or None
        return own is not None and own != (policy.default_test_code or None)
    return _own_source(request, policy)
