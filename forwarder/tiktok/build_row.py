"""Read one outbox row as the builder does: its text columns, its event_time, its payload's JSON
and the payload's consent object, each refused with a reason naming the field when it is wrong.

docs/contract.md is what an application may write in a row; ``forwarder.tiktok.build`` turns it
into TikTok's event, inlining the usual cases of these readers and calling them for the rest.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from forwarder.tiktok.checks import (
    JSON,
    MISSING,
    TYPE,
    UNKNOWN_KEY,
    VALUE,
    Invalid,
    key_path,
    type_name,
    unknown_key,
)

GRANTED = "granted"
DENIED = "denied"
#: docs/contract.md: the event_source of a row that names none.
DEFAULT_EVENT_SOURCE = "web"
#: docs/contract.md: the outbox columns an event is given as (``forwarder enqueue`` takes these).
COLUMNS = (
    "event_id",
    "event",
    "event_time",
    "payload",
    "pixel_code",
    "event_source",
    "test_event_code",
    "payload_format",
)
#: docs/contract.md: the keys an application may put in ``payload``.
PAYLOAD_KEYS = ("user", "properties", "page", "app", "ad", "lead", "limited_data_use", "consent")
#: docs/contract.md: the keys of ``payload.consent``.
CONSENT_KEYS = ("ad_user_data", "ad_personalization")
#: An event_time this large is likely milliseconds.
MILLISECONDS_HINT = 100_000_000_000

PAYLOAD_KEY_SET = frozenset(PAYLOAD_KEYS)
CONSENT_VALUES = frozenset((GRANTED, DENIED))
_CONSENT_KEY_SET = frozenset(CONSENT_KEYS)
# isinstance() with a tuple, not a union (X | Y): on Python 3.11 a union took eight times as long,
# and these checks run for every event.
_JSON_TEXT_TYPES = (str, bytes, bytearray, memoryview)
_NUMBER_TYPES = (int, float)
_CLAMP_WARNING_S = 60.0  # seconds in the future before a clamp is worth a warning


def required_text(value: object, name: str, *, trim: bool = True) -> str:
    """Column *name* as a non-empty string (trimmed unless *trim* is False), or refuse it."""
    if not isinstance(value, str):
        rule = MISSING if value is None else TYPE
        raise Invalid(rule, name, f"{name} must be a non-empty string, got {type_name(value)}")
    text = value.strip()
    if not text:
        raise Invalid(MISSING, name, f"{name} must be a non-empty string, got an empty one")
    return text if trim else value


def optional_text(value: object, name: str) -> str | None:
    """Column *name* trimmed, None when NULL or blank, or refuse it."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise Invalid(TYPE, name, f"{name} must be a string or NULL, got {type_name(value)}")
    return value.strip() or None


def event_seconds(value: object, created_at: float, now: float, warnings: list[str]) -> int:
    """The event's time in whole Unix seconds, a future one as *now*, or refuse it."""
    # §2.2: integer Unix seconds; docs/contract.md: defaults to the insert time.
    if value is None:
        seconds = int(created_at)
    elif isinstance(value, bool) or not isinstance(value, _NUMBER_TYPES):
        raise Invalid(
            TYPE,
            "event_time",
            f"event_time must be an integer of Unix seconds, got {type_name(value)}",
        )
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise Invalid(
                VALUE, "event_time", "event_time must be Unix seconds, got NaN or infinity"
            )
        seconds = int(value)  # schema: a fraction of a second is truncated, as TikTok wants seconds
    else:
        seconds = value
    if seconds > now:
        ahead = seconds - now
        if ahead > _CLAMP_WARNING_S:
            hint = " (it looks like milliseconds)" if seconds >= MILLISECONDS_HINT else ""
            warnings.append(f"event_time was {ahead:.0f} s in the future{hint}; sent as now")
        seconds = int(now)
    return seconds


def parse_json(raw: object) -> object:
    """The payload column's JSON value ({} when NULL or empty), or refuse it."""
    if raw is None:
        return {}
    if not isinstance(raw, _JSON_TEXT_TYPES):
        raise Invalid(TYPE, "payload", f"payload must be JSON text, got {type_name(raw)}")
    if len(raw) == 0:
        return {}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise Invalid(
            JSON,
            "payload",
            f"payload is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}",
        ) from None


def parse_payload(raw: object) -> dict[str, Any]:
    """The payload column as a JSON object of known keys ({} when NULL or empty), or refuse it."""
    data = parse_json(raw)
    if not isinstance(data, dict):
        raise Invalid(JSON, "payload", f"payload must be a JSON object, got {type_name(data)}")
    if not data.keys() <= PAYLOAD_KEY_SET:
        for key in data:
            if key not in PAYLOAD_KEY_SET:
                # An unknown key could carry raw personal data to TikTok, so it is refused.
                raise Invalid(
                    UNKNOWN_KEY,
                    key_path("payload", key),
                    f"payload has {unknown_key(key)}; allowed: {', '.join(PAYLOAD_KEYS)}",
                )
    return data


def consent_values(value: object, default: str) -> tuple[str, str]:
    """(ad_user_data, ad_personalization) from payload.consent, *default* where unsaid."""
    # docs/contract.md and tiktok-events-api.md §7.3: the 2.0 schema has no consent field, so
    # consent is applied here and the object itself is never sent.
    if value is None:
        return default, default
    if not isinstance(value, dict):
        raise Invalid(
            TYPE, "payload.consent", f"payload.consent must be an object, got {type_name(value)}"
        )
    for key, given in value.items():
        if key not in _CONSENT_KEY_SET:
            raise Invalid(
                UNKNOWN_KEY,
                key_path("payload.consent", key),
                f"payload.consent has {unknown_key(key)}; allowed: {', '.join(CONSENT_KEYS)}",
            )
        if given is not None and (not isinstance(given, str) or given not in CONSENT_VALUES):
            rule = VALUE if isinstance(given, str) else TYPE
            where = f"payload.consent.{key}"
            raise Invalid(rule, where, f"{where} must be 'granted' or 'denied'")
    return value.get("ad_user_data") or default, value.get("ad_personalization") or default
