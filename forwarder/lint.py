"""Lint one event as TikTok's Payload Helper would: ``forwarder check --payload FILE``.

The input is one event exactly as ``forwarder enqueue`` takes it: a JSON object of outbox columns
(``event_id``, ``event``, ``event_time``, ``event_source``, ``pixel_code``, ``test_event_code``
and ``payload``, an object or a JSON string of one). The lint reports

* as an **error** what will not reach TikTok as meant: what ``enqueue`` or the daemon's builder
  refuses (``payload.build`` is run on the event and its refusal becomes an error), what TikTok
  rejects (a ``content_id`` or ``price`` of the wrong type, an unsupported currency) and what
  reaches TikTok silently wrong (an ``event_time`` in milliseconds, an MD5 or SHA-1 where
  SHA-256 is needed);
* as a **warning** what is sent but costs matching, attribution or optimisation.

It is pure: no I/O and no clock (*now* is passed in). No message ever holds an identifier's
value: messages name fields, and quote only key names, event names and currency codes from
TikTok's own closed lists.

References (§) are to tiktok-events-api.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from forwarder.events import OutboxRow

# The builder's private helpers are reused on purpose, so that the lint and the builder agree
# on which key names may be quoted, when an event_time is milliseconds and how ages read.
from forwarder.payload import _FIELD_NAME as FIELD_NAME
from forwarder.payload import _MILLISECONDS_HINT as MILLISECONDS_HINT
from forwarder.payload import (
    DEFAULT_EVENT_SOURCE,
    EVENT_SOURCES,
    HASHED_LIST_KEYS,
    HASHED_SCALAR_KEYS,
    MATCH_KEYS,
    PAYLOAD_KEYS,
    PLAIN_KEYS,
    TOO_OLD,
    USER_KEYS,
    BuildOptions,
    Built,
    build,
    hash_identifier,
)
from forwarder.payload import _days as days
from forwarder.payload import _type_name as type_name

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem in an event; *message* never holds an identifier's value."""

    level: str  # ERROR or WARNING
    field: str  # e.g. "event", "properties.currency", "user.phone[0]"
    message: str  # what is wrong, what it costs, how to fix it


#: The columns ``forwarder enqueue`` takes (``forwarder.cli`` uses this tuple).
COLUMNS = (
    "event_id",
    "event",
    "event_time",
    "payload",
    "pixel_code",
    "event_source",
    "test_event_code",
)
_TEXT_COLUMNS = ("event_id", "event", "pixel_code", "event_source", "test_event_code")

#: §8.1: TikTok's standard web events (also offline, and CRM per the enum comment).
WEB_EVENTS = (
    "AddPaymentInfo",
    "AddToCart",
    "AddToWishlist",
    "ApplicationApproval",
    "CompleteRegistration",
    "Contact",
    "CustomizeProduct",
    "Download",
    "FindLocation",
    "InitiateCheckout",
    "Lead",
    "Purchase",
    "Schedule",
    "Search",
    "StartTrial",
    "SubmitApplication",
    "Subscribe",
    "ViewContent",
)
#: §8.3: TikTok's standard app events (note the casing of LaunchAPP, InAppADClick, InAppADImpr).
APP_EVENTS = (
    "AchieveLevel",
    "AddPaymentInfo",
    "AddToCart",
    "AddToWishlist",
    "Checkout",
    "CompleteTutorial",
    "CreateGroup",
    "CreateRole",
    "GenerateLead",
    "InAppADClick",
    "InAppADImpr",
    "InstallApp",
    "JoinGroup",
    "LaunchAPP",
    "LoanApplication",
    "LoanApproval",
    "LoanDisbursal",
    "Login",
    "Purchase",
    "Rate",
    "Registration",
    "Search",
    "SpendCredits",
    "StartTrial",
    "Subscribe",
    "UnlockAchievement",
    "ViewContent",
)
#: §8.2 (S7, 1 May 2025, web/offline/CRM): renamed events, auto-converted by TikTok.
RENAMED_EVENTS = {"CompletePayment": "Purchase", "SubmitForm": "Lead"}
#: §8.2: soft-deprecated events, supported until 2027 and then sunset, with what to use instead.
SUNSET_EVENTS = {
    "PlaceAnOrder": "Purchase (one Purchase per order, event_id = the order id)",
    "ClickButton": "a standard event for what the click means (Contact, Lead, ...) or a custom one",
}
#: Events that report a sale: without properties.value TikTok reports no revenue for them.
VALUE_EVENTS = frozenset(("Purchase", "CompletePayment", "PlaceAnOrder", "Subscribe"))

