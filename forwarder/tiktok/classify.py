"""Turn one TikTok answer (or a failure to get one) into a verdict; pure, table-driven."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime
from types import MappingProxyType
from typing import Final

import orjson

from forwarder.errors import TransportError
from forwarder.outcome import About, ApiResponse, Outcome, Verdict

#: The longest message kept on an outcome; TikTok's messages are short, anything longer is noise.
MESSAGE_MAX_CHARS: Final = 300


# --- The code table --------------------------------------------------------------------------
# tiktok-events-api.md §5.1 (names from the official SDK enum, S2) and §10 (recommendations).
# TikTok's body code decides, whatever the HTTP status (§1: S4 mocks answer 200 for errors).
# Every code of S2's enum has a verdict here: an exact entry, a range, or AS_UNKNOWN. Where only
# the SDK's name speaks for a code (no doc text, no observed answer), the comment says "by name".

#: Exact body codes → verdict. Codes in neither this table nor CODE_RANGES are RETRY, bounded.
CODE_VERDICTS: Final[Mapping[int, Verdict]] = MappingProxyType(
    {
        # §4, §10.1: success is code 0 "OK" (S2, S4); 20001 PARTIAL_OK is documented as success
        # (S2) and S4 treats it so. The caller logs 20001's message at warn level.
        0: Verdict.ACCEPTED,
        20001: Verdict.ACCEPTED,
        # §3.4, §5.1, §5.2, §10.2: rate limits. 40100 REQUEST_TOO_FREQUENT (S2; retried as a
        # throttle by S4, S9, S10), 40016 BIZ_FC_ERROR (S2, S10), 40132 REQUEST_FREQUENCY_LIMITED
        # (S2), 40133 advertiser-level QPS (§5.1: reported by integrators, unverified),
        # 61000 TOO_MANY_REQUESTS_BL (S2; "yes, long backoff").
        40100: Verdict.THROTTLE,
        40016: Verdict.THROTTLE,
        40132: Verdict.THROTTLE,
        40133: Verdict.THROTTLE,
        61000: Verdict.THROTTLE,
        # §5.1, §10.2: transient server-side errors. 50000 SYS_ERROR, 50002 SYS_TIMEOUT,
        # 60001 MAINTENANCE (S10); 40200/40201/40202 task errors and 40700
        # RPC_VALIDATION_ERROR (retried by S10's older list, quoting TikTok's code page);
        # 41013 SITE_TO_VIDEO_SERVICE_ERROR, a service error like the 51xxx ones (S2, by name).
        50000: Verdict.RETRY,
        50002: Verdict.RETRY,
        60001: Verdict.RETRY,
        40200: Verdict.RETRY,
        40201: Verdict.RETRY,
        40202: Verdict.RETRY,
        40700: Verdict.RETRY,
        41013: Verdict.RETRY,
        # §10.3: credentials, permission or configuration; pause and alert. 40001
        # PERMISSION_ERROR (S2, S4 mock), 40104 EMPTY_ACCESS_TOKEN, 40105 INVALID_ACCESS_TOKEN
        # (S2, S9), 40006 VERSION_ERROR, 40063 INVALID_PARTNER_NAME (S2).
        40001: Verdict.PAUSE,
        40104: Verdict.PAUSE,
        40105: Verdict.PAUSE,
        40006: Verdict.PAUSE,
        40063: Verdict.PAUSE,
        # §5.1: permission and authorisation, by name (S2): 40003 FORBIDDEN, 40103
        # REFRESH_TOKEN_EXPIRE, 41000 BLOCKED, 70001 INVALID_BIZ_AUTH_TYPE. Every request of
        # the token gets them; waiting for an operator loses nothing, dead-lettering would.
        40003: Verdict.PAUSE,
        40103: Verdict.PAUSE,
        41000: Verdict.PAUSE,
        70001: Verdict.PAUSE,
        # §5.1: configuration, by name (S2): what the token, the account or TIKTOK_API_URL
        # points at is missing, retired or elsewhere. 40007 NOT_EXIST, 40008 NOT_IMPL, 40009
        # UNSUPPORTED_IN_SANDBOX, 40010 UNSUPPORTED_DOMAIN, 40013 SANDBOX_ADV_NOT_EXIST, 40014
        # INVALID_CLUSTER, 40051 INVALID_API_VERSION (kin of 40006), 40400 ROUTE_NOT_FOUND
        # (kin of HTTP 404), 41001 INTERFACE_OFFLINE, 41002 FIELDS_OFFLINE (a field every
        # request carries was retired: upgrade forwarder, then delivery resumes).
        40007: Verdict.PAUSE,
        40008: Verdict.PAUSE,
        40009: Verdict.PAUSE,
        40010: Verdict.PAUSE,
        40013: Verdict.PAUSE,
        40014: Verdict.PAUSE,
        40051: Verdict.PAUSE,
        40400: Verdict.PAUSE,
        41001: Verdict.PAUSE,
        41002: Verdict.PAUSE,
        # §4, §10.4: the request's content is refused. 40002 PARAM_ERROR (S12, S13, S4),
        # 40000 INVALID_PARAMS, 40061 INVALID_BATCH_SIZE, 40062 PII_NOT_HASHED (S2); 40011
        # ID_LIMIT_EXCEED (S2, by name: too many ids in one request, split like 40061).
        40002: Verdict.REJECT,
        40000: Verdict.REJECT,
        40061: Verdict.REJECT,
        40062: Verdict.REJECT,
        40011: Verdict.REJECT,
        # §5.1, §10.5, §11: the SDK (S2) says INVALID_PARTNER / ACCESS_TOKEN_EXPIRE, S10's quote
        # of the docs says "requests made too frequently": retry a few times, then pause.
        40101: Verdict.AMBIGUOUS,
        40102: Verdict.AMBIGUOUS,
    }
)

#: Inclusive code ranges → verdict, for families judged by their range and names.
CODE_RANGES: Final[tuple[tuple[int, int, Verdict], ...]] = (
    # §5.1: the 401xx authorisation block past the token codes (S2 names 40106
    # INVALID_CORE_USER … 40118 NOT_IN_WHITELIST … 40131 SCOPE_TT_USER_OAUTH_FAILED; S10 pauses
    # on 40110 AUTH_CODE_ERROR); 40111 and 40123, absent from S2, are judged by the range.
    (40106, 40131, Verdict.PAUSE),
    # §5.1: the advertiser account and its roles (S2: 40300 ADVERTISER_NOT_EXIST, 40301
    # ADVERTISER_ROLE_ERROR, 40302 CUSTOMER_ADVERTISER_NOT_EXIST, 40309 REQUIRE_LOGIN).
    (40300, 40309, Verdict.PAUSE),
    # §5.1, §10.2: 51xxx RPC/internal timeouts (S2 names; S10 retries 51001/51010/51039),
    # 52xxx and 53xxx DB/RDS/TOS/serialization errors (S2).
    (51000, 51999, Verdict.RETRY),
    (52000, 52999, Verdict.RETRY),
    (53000, 53999, Verdict.RETRY),
)

#: S2 codes whose name fits no verdict on /event/track/ (they belong to ad, creative, upload
#: or update calls: §5.2 on 409xx), so they get the unknown code's treatment: retried per row,
#: spread over minutes, dead-lettered only while other requests are accepted; answered to
#: every request, they pause delivery (the storm rule, forwarder/pacing.py). 40012 NO_UPDATE,
#: 40050 DUPLICATED_REQUEST (not event dedup, §5.2), 40052 ACO_MATERIAL_EXIST, 40053
#: VIDEO_ID_INVALID_ERROR, 40502 AD_NUMBER_LIMIT, 40900 SIGNATURE_ERROR … 40916
#: VIDEO_ILLEGAL_CONTENT (file and material uploads).
AS_UNKNOWN: Final = frozenset({40012, 40050, 40052, 40053, 40502, *range(40900, 40917)})

#: REJECT codes whose message is searched for a data[] index and top-level field names. 40061
#: (batch size) is not: the caller splits the batch.
_LOCATABLE_CODES: Final = frozenset({40000, 40002, 40062})


def code_verdict(code: int) -> Verdict | None:
    """Return the table's verdict for a TikTok body code, or None if the code is unknown."""
    verdict = CODE_VERDICTS.get(code)
    if verdict is not None:
        return verdict
    for low, high, ranged in CODE_RANGES:
        if low <= code <= high:
            return ranged
    return None


