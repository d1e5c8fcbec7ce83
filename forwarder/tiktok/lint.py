"""Lint one event as TikTok's Payload Helper would: ``forwarder check --payload FILE``.

The input is one event exactly as ``forwarder enqueue`` takes it: a JSON object of outbox columns
(``event_id``, ``event``, ``event_time``, ``event_source``, ``pixel_code``, ``test_event_code``
and ``payload``, an object or a JSON string of one); ``forwarder.shapes`` turns TikTok's own
shapes into such objects. The lint reports

* as an **error** exactly what the daemon refuses. It builds the event with ``payload.build``,
  the daemon's own code reading ``forwarder.schema``'s table, and reports the refusal with its
  reason code (``malformed/<rule>`` or ``too_old/age``) as the daemon stores it; then it sets
  that field aside and builds again, so that every refused field is reported, not only the
  first. The one other error is what ``enqueue`` refuses before a row exists: an unknown column.
* as a **warning** what is sent but costs matching, attribution or optimisation: what the
  builder drops, the fields it had to fix (a lower-case currency, a number in a string), and
  what TikTok does with a name, a hash or an event time.

It is pure: no I/O and no clock (*now* is passed in). No message ever holds an identifier's
value: messages name fields, and quote only key names, event names and currency codes from
TikTok's own closed lists.

References (§) are to tiktok-events-api.md.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from forwarder.events import OutboxRow
from forwarder.tiktok import schema

# The builder's own constants and wording are reused, so that the lint and the builder agree
# on which key names may be quoted, when an event_time is milliseconds and how ages read.
from forwarder.tiktok.build import TOO_OLD, BuildOptions, Built, Refused, build
from forwarder.tiktok.build_row import (
    CONSENT_KEYS,
    DEFAULT_EVENT_SOURCE,
    MILLISECONDS_HINT,
    PAYLOAD_KEYS,
)
from forwarder.tiktok.checks import (
    AGE,
    FIELD_NAME,
    MISSING,
    SOURCE,
    UNKNOWN_KEY,
    days,
    type_name,
)
from forwarder.tiktok.normalise import hash_identifier
from forwarder.tiktok.spec import (
    APP_EVENTS,
    CURRENCIES,
    EVENT_SOURCES,
    HASHED_LIST_KEYS,
    HASHED_SCALAR_KEYS,
    PLAIN_KEYS,
    RENAMED_EVENTS,
    SUNSET_EVENTS,
    USER_KEYS,
    WEB_EVENTS,
)

__all__ = ["COLUMNS", "ERROR", "WARNING", "Finding", "lint"]

ERROR = "error"
WARNING = "warning"
#: The code of the one error the builder does not give: a column ``enqueue`` does not know.
ENQUEUE_UNKNOWN_COLUMN = f"enqueue/{UNKNOWN_KEY}"


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem in an event; *message* never holds an identifier's value."""

    level: str  # ERROR or WARNING
    field: str  # e.g. "event", "properties.currency", "user.phone[0]"
    message: str  # what is wrong, what it costs, how to fix it
    code: str = ""  # an error's reason code, as the daemon stores it: "malformed/value", ...


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
#: Events that report a sale: without properties.value TikTok reports no revenue for them.
VALUE_EVENTS = frozenset(("Purchase", "CompletePayment", "PlaceAnOrder", "Subscribe"))

#: §3.3: TikTok's longest attribution window (click-through, 28 days; view-through is 7).
ATTRIBUTION_WINDOW_S = 28 * 86400.0
#: The builder sends future times as now; a few minutes of clock skew is not worth a warning.
FUTURE_TOLERANCE_S = 5 * 60.0
#: Edit distance (case-insensitive) within which an unknown name is taken for a misspelling.
MAX_TYPO_DISTANCE = 2