#: §2.4: the 62 ISO 4217 codes TikTok supports for properties.currency. Source: the field
#: comment of ``Properties.Currency`` in bububa/tiktok-business ``model/event/track.go`` (commit
#: 4d9271cf; a copy of the Events API 2.0 portal page), identical to the ``currency`` doc
#: comment in TikTok's official SDK, tiktok/tiktok-business-api-sdk
#: ``js_sdk/src/model/PixelProperties.js`` (commit a9ad75a3). Both list PHP twice.
# fmt: off
CURRENCIES = frozenset((
    "AED", "ARS", "AUD", "BDT", "BHD", "BIF", "BOB", "BRL", "CAD", "CHF", "CLP", "CNY",
    "COP", "CRC", "CZK", "DKK", "DZD", "EGP", "EUR", "GBP", "GTQ", "HKD", "HNL", "HUF",
    "IDR", "ILS", "INR", "ISK", "JPY", "KES", "KHR", "KRW", "KWD", "KZT", "MAD", "MOP",
    "MXN", "MYR", "NGN", "NIO", "NOK", "NZD", "OMR", "PEN", "PHP", "PKR", "PLN", "PYG",
    "QAR", "RON", "RUB", "SAR", "SEK", "SGD", "THB", "TRY", "TWD", "UAH", "USD", "VES",
    "VND", "ZAR",
))
# fmt: on
#: §2.4: the content_type values.
CONTENT_TYPES = ("product", "product_group")

#: §3.3: TikTok's longest attribution window (click-through, 28 days; view-through is 7).
ATTRIBUTION_WINDOW_S = 28 * 86400.0
#: The builder sends future times as now; a few minutes of clock skew is not worth a warning.
FUTURE_TOLERANCE_S = 5 * 60.0
#: Edit distance (case-insensitive) within which an unknown name is taken for a misspelling.
MAX_TYPO_DISTANCE = 2

_PERSONAL_MATCH_KEYS = frozenset(HASHED_LIST_KEYS)
_SINGLE_MATCH_KEYS = frozenset(("email", "phone", "external_id", "ttclid", "ttp"))
_NO_KEYS: frozenset[str] = frozenset()
_HEX = re.compile(r"[0-9a-fA-F]+")
#: Hex digests of the wrong algorithm, by length.
_WRONG_DIGESTS = {32: "an MD5", 40: "a SHA-1"}
_SHA256_HEX_LEN = 64
#: A builder reason or warning starts with the field it is about, e.g. "payload.user.phone[0]".
_LEADING_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*|\[\d+\])*")
#: Placeholder pixel for the builder: a missing pixel_code is fine (TIKTOK_PIXEL_CODE is used).
_LINT_PIXEL = "LINT"


def lint(
    document: object, *, now: float, phone_region: str | None, max_age_s: float
) -> list[Finding]:
    """Return the problems in one ``enqueue`` document, errors first; [] for a clean event."""
    if not isinstance(document, dict):
        return [
            Finding(
                ERROR,
                "document",
                f"the event must be a JSON object of outbox columns, got {type_name(document)}; "
                f"enqueue refuses it. Columns: {', '.join(COLUMNS)}",
            )
        ]
    findings: list[Finding] = []
    findings.extend(_columns(document))
    source = _source(document.get("event_source", DEFAULT_EVENT_SOURCE))
    event = document.get("event")
    name = event.strip() if isinstance(event, str) else None
    if name and source:
        findings.extend(_event_name(name, source))
    findings.extend(_event_time(document.get("event_time"), now, max_age_s))
    body, body_findings = _payload(document.get("payload"))
    findings.extend(body_findings)
    if body is not None:  # an unusable payload is reported once, not once per thing it lacks
        findings.extend(_payload_contents(body, name, source, phone_region))

    result = build(_row(document, now), _options(phone_region, max_age_s), now)
    if isinstance(result, Built):
        for warning in result.warnings:
            field = _leading_field(warning)
            if field != "event_time" and not _covered(field, findings):
                findings.append(Finding(WARNING, field, warning))
    else:
        field = _leading_field(result.reason)
        if not _covered(field, findings, ERROR):
            cost = (
                "the daemon dead-letters it without sending"
                if result.code == TOO_OLD
                else "enqueue refuses the event and the daemon would dead-letter it"
            )
            findings.append(Finding(ERROR, field, f"{result.reason}; {cost}"))

    user = body.get("user") if body is not None else None
    if body is not None and (user is None or isinstance(user, dict)):
        # Built.match_keys is what is really sent, after drops and consent; a refused event
        # has none, so the keys as written stand in.
        keys = result.match_keys if isinstance(result, Built) else _raw_match_keys(user)
        findings.extend(_match_keys(keys, source))
    return sorted(findings, key=lambda finding: finding.level != ERROR)