# --- Message parsing ---------------------------------------------------------------------------

# §4: the field path is the only per-event signal: "data.3.user.email: …" (2.0),
# "Batch.12.properties…" (Events 1.0, S4); "data[7]" is accepted too. Nine digits at most keeps
# int() cheap; data[] holds at most 1,000 events (§3.1).
_INDEX = re.compile(r"(?<![\w.])(?:data|batch)(?:\.(\d{1,9})\b|\[(\d{1,9})\])", re.IGNORECASE)

# §2.1, §4: top-level fields, named as themselves (not as the tail of a dotted path such as
# "data.0.event_source"): "Invalid value for event_source: …" (S12), "Invalid value for
# event_source_id: …" (S13); test_event_code (§7.2); the access token (§1); and the length of
# data[] ("data: Length must be between 1 and 1000", a count over 1,000 rejects everything, S1).
_TOP_LEVEL = re.compile(
    r"(?<![\w.])(?:event_source_id|event_source|test_event_code|access[ _-]?token)\b"
    r"|(?<![\w.])data\s*:"
    r"|(?<![\w.])data\W{0,3}(?:length|size|count)\b"
    r"|\b(?:length|size|count) of (?:the )?data\b",
    re.IGNORECASE,
)

#: PAUSE codes about the request's pixel rather than the token: 40001 PERMISSION_ERROR (§5.1),
#: "No permission to operate pixel code", and 40007 NOT_EXIST (§5.3).
SOURCE_CODES: Final = frozenset({40001, 40007})
_TEST_CODE: Final = re.compile(r"(?<![\w.])test_event_code\b", re.IGNORECASE)
_TOKEN: Final = re.compile(r"(?<![\w.])access[ _-]?token\b", re.IGNORECASE)

