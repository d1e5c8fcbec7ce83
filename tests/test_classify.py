"""Tests for forwarder.classify: TikTok's code table, HTTP fallbacks and message parsing."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import orjson
import pytest

from forwarder.classify import (
    CODE_RANGES,
    CODE_VERDICTS,
    MESSAGE_MAX_CHARS,
    ApiResponse,
    Verdict,
    bad_index,
    classify,
    classify_transport,
    code_verdict,
    parse_retry_after,
)
from forwarder.errors import TransportError

NOW = 1_760_000_000.0

A = Verdict.ACCEPTED
R = Verdict.RETRY
T = Verdict.THROTTLE
P = Verdict.PAUSE
X = Verdict.REJECT
AMB = Verdict.AMBIGUOUS


def answer(
    code: object = 0,
    message: object = "OK",
    *,
    status: int = 200,
    request_id: object = "req-1",
    retry_after: str | None = None,
) -> ApiResponse:
    """Build a TikTok-shaped JSON answer (tiktok-events-api.md §4)."""
    body = {"code": code, "message": message, "request_id": request_id, "data": {}}
    return ApiResponse(status=status, body=orjson.dumps(body), retry_after=retry_after)


def raw(status: int, body: bytes, retry_after: str | None = None) -> ApiResponse:
    """Build an answer with an arbitrary body."""
    return ApiResponse(status=status, body=body, retry_after=retry_after)


# One row per documented code (tiktok-events-api.md §5.1, §10), plus range representatives and
# unknown codes: (code, verdict, bounded).
CODE_ROWS = [
    (0, A, False),
    (20001, A, False),
    (40100, T, False),
    (40016, T, False),
    (40132, T, False),
    (40133, T, False),
    (61000, T, False),
    (50000, R, False),
    (50002, R, False),
    (51000, R, False),
    (51001, R, False),
    (51999, R, False),
    (52001, R, False),
    (53001, R, False),
    (60001, R, False),
    (40200, R, False),
    (40201, R, False),
    (40202, R, False),
    (40700, R, False),
    (40001, P, False),
    (40104, P, False),
    (40105, P, False),
    (40006, P, False),
    (40063, P, False),
    (40002, X, False),
    (40000, X, False),
    (40061, X, False),
    (40062, X, False),
    (40101, AMB, False),
    (40102, AMB, False),
    (41000, R, True),
    (40900, R, True),
    (54000, R, True),
    (99999, R, True),
    (-1, R, True),
]


@pytest.mark.parametrize(("code", "verdict", "bounded"), CODE_ROWS)
def test_code_table(code: int, verdict: Verdict, bounded: bool) -> None:
    """Each TikTok body code gets its documented verdict and is stored as its decimal string."""
    outcome = classify(answer(code, "some message"), NOW)
    assert outcome.verdict is verdict
    assert outcome.code == str(code)
    assert outcome.bounded is bounded
    assert outcome.request_id == "req-1"
    assert outcome.message == "some message"


def test_every_table_entry_has_a_row() -> None:
    """The parametrized rows cover every exact code and every range of the table."""
    covered = {code for code, _, _ in CODE_ROWS}
    assert set(CODE_VERDICTS) <= covered
    for low, high, _ in CODE_RANGES:
        assert any(low <= code <= high for code in covered)
        assert code_verdict(low) is code_verdict(high) is not None


def test_table_and_ranges_do_not_overlap() -> None:
    """No exact code falls inside a range, so the table has one answer per code."""
    for code in CODE_VERDICTS:
        assert not any(low <= code <= high for low, high, _ in CODE_RANGES)


def test_table_agrees_with_classify() -> None:
    """classify gives every exact table entry the table's verdict, whatever the HTTP status."""
    for code, verdict in CODE_VERDICTS.items():
        for status in (200, 400, 500):
            assert classify(answer(code, "m", status=status), NOW).verdict is verdict


def test_20001_is_accepted_with_its_message() -> None:
    """A partial-OK 20001 is accepted and keeps TikTok's message for the warn-level log."""
    outcome = classify(answer(20001, "Partial OK: 2 events were not matched"), NOW)
    assert outcome.verdict is A
    assert outcome.message == "Partial OK: 2 events were not matched"


def test_body_code_beats_http_500() -> None:
    """An HTTP 500 whose body says code 0 is accepted: the code takes precedence (§1, S15)."""
    outcome = classify(answer(0, status=500), NOW)
    assert outcome.verdict is A
    assert outcome.code == "0"


def test_http_200_with_40105_pauses() -> None:
    """An HTTP 200 carrying 40105 (invalid token) pauses the destination."""
    message = "Access token is incorrect or has been revoked."
    outcome = classify(answer(40105, message), NOW)
    assert outcome.verdict is P
    assert outcome.code == "40105"
    assert outcome.message == message