# --- columns and event ----------------------------------------------------------------------


def _columns(document: Mapping[Any, Any]) -> Iterator[Finding]:
    for key in document:
        if key in COLUMNS:
            continue
        where = "; it belongs inside payload" if key in PAYLOAD_KEYS else ""
        yield Finding(
            ERROR,
            key if _quotable(key) else "document",
            f"{_key_text(key, 'column')}: enqueue refuses the event{where}. "
            f"Columns: {', '.join(COLUMNS)}",
        )
    for name in _TEXT_COLUMNS:
        if name in document and not isinstance(document[name], str):
            yield Finding(
                ERROR,
                name,
                f"{name} must be a string, got {type_name(document[name])}; "
                "enqueue refuses the event",
            )


def _source(value: object) -> str | None:
    # The builder's rule: blank means web; anything outside EVENT_SOURCES is refused by it.
    if not isinstance(value, str):
        return None
    source = value.strip() or DEFAULT_EVENT_SOURCE
    return source if source in EVENT_SOURCES else None


def _event_name(name: str, source: str) -> Iterator[Finding]:
    # §8: names are case-sensitive; the standard list depends on event_source.
    standard = APP_EVENTS if source == "app" else WEB_EVENTS
    if name in standard:
        return
    if source != "app" and name in RENAMED_EVENTS:
        new = RENAMED_EVENTS[name]
        yield Finding(
            WARNING,
            "event",
            f"{name} is the legacy name of {new}: since May 2025 TikTok converts it to {new} "
            f"on its side, but a Pixel sending {new} will not deduplicate against it (the key "
            f"is event + event_id); send {new}",
        )
        return
    if source != "app" and name in SUNSET_EVENTS:
        yield Finding(
            WARNING,
            "event",
            f"{name} is soft-deprecated: TikTok supports it until 2027, then sunsets it, and "
            f"its history cannot move to another event; switch now to {SUNSET_EVENTS[name]}",
        )
        return
    if source == "web" and name.lower() == "pageview":
        yield Finding(
            WARNING,
            "event",
            "PageView is not a TikTok standard event: the Pixel reports page views in the "
            "browser, and sent server-side it is a custom event TikTok does not optimise on; "
            "track page views with the Pixel only",
        )
        return
    suggestion = _suggest(name, source)
    if suggestion is not None:
        yield Finding(
            ERROR if source == "offline" else WARNING,
            "event",
            f"not a standard event name (names are case-sensitive): did you mean "
            f"{suggestion}? As written it is a custom event, which TikTok will not optimise on",
        )
    elif source == "offline":
        yield Finding(
            ERROR,
            "event",
            "custom event: offline event sets accept standard events only (§8.1); use one of "
            + ", ".join(WEB_EVENTS),
        )
    elif source in ("web", "app"):
        other = WEB_EVENTS if source == "app" else APP_EVENTS
        note = (
            " (a standard web event, not an app one)"
            if source == "app"
            else " (a standard app event, not a web one)"
        )
        note = note if name in other else ""
        yield Finding(
            WARNING,
            "event",
            f"custom event{note}: TikTok will not optimise on it; use a standard {source} "
            "event if one fits",
        )
    # crm: custom names are what the field comment asks for (§2.2), so they are not reported.