_SINGLE_MATCH_KEYS = frozenset(("email", "phone", "external_id", "ttclid", "ttp"))
_NO_KEYS: frozenset[str] = frozenset()
_HEX = re.compile(r"[0-9a-fA-F]+")
#: Hex digests of the wrong algorithm, by length.
_WRONG_DIGESTS = {32: "an MD5", 40: "a SHA-1"}
_SHA256_HEX_LEN = 64
#: A builder warning starts with the field it is about, e.g. "user.phone[0]".
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
                ENQUEUE_UNKNOWN_COLUMN,
            )
        ]
    findings = list(_columns(document))
    refusals, built = refusals_of(document, now=now, phone_region=phone_region, max_age_s=max_age_s)
    findings.extend(_error(refused, document) for refused in refusals)
    source = _source(document.get("event_source", DEFAULT_EVENT_SOURCE))
    event = document.get("event")
    name = event.strip() if isinstance(event, str) else None
    advice: list[Finding] = []
    if name and source:
        advice.extend(_event_name(name, source))
    advice.extend(_event_time(document.get("event_time"), now, max_age_s))
    body = _payload(document.get("payload"))
    if body is not None:  # an unusable payload is reported once, not once per thing it lacks
        advice.extend(_payload_contents(body, name, source, phone_region))
    if built is not None:
        advice.extend(_fixed(document, body, built))
        for warning in built.warnings:
            field = _leading_field(warning)
            if field != "event_time" and not _covered(field, advice):
                advice.append(Finding(WARNING, field, warning))
        user = body.get("user") if body is not None else None
        if body is not None and (user is None or isinstance(user, dict)):
            # Built.match_keys is what is really sent, after drops and consent.
            advice.extend(_match_keys(built.match_keys, source))
    errors = list(findings)
    findings.extend(finding for finding in advice if not _covered(finding.field, errors))
    return sorted(findings, key=lambda finding: finding.level != ERROR)


# --- the builder's refusals -----------------------------------------------------------------

#: More refusals than fields in any event: the bound of refusals_of's loop.
_MAX_REFUSALS = 100
#: What a refused column is set to so that the builder can go on to the next field.
_PLACEHOLDERS: dict[str, object] = {
    "event_id": "lint",
    "event": "Purchase",
    "event_source": DEFAULT_EVENT_SOURCE,
    "pixel_code": "",
    "test_event_code": "",
    "event_time": None,
}
#: The objects whose keys are a closed list, for an unknown key the reason could not name.
_ALLOWED = {
    "payload": PAYLOAD_KEYS,
    "payload.user": USER_KEYS,
    "payload.consent": CONSENT_KEYS,
}
_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def refusals_of(
    document: Mapping[str, Any], *, now: float, phone_region: str | None, max_age_s: float
) -> tuple[list[Refused], Built | None]:
    """Every refusal of the builder for *document*, in order, and what it builds without them.

    After each refusal the refused field is set aside (removed, or a required one given a
    placeholder) and the event built again; the Built is None when the payload itself is unusable.
    """
    columns = {key: value for key, value in document.items() if key in COLUMNS}
    columns["payload"] = _editable(columns.get("payload", "{}"))
    options = _options(phone_region, max_age_s)
    refusals: list[Refused] = []
    for _ in range(_MAX_REFUSALS):
        result = build(_row(columns, now), options, now)
        if isinstance(result, Built):
            return refusals, result
        if any((r.field, r.rule) == (result.field, result.rule) for r in refusals):
            break  # setting the field aside did not help: stop rather than repeat it
        refusals.append(result)
        if not _set_aside(columns, result, now):
            break
    return refusals, None


def _editable(raw: object) -> object:
    """The payload as a fresh object the lint may change, or as given when it is not one."""
    if isinstance(raw, str):
        try:
            parsed = orjson.loads(raw) if raw.strip() else {}
        except orjson.JSONDecodeError:
            return raw
        return parsed if isinstance(parsed, dict) else raw
    if isinstance(raw, dict):
        try:
            copied: object = orjson.loads(orjson.dumps(raw))
        except TypeError:  # orjson.JSONEncodeError; only from a non-JSON Python object
            return raw
        return copied
    return raw