_CONTROL_OR_SPACE = re.compile(r"[\s\x00-\x1f\x7f]+")


def bad_index(message: str) -> int | None:
    """Return the data[] index a TikTok message names ("data.3.x", "Batch.12.y", "data[7]")."""
    match = _INDEX.search(message)
    if match is None:
        return None
    return int(match.group(1) or match.group(2))


def names_top_level(message: str) -> bool:
    """Whether a TikTok message names a top-level request field, a fault every event shares."""
    return _TOP_LEVEL.search(message) is not None


def short_message(text: str) -> str:
    """Return *text* on one line, at most MESSAGE_MAX_CHARS long (an ellipsis marks a cut)."""
    line = _CONTROL_OR_SPACE.sub(" ", text).strip()
    if len(line) > MESSAGE_MAX_CHARS:
        return line[: MESSAGE_MAX_CHARS - 1] + "…"
    return line


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Return a Retry-After header (seconds or an HTTP-date) as seconds from *now*, if > 0."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:  # "-0000" means UTC with no zone information (RFC 5322)
            when = when.replace(tzinfo=UTC)
        try:
            seconds = when.timestamp() - now
        except (OverflowError, OSError, ValueError):
            return None
    if not math.isfinite(seconds) or seconds <= 0:
        return None
    return seconds


# --- Classification ----------------------------------------------------------------------------

_NOT_JSON: Final = object()  # stands for a body orjson could not parse


def classify(response: ApiResponse, now: float) -> Outcome:
    """Classify one HTTP answer: TikTok's body code decides; the HTTP status only without one."""
    retry_after_s = parse_retry_after(response.retry_after, now)
    try:
        document: object = orjson.loads(response.body)
    except orjson.JSONDecodeError:
        document = _NOT_JSON
    request_id: str | None = None
    if isinstance(document, dict):
        raw_id = document.get("request_id")
        request_id = raw_id if isinstance(raw_id, str) and raw_id else None
        code = document.get("code")
        # bool is an int subclass; `true` is not a code.
        if isinstance(code, int) and not isinstance(code, bool):
            raw_message = document.get("message")
            text = raw_message if isinstance(raw_message, str) else ""
            return _from_code(code, text, request_id, retry_after_s)
    return _from_status(response, document, request_id, retry_after_s)