def _suggest(name: str, source: str) -> str | None:
    """Return the standard name *name* looks like a misspelling of, or None."""
    candidates: dict[str, str] = {n: n for n in (APP_EVENTS if source == "app" else WEB_EVENTS)}
    if source != "app":
        candidates.update(RENAMED_EVENTS)
        candidates.update({old: old for old in SUNSET_EVENTS})
    lowered = name.lower()
    best: tuple[int, str] | None = None
    for candidate, meant in candidates.items():
        distance = _edit_distance(lowered, candidate.lower(), MAX_TYPO_DISTANCE)
        if distance <= MAX_TYPO_DISTANCE and (best is None or distance < best[0]):
            best = (distance, meant)
    return None if best is None else best[1]


def _edit_distance(a: str, b: str, limit: int) -> int:
    """Levenshtein distance of *a* and *b*, or limit + 1 once it is certainly larger."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b))
            )
        if min(current) > limit:
            return limit + 1
        previous = current
    return previous[-1]


def _event_time(value: object, now: float, max_age_s: float) -> Iterator[Finding]:
    # §2.2: integer Unix seconds, UTC. Absent, the daemon uses the insert time.
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        yield Finding(
            ERROR,
            "event_time",
            f"event_time must be an integer of Unix seconds, got {type_name(value)}; "
            "enqueue refuses the event",
        )
        return
    if value >= MILLISECONDS_HINT:
        yield Finding(
            ERROR,
            "event_time",
            "event_time looks like milliseconds: the daemon would send the event as happening "
            "now, moving it away from the click it follows; divide by 1000",
        )
        return
    ahead = value - now
    if ahead > FUTURE_TOLERANCE_S:
        yield Finding(
            WARNING,
            "event_time",
            f"event_time is {ahead / 60:.0f} minutes in the future: the daemon clamps it to "
            "the send time, so TikTok records the wrong time; check the clock and that the "
            "time is UTC Unix seconds",
        )
    age = now - value
    if age > max_age_s:
        yield Finding(
            ERROR,
            "event_time",
            f"event_time is {days(age)} days old, older than FORWARDER_MAX_EVENT_AGE "
            f"({days(max_age_s)} days): the daemon dead-letters it without sending; send "
            "events as they happen",
        )
    elif age > ATTRIBUTION_WINDOW_S:
        yield Finding(
            WARNING,
            "event_time",
            f"event_time is {days(age)} days old, outside TikTok's attribution windows (28 "
            "days click-through, 7 view-through): TikTok will not match it to an ad",
        )


# --- payload ------------------------------------------------------------------------------


def _payload(raw: object) -> tuple[dict[str, Any] | None, list[Finding]]:
    """Return the payload object to inspect (None when unusable) and the findings on its keys."""
    if isinstance(raw, str):
        # Invalid JSON, or JSON that is not an object, is reported by the builder.
        try:
            raw = orjson.loads(raw) if raw.strip() else None
        except orjson.JSONDecodeError:
            return None, []
        if raw is not None and not isinstance(raw, dict):
            return None, []
    elif raw is not None and not isinstance(raw, dict):
        message = (
            f"payload must be a JSON object (or a string holding one), got {type_name(raw)}; "
            "enqueue refuses the event"
        )
        return None, [Finding(ERROR, "payload", message)]
    body: dict[str, Any] = raw or {}
    findings = [
        Finding(
            ERROR,
            f"payload.{key}" if _quotable(key) else "payload",
            f"{_key_text(key, 'payload key')}: the daemon refuses the event, as an unknown key "
            f"could carry personal data to TikTok; allowed: {', '.join(PAYLOAD_KEYS)} (event "
            "details go under properties)",
        )
        for key in body
        if key not in PAYLOAD_KEYS
    ]
    return body, findings


def _payload_contents(
    body: dict[str, Any], name: str | None, source: str | None, region: str | None
) -> Iterator[Finding]:
    user = body.get("user")
    if isinstance(user, dict):
        yield from _user(user, region)
    properties = body.get("properties")
    if isinstance(properties, dict):
        yield from _properties(properties)
    if name in VALUE_EVENTS and (properties is None or isinstance(properties, dict)):
        yield from _sale_value(properties or {}, name)
    if source:
        yield from _context(source, body)


def _user(user: dict[str, Any], region: str | None) -> Iterator[Finding]:
    for key in user:
        if key not in USER_KEYS:
            yield Finding(
                ERROR,
                f"user.{key}" if _quotable(key) else "user",
                f"{_key_text(key, 'user key')}: the daemon refuses the event, as it could carry "
                f"personal data; allowed: {', '.join(USER_KEYS)}",
            )
    for key in HASHED_LIST_KEYS + HASHED_SCALAR_KEYS:
        for field, raw in _strings(user.get(key), f"user.{key}"):
            yield from _identifier(key, field, raw, region)
    for key in PLAIN_KEYS:
        value = user.get(key)
        if not isinstance(value, str):
            continue  # a wrong type is refused by the builder
        if not value.strip():
            yield Finding(
                WARNING,
                f"user.{key}",
                f"user.{key} is empty: the daemon drops it; remove it or send the value",
            )
        elif key in ("ip", "user_agent") and _digest_name(value.strip()):
            yield Finding(
                WARNING,
                f"user.{key}",
                f"user.{key} looks hashed, but TikTok needs it raw (§6) and cannot match a "
                "hash of it; send the value as the browser or device gave it",
            )


def _strings(value: object, field: str) -> Iterator[tuple[str, str]]:
    # §2.3: a string or a list of strings; anything else is refused by the builder.
    if isinstance(value, str):
        yield field, value
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, str):
                yield f"{field}[{index}]", item


def _identifier(key: str, field: str, raw: str, region: str | None) -> Iterator[Finding]:
    # §6: a raw value is fine (the daemon normalises and hashes it), and so is a lower-case
    # SHA-256. What can be told from the value alone is checked here.
    value = raw.strip()
    if not value:
        yield Finding(WARNING, field, f"{field} is empty: the daemon drops it; remove it")
        return
    digest = _digest_name(value)
    if digest == "SHA-256":
        if value != value.lower():
            yield Finding(
                WARNING,
                field,
                f"{field} is a SHA-256 in upper-case hex: TikTok expects lower-case (the daemon "
                "lower-cases it, but the Pixel and other senders may not); lower-case it "
                "where it is hashed",
            )
        return
    if digest is not None:
        fix = "send the raw value (the daemon hashes it) or its SHA-256"
        if key == "external_id":
            yield Finding(
                WARNING,
                field,
                f"{field} looks like {digest} hash: if it is one, TikTok cannot match it "
                f"(it needs SHA-256): {fix}; if it is your own id as it is, ignore this",
            )
        else:
            yield Finding(
                ERROR,
                field,
                f"{field} looks like {digest} hash: TikTok needs SHA-256 of the normalised "
                f"value and this can match nobody; {fix}",
            )
        return
    if hash_identifier(key, raw, region) is None:
        yield Finding(WARNING, field, _dropped(key, field, region))


def _dropped(key: str, field: str, region: str | None) -> str:
    cost = "the daemon drops it, so TikTok cannot match on it"
    if key == "email":
        return f"{field} is not an email address: {cost}; send the full address"
    if key == "phone" and region:
        return (
            f"{field} is not a valid phone number for region {region}: {cost}; send it in "
            "E.164 (+ and country code)"
        )
    if key == "phone":
        return (
            f"{field} is not a valid international phone number (+ and country code), and "
            f"FORWARDER_PHONE_REGION is not set to read national numbers: {cost}; send it in "
            "E.164 or set FORWARDER_PHONE_REGION"
        )
    return f"{field} is empty once normalised: {cost}"


def _digest_name(value: str) -> str | None:
    """Name the hash *value* looks like the hex digest of ("SHA-256", "an MD5", ...), or None."""
    if not _HEX.fullmatch(value):
        return None
    if len(value) == _SHA256_HEX_LEN:
        return "SHA-256"
    return _WRONG_DIGESTS.get(len(value))


def _properties(properties: dict[str, Any]) -> Iterator[Finding]:
    # §2.4. A wrong type TikTok would reject (40002) is an error; a weak signal is a warning.
    value = properties.get("value")
    currency = properties.get("currency")
    if value is not None:
        if not _is_number(value):
            yield _not_a_number("properties.value", value, "the order total")
        elif value < 0:
            yield Finding(
                WARNING,
                "properties.value",
                "properties.value is negative: TikTok counts it as revenue and lowers reported "
                "ROAS; report refunds outside TikTok, send the order total",
            )
        if currency is None:
            yield Finding(
                WARNING,
                "properties.currency",
                "properties.value has no currency: TikTok cannot report it as revenue; add "
                "properties.currency (ISO 4217, e.g. USD)",
            )
    if currency is not None:
        yield from _currency(currency)
    contents = properties.get("contents")
    if isinstance(contents, list):
        for index, item in enumerate(contents):
            if isinstance(item, dict):
                yield from _content(item, f"properties.contents[{index}]")
        content_type = properties.get("content_type")
        if contents and content_type is None:
            yield Finding(
                WARNING,
                "properties.content_type",
                "contents without content_type: TikTok cannot tell sku ids from item group "
                'ids to match your catalog; TikTok recommends "product" (content_type: '
                '"product" when content_id is the sku_id)',
            )
        elif content_type is not None and content_type not in CONTENT_TYPES:
            yield Finding(
                WARNING,
                "properties.content_type",
                'properties.content_type must be "product" (content_id is the sku_id) or '
                '"product_group" (item_group_id); other values do not match the catalog',
            )


def _currency(currency: object) -> Iterator[Finding]:
    if not isinstance(currency, str):
        yield Finding(
            ERROR,
            "properties.currency",
            f"properties.currency must be an ISO 4217 code string, got {type_name(currency)}; "
            "TikTok rejects the request",
        )
        return
    if currency in CURRENCIES:
        return
    code = currency.strip().upper()
    hint = (
        f"write it as {code}"
        if code in CURRENCIES
        else "convert the value to a supported currency, e.g. USD or EUR"
    )
    yield Finding(
        ERROR,
        "properties.currency",
        f"properties.currency is not one of the {len(CURRENCIES)} upper-case ISO 4217 codes "
        f"TikTok supports: TikTok cannot report this revenue; {hint}",
    )


def _content(item: dict[str, Any], field: str) -> Iterator[Finding]:
    content_id = item.get("content_id")
    if content_id is None:
        yield Finding(
            WARNING,
            f"{field}.content_id",
            f"{field} has no content_id: TikTok cannot match the item to your catalog; send "
            "the sku_id (or item_group_id) as a string",
        )
    elif not isinstance(content_id, str):
        yield Finding(
            ERROR,
            f"{field}.content_id",
            f"{field}.content_id must be a string, got {type_name(content_id)}: TikTok "
            'rejects the request (40002 "Not a valid string"); quote it, e.g. "1077218"',
        )
    price = item.get("price")
    if price is not None and not _is_number(price):
        yield _not_a_number(f"{field}.price", price, "the unit price")
    quantity = item.get("quantity")
    if quantity is not None and (isinstance(quantity, bool) or not isinstance(quantity, int)):
        yield Finding(
            WARNING,
            f"{field}.quantity",
            f"{field}.quantity should be a whole number, got {type_name(quantity)}: TikTok "
            "may ignore it; send an integer such as 2",
        )


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _not_a_number(field: str, value: object, what: str) -> Finding:
    if isinstance(value, str) and _is_numeric_text(value):
        problem = f'{field} is a number in a string: send it as a JSON number (12.5, not "12.5")'
    else:
        problem = (
            f"{field} must be a number ({what}, no currency symbol or thousands separator), "
            f"got {type_name(value)}"
        )
    return Finding(ERROR, field, f"{problem}; the daemon refuses the event (TikTok would too)")


def _is_numeric_text(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _sale_value(properties: dict[str, Any], name: str) -> Iterator[Finding]:
    if properties.get("value") is None:
        yield Finding(
            WARNING,
            "properties.value",
            f"{name} without properties.value: TikTok reports no revenue for it and cannot "
            "optimise for value (ROAS); add the order total and its currency",
        )


def _context(source: str, body: dict[str, Any]) -> Iterator[Finding]:
    # §2.2: page is required for web events and app for app events. Neither is refused by the
    # builder, and no source shows TikTok rejecting their absence, so both are warnings.
    for wanted, key, sub in (("web", "page", "url"), ("app", "app", "app_id")):
        container = body.get(key)
        if source != wanted or not (container is None or isinstance(container, dict)):
            continue
        value = (container or {}).get(sub)
        field = f"{key}.{sub}"
        if value is not None and not isinstance(value, str):
            yield Finding(
                ERROR,
                field,
                f"{field} must be a string, got {type_name(value)}; TikTok rejects the request",
            )
        elif not (value and value.strip()):
            what = (
                "the full page URL (location.href, with its query string, where ttclid is)"
                if key == "page"
                else "the App Store id or the Android package name"
            )
            yield Finding(
                WARNING,
                field,
                f"{source} event without {field}: TikTok's docs require it (§2.2) and use it "
                f"for matching and diagnostics; send {what}",
            )


# --- match keys ---------------------------------------------------------------------------


def _raw_match_keys(user: object) -> frozenset[str]:
    # Only when the builder refused the event: the keys as written, before any drop.
    if not isinstance(user, dict):
        return _NO_KEYS
    return frozenset(
        key for key in MATCH_KEYS if any(raw.strip() for _, raw in _strings(user.get(key), key))
    )


def _match_keys(keys: frozenset[str], source: str | None) -> Iterator[Finding]:
    # §2.3: what TikTok matches an event to a person or an ad click with.
    pair = "ip" in keys and "user_agent" in keys
    if not keys & _SINGLE_MATCH_KEYS and not pair:
        yield Finding(
            WARNING,
            "user",
            "no match key: TikTok cannot attribute this event to a person or an ad; send at "
            "least one of email, phone, external_id, ttclid, ttp, or ip with user_agent "
            "(identifiers the daemon drops as invalid, or withholds for want of "
            "ad_user_data consent, do not count)",
        )
    for has, lacks in (("ip", "user_agent"), ("user_agent", "ip")):
        if has in keys and lacks not in keys:
            yield Finding(
                WARNING,
                f"user.{lacks}",
                f"user.{has} without user.{lacks}: TikTok matches on the two together, so "
                f"{has} alone adds little; send both",
            )
    if source == "web" and not keys & {"ttclid", "ttp"}:
        yield Finding(
            WARNING,
            "user.ttclid",
            "no ttclid or ttp: click attribution relies on the ttclid landing-page parameter "
            "and the _ttp cookie, so this event can match only through email, phone or "
            "ip+user_agent; pass ttclid (from the URL or its cookie) and the _ttp cookie",
        )


# --- the builder ----------------------------------------------------------------------------


def _row(document: Mapping[str, Any], now: float) -> OutboxRow:
    """The outbox row ``forwarder enqueue`` would insert for *document*."""
    raw = document.get("payload", "{}")
    if isinstance(raw, dict):
        try:
            raw = orjson.dumps(raw).decode()
        except TypeError:  # orjson.JSONEncodeError; only from a non-JSON Python object
            raw = None
    return OutboxRow(
        id=0,
        event_id=document.get("event_id", ""),
        event=document.get("event", ""),
        event_time=document.get("event_time"),
        payload=raw,
        pixel_code=document.get("pixel_code", ""),
        event_source=document.get("event_source", DEFAULT_EVENT_SOURCE),
        test_event_code=document.get("test_event_code", ""),
        attempts=0,
        created_at=now,
    )


def _options(phone_region: str | None, max_age_s: float) -> BuildOptions:
    # Consent granted so identifiers are checked as if sent; a missing pixel_code is not a
    # problem of the event (TIKTOK_PIXEL_CODE is used), so the builder gets a placeholder.
    return BuildOptions(
        default_pixel=_LINT_PIXEL,
        phone_region=phone_region or None,
        consent_default="granted",
        max_age_s=max_age_s,
        test_event_code=None,
    )


def _leading_field(text: str) -> str:
    """The field a builder reason or warning is about, in the lint's naming."""
    match = _LEADING_FIELD.match(text)
    field = match.group(0) if match else "document"
    if field.startswith("payload."):
        return field.removeprefix("payload.")
    return field if field in COLUMNS or "." in field or "[" in field else "document"


def _covered(field: str, findings: list[Finding], level: str | None = None) -> bool:
    """Whether a finding (of *level*) is already about *field*, or inside or around it."""
    return any(
        (level is None or finding.level == level) and _related(field, finding.field)
        for finding in findings
    )


def _related(a: str, b: str) -> bool:
    return a == b or _inside(a, b) or _inside(b, a)


def _inside(a: str, b: str) -> bool:
    return a.startswith((b + ".", b + "["))


def _quotable(key: object) -> bool:
    """Whether *key* may be quoted: a field name, not something that might be personal data."""
    return isinstance(key, str) and FIELD_NAME.fullmatch(key) is not None


def _key_text(key: object, what: str) -> str:
    if _quotable(key):
        return f"unknown {what} {key!r}"
    return f"an unknown {what} (not shown: it does not look like a field name)"