def _set_aside(columns: dict[str, Any], refused: Refused, now: float) -> bool:
    """Change *columns* so that the builder gets past *refused*; False when it cannot."""
    field, rule = refused.field, refused.rule
    if rule == AGE:
        columns["event_time"] = int(now)
        return True
    if field in _PLACEHOLDERS:
        columns[field] = _PLACEHOLDERS[field]
        return True
    body = columns.get("payload")
    if not isinstance(body, dict) or not field.startswith("payload"):
        return False  # the payload itself is unusable: nothing more can be checked
    if rule == UNKNOWN_KEY and field in _ALLOWED:
        # An unknown key not fit to quote: every such key of that object goes.
        target = body if field == "payload" else body.get(field.split(".")[1])
        if isinstance(target, dict):
            for key in [key for key in target if key not in _ALLOWED[field]]:
                del target[key]
            return True
        return False
    parts: list[str | int] = [
        int(index) if index else name for name, index in _PATH_PART.findall(field)
    ][1:]
    return _set_aside_at(body, parts, rule)


def _set_aside_at(body: dict[str, Any], parts: list[str | int], rule: str) -> bool:
    if not parts:
        return False
    node: Any = body
    for part in parts[:-1]:
        child = node.get(part) if isinstance(node, dict) else None
        if child is None and rule == MISSING and isinstance(part, str):
            child = node[part] = {}  # a required field of an absent object
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            child = node[part]
        if not isinstance(child, dict | list):
            return False
        node = child
    last = parts[-1]
    if rule == MISSING and isinstance(node, dict):
        node[last] = "lint"
    elif isinstance(node, dict) and last in node:
        del node[last]
    elif isinstance(node, list) and isinstance(last, int) and last < len(node):
        if parts[-2:-1] == ["contents"]:
            node[last] = {}  # an item that is not an object: the others are still checked
        else:
            return _set_aside_at(body, parts[:-1], rule)  # the list holding it goes
    else:
        return False
    return True


def _error(refused: Refused, document: Mapping[str, Any]) -> Finding:
    """The lint's error for one of the builder's refusals, with the daemon's reason code."""
    field = _lint_field(refused.field)
    reason = refused.reason.removeprefix(f"[{refused.reason_code}] ")
    cost = (
        "the daemon dead-letters it without sending"
        if refused.code == TOO_OLD
        else "enqueue refuses the event and the daemon would dead-letter it"
    )
    hint = _expected(refused)
    name = document.get("event")
    if refused.rule == SOURCE and refused.field == "event" and isinstance(name, str):
        suggestion = _suggest(name.strip(), "offline")
        if suggestion is not None:
            hint = f"; did you mean {suggestion}?"
    return Finding(ERROR, field, f"{reason}{hint}; {cost}", refused.reason_code)


#: How the lint words each type of schema's table.
_TYPE_WORDS = {
    "string": "a string",
    "id": "a string (an id)",
    "number": "a number",
    "integer": "a whole number",
    "boolean": "true or false",
    "currency": f"one of the {len(CURRENCIES)} ISO 4217 codes it lists",
    "content_type": '"product" or "product_group"',
    "att_status": "one of the five ATT states",
    "object": "an object",
    "list": "a list of objects",
    "id list": "a list of strings (ids)",
    "hashed list": "a string or a list of strings",
    "hashed": "a string",
}
#: What a required field holds, for the error saying it is missing.
_REQUIRED_HINTS = {
    "app.app_id": "the App Store id (digits) or the Android package name",
    "lead.lead_id": "the TikTok lead id (from Leads Center or /page/lead/task/)",
}