def _from_code(
    code: int, text: str, request_id: str | None, retry_after_s: float | None
) -> Outcome:
    message = short_message(text) or f"TikTok answered code {code} without a message"
    verdict = code_verdict(code)
    if verdict is None:
        return Outcome(Verdict.RETRY, str(code), message, request_id, retry_after_s, bounded=True)
    if verdict is Verdict.REJECT and code in _LOCATABLE_CODES:
        # Parse the full text, not the shortened one: the path may sit past the cut.
        whole = names_top_level(text)
        return Outcome(
            verdict,
            str(code),
            message,
            request_id,
            retry_after_s,
            bad_index=bad_index(text),
            whole_request=whole,
            about=_named(text) if whole else None,
        )
    about = About.SOURCE if verdict is Verdict.PAUSE and code in SOURCE_CODES else None
    return Outcome(verdict, str(code), message, request_id, retry_after_s, about=about)


def _named(text: str) -> About:
    """What a refusal of the request's top-level fields names: the token, the test code, or
    (anything else: event_source_id, the data length) the request's source."""
    if _TOKEN.search(text):
        return About.TOKEN
    if _TEST_CODE.search(text):
        return About.TEST_CODE
    return About.SOURCE


def _describe_body(body: bytes, document: object) -> str:
    if not body.strip():
        return "an empty body"
    if document is _NOT_JSON:
        return f"a non-JSON body ({len(body)} bytes; an HTML error page from a proxy?)"
    if not isinstance(document, dict):
        return f"a JSON body that is not an object ({len(body)} bytes)"
    return f"a JSON object without an integer code ({len(body)} bytes)"


def _from_status(
    response: ApiResponse, document: object, request_id: str | None, retry_after_s: float | None
) -> Outcome:
    status = response.status
    what = f"HTTP {status} with {_describe_body(response.body, document)}"
    code = f"http_{status}"

    def outcome(verdict: Verdict, code: str, hint: str, *, bounded: bool = False) -> Outcome:
        return Outcome(
            verdict,
            code,
            short_message(f"{what}: {hint}"),
            request_id,
            retry_after_s,
            bounded=bounded,
        )

    if 200 <= status <= 299:
        return outcome(Verdict.RETRY, "bad_body", "TikTok's answer could not be read; retrying")
    if 300 <= status <= 399:
        # Never followed (the token would go along): a proxy or a wrong TIKTOK_API_URL.
        target = response.location or "no Location header"
        hint = f"a redirect to {target}, never followed; check TIKTOK_API_URL and any proxy"
        return outcome(Verdict.PAUSE, code, hint)
    if status == 429:
        return outcome(Verdict.THROTTLE, code, "rate limited; slowing down")
    if status == 408 or 500 <= status <= 599:
        return outcome(Verdict.RETRY, code, "TikTok or a gateway failed; retrying")
    if status in (401, 403):
        return outcome(Verdict.PAUSE, code, "check the access token and its permissions")
    if status in (404, 405):
        return outcome(Verdict.PAUSE, code, "the API URL looks wrong; check TIKTOK_API_URL")
    if status == 413:
        return outcome(Verdict.REJECT, code, "the request is too large; splitting the batch")
    return outcome(Verdict.RETRY, code, "unexpected status; retrying a few times", bounded=True)


def classify_transport(error: TransportError) -> Outcome:
    """Classify a request that got no answer: a timeout or a connection failure, both retried."""
    # §3.4, §10.2: TikTok-side timeouts happen (S18); retry timeouts and connection errors.
    # TransportError.kind is closed ("timeout" or "connection"); anything else counts as connection.
    code = "timeout" if error.kind == "timeout" else "connection"
    message = short_message(str(error)) or f"no answer from TikTok ({code})"
    return Outcome(Verdict.RETRY, code, message, None)