@pytest.mark.parametrize(
    ("response", "verdict", "code", "bounded"),
    [
        (raw(500, b"<html><body>Internal Server Error</body></html>"), R, "http_500", False),
        (raw(502, b"<html><body>Bad Gateway</body></html>"), R, "http_502", False),
        (raw(503, b""), R, "http_503", False),
        (raw(504, b"upstream timed out"), R, "http_504", False),
        (raw(408, b""), R, "http_408", False),
        (raw(429, b"Too Many Requests"), T, "http_429", False),
        (raw(401, b"Unauthorized"), P, "http_401", False),
        (raw(403, b"<html>Forbidden</html>"), P, "http_403", False),
        (raw(404, b"Not Found"), P, "http_404", False),
        (raw(405, b""), P, "http_405", False),
        (raw(413, b"Request Entity Too Large"), X, "http_413", False),
        (raw(200, b""), R, "bad_body", False),
        (raw(200, b'{"code": 0, "message": "O'), R, "bad_body", False),
        (raw(200, b"[0]"), R, "bad_body", False),
        (raw(200, b'{"message": "OK"}'), R, "bad_body", False),
        (raw(200, b'{"code": "0"}'), R, "bad_body", False),
        (raw(200, b'{"code": true}'), R, "bad_body", False),
        (raw(204, b""), R, "bad_body", False),
        (raw(502, b'{"error": "bad gateway"}'), R, "http_502", False),
        (raw(400, b"Bad Request"), R, "http_400", True),
        (raw(302, b""), P, "http_302", False),
    ],
)
def test_http_status_fallback(
    response: ApiResponse, verdict: Verdict, code: str, bounded: bool
) -> None:
    """Without an integer body code the HTTP status decides; the message never quotes the body."""
    outcome = classify(response, NOW)
    assert outcome.verdict is verdict
    assert outcome.code == code
    assert outcome.bounded is bounded
    assert f"HTTP {response.status}" in outcome.message
    if response.body:
        assert response.body.decode() not in outcome.message


def test_non_json_body_message_gives_length_only() -> None:
    """A non-JSON error page is described by its length, not its content."""
    body = b"<html>secret proxy page</html>"
    outcome = classify(raw(502, body), NOW)
    assert f"{len(body)} bytes" in outcome.message
    assert "secret" not in outcome.message
    assert "non-JSON" in outcome.message


def test_request_id_kept_without_code() -> None:
    """A JSON object with a request_id but no code still yields the request_id for support."""
    outcome = classify(raw(503, b'{"request_id": "abc", "message": "x"}'), NOW)
    assert outcome.request_id == "abc"
    assert outcome.code == "http_503"


@pytest.mark.parametrize("request_id", [None, 123, ""])
def test_request_id_only_when_a_string(request_id: object) -> None:
    """A missing, non-string or empty request_id is stored as None."""
    assert classify(answer(0, request_id=request_id), NOW).request_id is None


def test_429_with_retry_after_seconds() -> None:
    """An HTTP 429 throttles and carries the Retry-After seconds."""
    outcome = classify(raw(429, b"", retry_after="120"), NOW)
    assert outcome.verdict is T
    assert outcome.code == "http_429"
    assert outcome.retry_after_s == 120.0
    assert "120" not in outcome.message


def test_429_with_retry_after_http_date() -> None:
    """An HTTP 429 with an HTTP-date Retry-After carries the seconds until that date."""
    when = format_datetime(datetime.fromtimestamp(NOW + 90, tz=UTC), usegmt=True)
    outcome = classify(raw(429, b"", retry_after=when), NOW)
    assert outcome.verdict is T
    assert outcome.retry_after_s == pytest.approx(90.0)