def _expected(refused: Refused) -> str:
    """What schema's table says the refused field should be, for the error's last clause."""
    path = re.sub(r"\[\d+\]", "[]", refused.field.removeprefix("payload."))
    field = schema.BY_PATH.get(path)
    if refused.rule == SOURCE and refused.field == "event":
        return f"; use one of {', '.join(WEB_EVENTS)}"
    if field is None or refused.rule not in ("type", "value", MISSING):
        return ""
    if refused.rule == MISSING and path in _REQUIRED_HINTS:
        return f"; send {_REQUIRED_HINTS[path]}"
    fix = f"; the daemon fixes: {field.fix}" if field.fix else ""
    return f" (TikTok's type: {_TYPE_WORDS[field.type]}{fix})"


def _lint_field(field: str) -> str:
    """A builder field in the lint's naming: TikTok's (``user.ip``), not the outbox's."""
    if field == "payload" or (field.startswith("payload.") and field.count(".") == 1):
        name = field.removeprefix("payload.")
        return name if name in PAYLOAD_KEYS else field
    return field.removeprefix("payload.")


# --- columns and event ----------------------------------------------------------------------


def _columns(document: Mapping[Any, Any]) -> Iterator[Finding]:
    # The columns' types are the builder's to check; their names are enqueue's.
    for key in document:
        if key in COLUMNS:
            continue
        where = "; it belongs inside payload" if key in PAYLOAD_KEYS else ""
        yield Finding(
            ERROR,
            key if _quotable(key) else "document",
            f"{_key_text(key, 'column')}: enqueue refuses the event{where}. "
            f"Columns: {', '.join(COLUMNS)}",
            ENQUEUE_UNKNOWN_COLUMN,
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
    # §2.2: integer Unix seconds, UTC. Absent, the daemon uses the insert time; of another
    # type, the builder refuses it.
    if isinstance(value, float) and math.isfinite(value):
        if not value.is_integer():
            yield Finding(
                WARNING,
                "event_time",
                "event_time has a fraction of a second: the daemon truncates it to whole "
                "seconds, as TikTok takes integer Unix seconds; send an integer",
            )
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        return
    if value >= MILLISECONDS_HINT:
        yield Finding(
            WARNING,
            "event_time",
            "event_time looks like milliseconds: the daemon sends the event as happening "
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
    if ATTRIBUTION_WINDOW_S < age <= max_age_s:  # older than max_age_s, the builder refuses it
        yield Finding(
            WARNING,
            "event_time",
            f"event_time is {days(age)} days old, outside TikTok's attribution windows (28 "
            "days click-through, 7 view-through): TikTok will not match it to an ad",
        )


# --- payload ------------------------------------------------------------------------------


def _payload(raw: object) -> dict[str, Any] | None:
    """Return the payload object to inspect, or None when unusable (the builder says why)."""
    if isinstance(raw, str):
        try:
            raw = orjson.loads(raw) if raw.strip() else None
        except orjson.JSONDecodeError:
            return None
    if raw is not None and not isinstance(raw, dict):
        return None
    return raw or {}


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
    # Unknown keys and wrong types are the builder's to refuse.
    for key in HASHED_LIST_KEYS + HASHED_SCALAR_KEYS:
        for field, raw in _strings(user.get(key), f"user.{key}"):
            yield from _identifier(key, field, raw, region)
    for key in PLAIN_KEYS:
        value = user.get(key)
        if not isinstance(value, str):
            continue
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
        elif key == "ip" and not _public(value.strip()):
            yield Finding(
                WARNING,
                "user.ip",
                "user.ip is not a public address (a private, loopback or link-local one, such "
                "as a proxy's): TikTok matches on the public IP of the device (§2.3); send the "
                "client's address (e.g. from X-Forwarded-For)",
            )


#: Addresses a device behind a proxy or NAT is not seen from: RFC 1918, shared and unique local.
_PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(network)
    for network in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
)


def _public(text: str) -> bool:
    """Whether *text* is not a private, loopback or link-local address (nor not an address)."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return True  # not an address: the builder drops it and says so
    if address.is_loopback or address.is_link_local:
        return False
    return not any(address in network for network in _PRIVATE_NETWORKS)


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
                WARNING,
                field,
                f"{field} looks like {digest} hash: TikTok needs SHA-256 of the normalised "
                f"value, so the daemon drops it and it can match nobody; {fix}",
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
    # §2.4. A wrong type or value is the builder's to refuse; a weak signal is a warning here.
    value = properties.get("value")
    currency = properties.get("currency")
    if value is not None:
        if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
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
    contents = properties.get("contents")
    if isinstance(contents, list):
        for index, item in enumerate(contents):
            if isinstance(item, dict) and item.get("content_id") is None:
                yield Finding(
                    WARNING,
                    f"properties.contents[{index}].content_id",
                    f"properties.contents[{index}] has no content_id: TikTok cannot match the "
                    "item to your catalog; send the sku_id (or item_group_id) as a string",
                )
        if contents and properties.get("content_type") is None:
            yield Finding(
                WARNING,
                "properties.content_type",
                "contents without content_type: TikTok cannot tell sku ids from item group "
                'ids to match your catalog; TikTok recommends "product" (content_type: '
                '"product" when content_id is the sku_id)',
            )


def _sale_value(properties: dict[str, Any], name: str) -> Iterator[Finding]:
    if properties.get("value") is None:
        yield Finding(
            WARNING,
            "properties.value",
            f"{name} without properties.value: TikTok reports no revenue for it and cannot "
            "optimise for value (ROAS); add the order total and its currency",
        )


def _context(source: str, body: dict[str, Any]) -> Iterator[Finding]:
    # §2.2: page.url is required for web events, yet no source shows TikTok rejecting an event
    # without it (schema.WARN_IF_ABSENT), so the builder sends it and this is a warning.
    page = body.get("page")
    if source not in schema.BY_PATH["page.url"].required or not (
        page is None or isinstance(page, dict)
    ):
        return
    url = (page or {}).get("url")
    if not (isinstance(url, str) and url.strip()):
        yield Finding(
            WARNING,
            "page.url",
            f"{source} event without page.url: TikTok's docs require it (§2.2) and use it for "
            "matching and diagnostics; send the full page URL (location.href, with its query "
            "string, where ttclid is)",
        )


def _fixed(
    document: Mapping[str, Any], body: dict[str, Any] | None, built: Built
) -> Iterator[Finding]:
    """A warning for each field the builder had to fix (schema's "fix"), never quoting it.

    A fixed event_time is _event_time's to report (a fraction, or a time in the future).
    """
    if body is None:
        return
    for key in ("properties", "page", "app", "ad", "lead", "user"):
        given, sent = body.get(key), built.event.get(key)
        if isinstance(given, dict) and isinstance(sent, dict):
            yield from _fixed_fields(given, sent, key)


def _fixed_fields(given: dict[str, Any], sent: dict[str, Any], where: str) -> Iterator[Finding]:
    for key, value in given.items():
        if key not in sent:
            continue
        path = f"{where}.{key}"
        field = schema.BY_PATH.get(re.sub(r"\[\d+\]", "[]", path))
        if field is None or field.type.startswith("hashed"):
            continue  # a custom property, or an identifier the builder hashes
        out = sent[key]
        if isinstance(value, list) and isinstance(out, list) and len(value) == len(out):
            for index, (item, sent_item) in enumerate(zip(value, out, strict=True)):
                if isinstance(item, dict) and isinstance(sent_item, dict):
                    yield from _fixed_fields(item, sent_item, f"{path}[{index}]")
                elif type(item) is not type(sent_item) or item != sent_item:
                    yield _fix_warning(f"{path}[{index}]", field.fix)
        elif type(value) is not type(out) or value != out:
            yield _fix_warning(path, field.fix)


def _fix_warning(path: str, fix: str) -> Finding:
    return Finding(
        WARNING,
        path,
        f"{path} was normalised by the daemon ({fix}) and is sent so; write it that way, as "
        "the Pixel and other senders of the same event may not",
    )


# --- match keys ---------------------------------------------------------------------------


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
    if not isinstance(raw, str):
        # enqueue writes any other JSON value as its JSON text, which the builder then reads.
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
