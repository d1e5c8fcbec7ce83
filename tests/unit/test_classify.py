"""Tests for forwarder.classify: TikTok's code table, HTTP fallbacks and message parsing."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from email.utils import format_datetime

import orjson
import pytest

from forwarder.errors import TransportError
from forwarder.tiktok.classify import (
    AS_UNKNOWN,
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
    (41013, R, False),
    (40001, P, False),
    (40104, P, False),
    (40105, P, False),
    (40006, P, False),
    (40063, P, False),
    # Permission and authorisation, by name (S2).
    (40003, P, False),
    (40103, P, False),
    (41000, P, False),
    (70001, P, False),
    (40106, P, False),
    (40110, P, False),
    (40111, P, False),
    (40118, P, False),
    (40131, P, False),
    (40300, P, False),
    (40301, P, False),
    (40309, P, False),
    # Configuration, by name (S2).
    (40007, P, False),
    (40008, P, False),
    (40009, P, False),
    (40010, P, False),
    (40013, P, False),
    (40014, P, False),
    (40051, P, False),
    (40400, P, False),
    (41001, P, False),
    (41002, P, False),
    (40002, X, False),
    (40000, X, False),
    (40061, X, False),
    (40062, X, False),
    (40011, X, False),
    (40101, AMB, False),
    (40102, AMB, False),
    # S2 codes of other endpoints, and codes outside S2: the unknown code's treatment.
    (40012, R, True),
    (40050, R, True),
    (40502, R, True),
    (40900, R, True),
    (40916, R, True),
    (40310, R, True),
    (41003, R, True),
    (50001, R, True),
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
    bounds = sorted((low, high) for low, high, _ in CODE_RANGES)
    for (_, high), (next_low, _) in itertools.pairwise(bounds):
        assert high < next_low


def test_codes_handled_as_unknown_are_not_in_the_table() -> None:
    """AS_UNKNOWN lists only codes the table gives no verdict, so they get the bounded retry."""
    for code in AS_UNKNOWN:
        assert code_verdict(code) is None
        assert classify(answer(code, "m"), NOW).bounded is True


# The official SDK's enum (tiktok-events-api.md §0, S2: tiktok/tiktok-business-api-sdk
# python_sdk/business_api_client/tiktok_business/tiktok_code.py, unchanged at f809c39), as
# "code NAME" (without the ERROR_CODE_ prefix), to check that every one has a verdict.
SDK_CODES = """
0 OK; 20001 PARTIAL_OK; 40000 INVALID_PARAMS; 40001 PERMISSION_ERROR; 40002 PARAM_ERROR;
40003 FORBIDDEN; 40006 VERSION_ERROR; 40007 NOT_EXIST; 40008 NOT_IMPL;
40009 UNSUPPORTED_IN_SANDBOX; 40010 UNSUPPORTED_DOMAIN; 40011 ID_LIMIT_EXCEED; 40012 NO_UPDATE;
40013 SANDBOX_ADV_NOT_EXIST; 40014 INVALID_CLUSTER; 40016 BIZ_FC_ERROR;
40050 DUPLICATED_REQUEST; 40051 INVALID_API_VERSION; 40052 ACO_MATERIAL_EXIST;
40053 VIDEO_ID_INVALID_ERROR; 40061 INVALID_BATCH_SIZE; 40062 PII_NOT_HASHED;
40063 INVALID_PARTNER_NAME; 40100 REQUEST_TOO_FREQUENT; 40101 INVALID_PARTNER;
40102 ACCESS_TOKEN_EXPIRE; 40103 REFRESH_TOKEN_EXPIRE; 40104 EMPTY_ACCESS_TOKEN;
40105 INVALID_ACCESS_TOKEN; 40106 INVALID_CORE_USER; 40107 INVALID_REFRESH_TOKEN;
40108 INVALID_GRANT_TYPE; 40109 ERROR_AES_DECIPHER; 40110 AUTH_CODE_ERROR; 40112 PASSWORD_ERROR;
40113 APP_FORBIDDEN; 40114 ADVERTISER_LOGOUT; 40115 AUTH_TIMESTAMP_EXPIRE; 40116 AUTH_SIG_ERROR;
40117 APP_METHOD_FORBIDDEN; 40118 NOT_IN_WHITELIST; 40119 NOT_SAME_IDENTITY;
40120 TIKTOK_USER_NOT_LOGGED_IN; 40121 NOT_A_TCM_CREATOR; 40122 TCM_CREATOR_INVALID_COUNTRY;
40124 DEVELOPER_REJECTED; 40125 DEVELOPER_NO_PERMISSION; 40126 GARM_SINGLE_AUTH_FAILED;
40127 GARM_DOUBLE_AUTH_FAILED; 40128 GARM_SINGLE_VALIDATE_ERROR;
40129 GARM_DOUBLE_VALIDATE_ERROR; 40130 SCOPE_NOT_AUTHORIZED; 40131 SCOPE_TT_USER_OAUTH_FAILED;
40132 REQUEST_FREQUENCY_LIMITED; 41001 INTERFACE_OFFLINE; 41002 FIELDS_OFFLINE;
41013 SITE_TO_VIDEO_SERVICE_ERROR; 40200 GENERAL_TASK_ERROR; 40201 TASK_NOT_READY;
40202 WRITE_CONFLICT; 40300 ADVERTISER_NOT_EXIST; 40301 ADVERTISER_ROLE_ERROR;
40302 CUSTOMER_ADVERTISER_NOT_EXIST; 40309 REQUIRE_LOGIN; 40400 ROUTE_NOT_FOUND;
40502 AD_NUMBER_LIMIT; 40700 RPC_VALIDATION_ERROR; 40900 SIGNATURE_ERROR;
40901 VIDEO_TRANSCODING; 40902 URL_FETCH_TIMEOUT; 40903 URL_UNAVAILABLE;
40904 IMAGE_ILLEGAL_CONTENT; 40905 FILE_NOT_EXIST; 40906 FILE_EMPTY; 40907 FILE_TOO_LARGE;
40908 FILE_TYPE_ERROR; 40909 FILE_CALCULATE_TYPE_ERROR; 40910 FILE_EXPIRED;
40911 DUPLICATED_MATERIAL_NAME; 40912 IMAGE_UNAVAILABLE; 40913 IMAGE_FETCH_TIMEOUT;
40914 URL_FETCH_ERROR; 40915 FILE_UPLOAD_INVALID; 40916 VIDEO_ILLEGAL_CONTENT; 41000 BLOCKED;
50000 SYS_ERROR; 50002 SYS_TIMEOUT; 51000 RPC_ERROR; 51001 STATISTICS_ERROR;
51002 BUILD_STONE_ERROR; 51003 DMP_ERROR; 51004 LEGO_SERVICE_ERROR; 51005 SMART_PLAYER_ERROR;
51006 JUPITER_ERROR; 51007 OVERTURE_STAT_CENTRAL_ERROR; 51008 ADVERTISER_ERROR; 51009 DPA_ERROR;
51010 INTERNAL_TIME_OUT; 51011 SEARCH_ERROR; 51012 PIXEL_ERROR; 51014 LEGO_SERVICE_SYNC_ERROR;
51015 GRANTING_SERVICE_ERROR; 51016 ACCOUNT_ERROR; 51017 VIDEO_TRANSCODE_SERVICE_ERROR;
51018 AGENT_SERVICE_ERROR; 51019 IMAGE_CUT_ERROR; 51020 ORDER_CENTER_SERVICE_ERROR;
51030 USER_PASSPORT_SERVICE_ERROR; 51031 PLATFORM_ACCOUNT_SERVICE_ERROR;
51032 PLAYABLE_SERVICE_ERROR; 51033 TOOLBOX_ERROR; 51034 AD_MACHINE_AUDIT_ZEPHYR;
51035 SATELLITE_ERROR; 51036 TETRIS_ERROR; 51037 ASYNC_TASK_ERROR;
51038 UNION_TREASURE_BOX_ERROR; 51039 AUTH_SERVICE_ERROR; 51040 ADVERTISER_INFO_ERROR;
51041 AD_GARM_SERVICE_ERROR; 51042 LEGO_BUSINESS_SERVICE_ERROR;
51043 CREATIVE_PLATFORM_SERVICE_ERROR; 51044 DPA_PLATFORM_ERROR; 51045 AD_FILE_SERVICE_ERROR;
51046 SIRIUS_SERVICE_ERROR; 51047 SUBSCRIPTION_ERROR; 51048 ADS_PREVIEW_ERROR;
51049 DPA_RENDER_GATEWAY_ERROR; 51050 MEASUREMENT_STONE_ERROR; 51051 MANUAL_REVIEW_ERROR;
51052 OPTIMIZER_ERROR; 51053 DPA_CATALOG_BUSINESS_ERROR; 51054 CRM_ERROR; 51055 GCRM_ERROR;
51056 ADVERTISER_ACCOUNT_SERVICE_ERROR; 51057 APP_ERROR; 51058 POSTER_SERVICE_ERROR;
51059 CONFIG_SERVICE_ERROR; 51060 BC_RPC_ERROR; 51061 BM_SERVICE_ERROR;
51062 IMAGEX_SERVICE_ERROR; 51063 SEGMENT_GATEWAY_SERVICE_ERROR;
51064 ECO_GAME_MANAGER_SERVICE_ERROR; 51065 TTOP_SERVICE_ERROR;
51066 SUGGESTION_ENGINE_SERVICE_ERROR; 51067 VIDEOARCH_SERVICE_ERROR; 51099 STATISTICS_NEW_ERROR;
52000 DB_ERROR; 52001 DB_READ_ERROR; 52002 DB_WRITE_ERROR; 52003 DB_PARTITION_ERROR;
52100 RDS_ERROR; 52101 RDS_READ_ERROR; 52102 RDS_WRITE_ERROR; 52103 RDS_TIMEOUT_ERROR;
52201 TOS_ERROR; 52202 TOS_UPLOAD_TIMEOUT; 52203 TOS_HEAD_OBJECT; 52204 TOS_PUT_OBJECT;
53102 DESERIALIZATION_ERROR; 53103 SERIALIZATION_ERROR; 60001 MAINTENANCE;
61000 TOO_MANY_REQUESTS_BL; 70001 INVALID_BIZ_AUTH_TYPE
"""
SDK = {int(code): name for code, name in (entry.split() for entry in SDK_CODES.split(";"))}


def test_the_sdk_list_is_complete() -> None:
    """The copied enum holds all 163 codes of S2, none twice."""
    assert len(SDK) == len(SDK_CODES.split(";")) == 163


@pytest.mark.parametrize("code", sorted(SDK), ids=lambda code: f"{code}-{SDK[code]}")
def test_every_sdk_code_has_a_verdict(code: int) -> None:
    """Each code of the official SDK is in the table, in a range, or explicitly handled as
    unknown; none is left to the default by omission."""
    judged = code in CODE_VERDICTS or any(low <= code <= high for low, high, _ in CODE_RANGES)
    assert judged != (code in AS_UNKNOWN)


# Family by family (the list): what each name says the code is about.
FAMILIES = {
    Verdict.PAUSE: [
        "PERMISSION",
        "FORBIDDEN",
        "TOKEN",
        "AUTH",
        "WHITELIST",
        "NOT_EXIST",
        "BLOCKED",
        "OFFLINE",
        "SANDBOX",
        "VERSION",
        "ROLE",
        "LOGIN",
        "DEVELOPER",
        "SCOPE",
    ],
    Verdict.RETRY: ["SYS_", "RPC_", "TIME_OUT", "_SERVICE_", "DB_", "RDS_", "TOS_", "MAINTENANCE"],
    Verdict.THROTTLE: ["FREQUEN", "TOO_MANY", "BIZ_FC"],
}


@pytest.mark.parametrize("verdict", list(FAMILIES))
def test_families_by_name(verdict: Verdict) -> None:
    """Every SDK code whose name marks a family (permission, authorisation, configuration,
    server errors, rate limits) has that family's verdict, unless it is a known exception."""
    # Exceptions, each for a stated reason in forwarder/classify.py.
    exceptions = {
        40102: "ACCESS_TOKEN_EXPIRE: ambiguous (§5.1: the SDK and the docs disagree)",
        40905: "FILE_NOT_EXIST: a file upload code, handled as unknown",
        51039: "AUTH_SERVICE_ERROR: the auth service timed out (S10, S11 retry it)",
    }
    for code, name in SDK.items():
        if code in exceptions or not any(word in name for word in FAMILIES[verdict]):
            continue
        assert code_verdict(code) is verdict, (code, name)


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