def test_retry_after_parsed_for_any_verdict() -> None:
    """Retry-After is parsed whatever the verdict, including a body-code throttle and a success."""
    assert classify(answer(40100, retry_after="30"), NOW).retry_after_s == 30.0
    assert classify(answer(0, retry_after="5"), NOW).retry_after_s == 5.0
    assert classify(answer(40100), NOW).retry_after_s is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("   ", None),
        ("0", None),
        ("-5", None),
        ("abc", None),
        ("nan", None),
        ("inf", None),
        ("1e999", None),
        ("30", 30.0),
        (" 45 ", 45.0),
        ("1.5", 1.5),
        ("Wed, 21 Oct 2015 07:28:00 GMT", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    """Retry-After parses positive seconds; zero, negative, unparsable and past dates give None."""
    assert parse_retry_after(value, NOW) == expected


def test_parse_retry_after_future_date() -> None:
    """An HTTP-date in the future gives the seconds from now until then."""
    when = format_datetime(datetime.fromtimestamp(NOW + 600, tz=UTC), usegmt=True)
    assert parse_retry_after(when, NOW) == pytest.approx(600.0)


def test_parse_retry_after_zoneless_date_is_utc() -> None:
    """An HTTP-date with a -0000 zone (no zone information) is read as UTC."""
    when = datetime.fromtimestamp(NOW + 60, tz=UTC).strftime("%a, %d %b %Y %H:%M:%S -0000")
    assert parse_retry_after(when, NOW) == pytest.approx(60.0)


@pytest.mark.parametrize(
    ("message", "index"),
    [
        ("data.3.user.email: Not a valid string", 3),
        ("Batch.12.properties.contents.0.content_id: Not a valid string", 12),
        ("data[7]: invalid event_time", 7),
        ("Invalid value for data.0.event: must not be empty", 0),
        ("DATA.5.page.url: Not a valid URL", 5),
        ("properties.contents.0.content_id: Not a valid string", None),
        ("metadata.4.x: nope", None),
        ("Invalid value for event_source_id: not a valid string.", None),
        ("", None),
    ],
)
def test_bad_index(message: str, index: int | None) -> None:
    """bad_index reads the data[]/Batch index from a field path and nothing else."""
    assert bad_index(message) == index


@pytest.mark.parametrize(
    ("code", "message", "index", "whole"),
    [
        (40002, "data.3.user.email: Not a valid string", 3, False),
        (40002, "Batch.12.properties.contents.0.content_id: Not a valid string", 12, False),
        (40002, "data[7]: bad", 7, False),
        (40002, "Something is wrong", None, False),
        (40002, "Invalid value for event_source: must be web, app or offline.", None, True),
        (40002, "Invalid value for event_source_id: not a valid string.", None, True),
        (40002, "test_event_code: Not a valid string", None, True),
        (40002, "Invalid access token for this pixel", None, True),
        (40002, "data: Length must be between 1 and 1000.", None, True),
        (40002, "data.0.event_source: unknown field", 0, False),
        (40000, "data.2.event_time: Not a valid integer", 2, False),
        (40062, "data.9.user.phone: must be hashed", 9, False),
        (40061, "data: Length must be between 1 and 1000; data.3 is too many", None, False),
    ],
)
def test_reject_locates_the_fault(code: int, message: str, index: int | None, whole: bool) -> None:
    """A rejection carries the index its message names and flags faults in top-level fields."""
    outcome = classify(answer(code, message), NOW)
    assert outcome.verdict is X
    assert outcome.bad_index == index
    assert outcome.whole_request is whole


def test_index_found_past_the_truncation() -> None:
    """The index is parsed from TikTok's full message, even past the 300-character cut."""
    message = "x" * 400 + " data.42.user.email: Not a valid string"
    outcome = classify(answer(40002, message), NOW)
    assert outcome.bad_index == 42
    assert len(outcome.message) == MESSAGE_MAX_CHARS


def test_only_reject_sets_index_fields() -> None:
    """Non-reject verdicts never carry a bad index or the whole-request flag."""
    outcome = classify(answer(50000, "data.3.user: internal"), NOW)
    assert outcome.bad_index is None
    assert outcome.whole_request is False


def test_message_truncated() -> None:
    """A long TikTok message is cut to 300 characters, ending in an ellipsis."""
    outcome = classify(answer(40002, "a" * 1000), NOW)
    assert len(outcome.message) == MESSAGE_MAX_CHARS
    assert outcome.message == "a" * (MESSAGE_MAX_CHARS - 1) + "…"


def test_message_at_limit_kept_whole() -> None:
    """A message of exactly 300 characters is kept as is."""
    text = "b" * MESSAGE_MAX_CHARS
    assert classify(answer(40002, text), NOW).message == text


def test_message_flattened_to_one_line() -> None:
    """Newlines and control characters in TikTok's message become single spaces."""
    outcome = classify(answer(40002, "line one\n\tline\x00two\r\n"), NOW)
    assert outcome.message == "line one line two"


@pytest.mark.parametrize("message", [None, "", 42])
def test_missing_message_replaced(message: object) -> None:
    """A missing, empty or non-string message is replaced by our own text naming the code."""
    outcome = classify(answer(40105, message), NOW)
    assert outcome.message == "TikTok answered code 40105 without a message"


def test_transport_timeout() -> None:
    """A timeout is retried with the stored code "timeout" and the error's message."""
    outcome = classify_transport(TransportError("timeout", "TikTok did not answer in 15 s"))
    assert outcome.verdict is R
    assert outcome.code == "timeout"
    assert outcome.message == "TikTok did not answer in 15 s"
    assert outcome.request_id is None
    assert outcome.bounded is False


def test_transport_connection() -> None:
    """A connection failure is retried with the stored code "connection"."""
    outcome = classify_transport(TransportError("connection", "connection to TikTok failed: X"))
    assert outcome.verdict is R
    assert outcome.code == "connection"
    assert outcome.message == "connection to TikTok failed: X"


def test_transport_default_message_and_unknown_kind() -> None:
    """An unexpected kind is stored as "connection", and a default message is still usable."""
    outcome = classify_transport(TransportError("weird"))
    assert outcome.code == "connection"
    assert outcome.message.startswith("The request to TikTok did not get an answer.")
    assert len(outcome.message) <= MESSAGE_MAX_CHARS
    assert "\n" not in outcome.message


def test_transport_message_truncated() -> None:
    """A long transport error message is cut to 300 characters."""
    outcome = classify_transport(TransportError("timeout", "t" * 500))
    assert len(outcome.message) == MESSAGE_MAX_CHARS
