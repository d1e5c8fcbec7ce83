"""What a platform's answer means to the worker, whatever the platform: pure types, no I/O.

A destination's client returns an ApiResponse; its classifier (``forwarder.tiktok.classify``
for TikTok) turns that into an Outcome, which ``forwarder.decide`` and the worker act on.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Verdict(enum.StrEnum):
    """What the caller does with the events of one request."""

    #: The platform took every event of the request.
    ACCEPTED = "accepted"
    #: Transient; back off these events (counts an attempt).
    RETRY = "retry"
    #: Rate limit; slow the whole destination, count no attempt.
    THROTTLE = "throttle"
    #: Credentials, permission or configuration; pause the destination, count no attempt,
    #: dead-letter nothing.
    PAUSE = "pause"
    #: The platform refused the request's content; isolate the bad event(s), dead-letter only
    #: them.
    REJECT = "reject"
    #: Sources conflict on what the answer means (TikTok's 40101/40102); retry a few times, then
    #: the caller pauses and alerts.
    AMBIGUOUS = "ambiguous"


@dataclass(frozen=True, slots=True)
class ApiResponse:
    """What came back from one POST: status, raw body and the raw Retry-After header."""

    status: int
    body: bytes
    retry_after: str | None
    #: For a 3xx: where it points, as scheme://host:port (no path, no query, no token).
    location: str | None = None


class About(enum.StrEnum):
    """What an answer that refuses the whole request is about, beyond the events."""

    #: The access token: every request fails alike.
    TOKEN = "token"
    #: The request's event source (its pixel): the pixel is refused or malformed.
    SOURCE = "source"
    #: The request's test_event_code.
    TEST_CODE = "test_code"


@dataclass(frozen=True, slots=True)
class Outcome:
    """The verdict on one request, with what the caller stores and logs."""

    verdict: Verdict
    #: The platform's body code as a string (TikTok's "0", "40002"), or "http_429", "http_503",
    #: "timeout", "connection", "bad_body".
    code: str
    #: A short reason a person can act on: the platform's message (at most 300 chars) or ours;
    #: never any header value and never the response body of a non-JSON answer.
    message: str
    request_id: str | None
    #: The server-given delay in seconds (parsed, > 0), else None; set for every verdict.
    retry_after_s: float | None = None
    #: For REJECT: the index of the event the platform's message names, if any.
    bad_index: int | None = None
    #: For REJECT: the message names a top-level field, so every event shares the fault.
    whole_request: bool = False
    #: For RETRY: an unknown code (or HTTP status); the caller spreads its retries over minutes
    #: and dead-letters after a few attempts, unless it answers every request (then it pauses).
    bounded: bool = False
    #: For PAUSE and a whole-request REJECT: what the refusal is about, when the answer says
    #: (a pixel refused, the test code, the token); None: the destination as a whole.
    about: About | None = None
