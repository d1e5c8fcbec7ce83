"""Turn one outbox row into one TikTok event: validate, normalise, hash, apply consent.

What each field of TikTok's event must be, how it is fixed and what a wrong value costs is
``forwarder.tiktok.schema``'s table; this module applies it, with ``build_row`` reading the
row's columns and payload and ``build_user`` building the user object (and
``forwarder.tiktok.lint`` reports what it refuses). It runs for every event: the usual values
take inline paths, and each step costs one call at most.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from forwarder.destination import MALFORMED, TOO_OLD, Built, Refused, Route
from forwarder.events import OutboxRow
from forwarder.tiktok import schema
from forwarder.tiktok.build_meta import converted_row, dropped_labels, is_tiktok
from forwarder.tiktok.build_row import (
    CONSENT_VALUES,
    DEFAULT_EVENT_SOURCE,
    DENIED,
    GRANTED,
    PAYLOAD_KEY_SET,
    consent_values,
    event_seconds,
    optional_text,
    parse_payload,
    required_text,
)
from forwarder.tiktok.build_user import user_object
from forwarder.tiktok.checks import (
    AGE,
    MISSING,
    SOURCE,
    TYPE,
    VALUE,
    Invalid,
    check_boolean,
    days,
    source_names,
    type_name,
)
from forwarder.tiktok.spec import EVENT_SOURCES, OFFLINE_EVENTS

#: §2.2: objects passed through to TikTok as given, in the order they are sent.
_OBJECT_KEYS = ("properties", "page", "app", "ad", "lead")
#: The user keys reported in ``Built.match_keys`` (match-key coverage for the marketer).
MATCH_KEYS = frozenset(("email", "phone", "external_id", "ttclid", "ttp", "ip", "user_agent"))

#: schema: the objects of an event in the order they are sent, with their checked fields, the
#: sources TikTok documents them for, and their path in a reason.
_OBJECTS = tuple(
    (key, schema.rules(f"{key}."), schema.BY_PATH[key].sources, f"payload.{key}")
    for key in _OBJECT_KEYS
)
_LIMITED_DATA_SOURCES = schema.BY_PATH["limited_data_use"].sources
#: schema: per event_source, the (object, key) pairs an event is refused without.
_REQUIRED = {source: schema.required(source) for source in EVENT_SOURCES}
_EVENT_SOURCE_SET = frozenset(EVENT_SOURCES)
_NO_MATCH_KEYS: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class BuildOptions:
    """The settings that shape every event."""

    default_pixel: str  # used when row.pixel_code is None or ""
    phone_region: str | None  # ISO 3166 alpha-2 for national numbers; None: international only
    consent_default: str  # "granted" or "denied", for both keys when payload has no consent
    max_age_s: float  # events older than this (by event_time) are refused
    test_event_code: str | None  # used when row.test_event_code is None/""; None/"": real traffic

    def __post_init__(self) -> None:
        if self.consent_default not in CONSENT_VALUES:
            raise ValueError(
                f"consent_default must be 'granted' or 'denied', got {self.consent_default!r}"
            )


def _refused(row_id: int, code: str, error: Invalid) -> Refused:
    return Refused(row_id, code, f"[{code}/{error.rule}] {error}", error.rule, error.field)


_new_tuple = tuple.__new__
_typed = schema.typed


def build(row: OutboxRow, opts: BuildOptions, now: float) -> Built | Refused:
    """Build the TikTok event for *row*, or say why it must not be sent."""
    try:
        if row.payload_format is None:
            return _build(row, opts, now)
        return _build_format(row, opts, now)
    except Invalid as error:
        return _refused(row.id, MALFORMED, error)


def _build_format(row: OutboxRow, opts: BuildOptions, now: float) -> Built | Refused:
    """Build a row that names its payload's format: TikTok's own, or one converted first."""
    if is_tiktok(row.payload_format):
        return _build(row, opts, now)
    tiktok_row, converted = converted_row(row)
    built = _build(tiktok_row, opts, now)
    if isinstance(built, Refused) or not converted.dropped:
        return built
    # The note reaches the sent row's last_error, as every warning does (worker/settle.py).
    warnings = (*built.warnings, converted.note())
    return built._replace(warnings=warnings, dropped=dropped_labels(converted))


def _build(row: OutboxRow, opts: BuildOptions, now: float) -> Built | Refused:
    event_id, event, source, pixel, test_code = _envelope(row, opts)
    warnings: list[str] = []
    value = row.event_time
    if type(value) is int and value <= now:
        event_time = value
    else:
        event_time = event_seconds(value, row.created_at, now, warnings)
    raw = row.payload
    if type(raw) is str and raw:
        # parse_payload, inlined for the usual JSON text; it gives the reasons otherwise.
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            payload = parse_payload(raw)
        if type(payload) is not dict or not payload.keys() <= PAYLOAD_KEY_SET:
            payload = parse_payload(raw)
    else:
        payload = parse_payload(raw)
    consent = payload.get("consent")
    if consent is None:
        ad_user_data = ad_personalization = opts.consent_default
    else:
        ad_user_data, ad_personalization = consent_values(consent, opts.consent_default)

    out: dict[str, Any] = {"event": event, "event_time": event_time, "event_id": event_id}
    match_keys = _NO_MATCH_KEYS
    user_value = payload.get("user")
    if user_value is not None:
        region = opts.phone_region or None
        user = user_object(user_value, region, ad_user_data == GRANTED, warnings, source)
        if user:
            out["user"] = user
            # _match_keys, inlined.
            match_keys = _MATCH_KEY_SETS.get(tuple(user)) or _match_keys(user)
    _objects(payload, out, source, ad_personalization == DENIED, warnings)

    age = now - event_time
    if age > opts.max_age_s:
        return _too_old(row.id, age, opts.max_age_s)
    route = _ROUTES.get((source, pixel, test_code or None))
    if route is None:
        route = _route(source, pixel, test_code or None)
    # tuple.__new__ directly: Built's own __new__ is a Python function, a frame per event.
    return _new_tuple(
        Built,
        (
            row.id,
            route,
            out,
            match_keys,
            tuple(warnings) if warnings else (),
            row.created_at,
            (),
        ),
    )


def _envelope(row: OutboxRow, opts: BuildOptions) -> tuple[str, str, str, str, str | None]:
    """The row's event_id, event, event_source, pixel and test code, checked in that order."""
    # Plain str columns take the inline paths, which do what required_text and optional_text do
    # for them; anything else goes through those, which give the reasons.
    # The dedup key is matched byte for byte against the browser Pixel's: checked, never trimmed.
    event_id = row.event_id
    if type(event_id) is not str or not event_id.strip():
        event_id = required_text(event_id, "event_id", trim=False)
    # §2.2: names are case-sensitive, kept as given.
    event = row.event
    event = (event.strip() if type(event) is str else "") or required_text(event, "event")
    value = row.event_source
    source = (
        value.strip() if type(value) is str else optional_text(value, "event_source")
    ) or DEFAULT_EVENT_SOURCE
    if source not in _EVENT_SOURCE_SET:
        raise Invalid(
            VALUE, "event_source", f"event_source must be one of {', '.join(EVENT_SOURCES)}"
        )
    if source == "offline" and event not in OFFLINE_EVENTS:
        raise Invalid(
            SOURCE,
            "event",
            "event is not a standard event name (names are case-sensitive), and an offline "
            "event set accepts standard events only",
        )
    value = row.pixel_code
    pixel = (
        value.strip() if type(value) is str else optional_text(value, "pixel_code")
    ) or opts.default_pixel.strip()
    if not pixel:
        raise Invalid(
            MISSING, "pixel_code", "no pixel: set TIKTOK_PIXEL_CODE or the row's pixel_code"
        )
    # §7.2: a test code sends the event to the Test Events tab instead of real traffic.
    value = row.test_event_code
    test_code = (
        value.strip() if type(value) is str else optional_text(value, "test_event_code")
    ) or opts.test_event_code
    return event_id, event, source, pixel, test_code


def _objects(
    payload: dict[str, Any], out: dict[str, Any], source: str, limited: bool, warnings: list[str]
) -> None:
    """Put properties, page, app, ad, lead and limited_data_use into *out*, checked and fixed.

    *limited*: ad_personalization is denied, which sets limited_data_use.
    """
    for entry in _OBJECTS:
        if entry[0] not in payload:
            continue
        key, checked, sources, where = entry
        value = payload[key]
        if value is None:
            continue
        if type(value) is not dict:
            raise Invalid(TYPE, where, f"{where} must be an object, got {type_name(value)}")
        if source not in sources:
            warnings.append(
                f"{key} not sent: TikTok documents it for {source_names(sources)} events"
            )
            continue
        # schema.typed fixes in place (the payload is this call's own). Its first loop is
        # inlined for page, app, ad and lead, whose fields are told right by type alone.
        if checked.simple:
            types = checked.types
            try:
                for name, given in value.items():
                    if type(given) not in types[name]:
                        _typed(value, checked, where)
                        break
            except KeyError:  # a custom key
                _typed(value, checked, where)
        else:
            _typed(value, checked, where)
        out[key] = value
    required = _REQUIRED[source]
    if required:
        _require(out, required, source)
    flag = payload.get("limited_data_use")
    if flag is not None and type(flag) is not bool:
        check_boolean(flag, "payload.limited_data_use")
    if limited:
        flag = True  # §7.3: the sender flags limited data processing
    if flag is not None:
        if source in _LIMITED_DATA_SOURCES:
            out["limited_data_use"] = flag
        elif flag:
            # §2.2 and §7.3: TikTok documents limited_data_use for web and app events only.
            warnings.append(
                f"limited_data_use not sent: TikTok supports it for web and app, not {source}"
            )


def _too_old(row_id: int, age: float, max_age_s: float) -> Refused:
    return _refused(
        row_id,
        TOO_OLD,
        Invalid(
            AGE,
            "event_time",
            f"event_time is {days(age)} days old, older than FORWARDER_MAX_EVENT_AGE "
            f"({days(max_age_s)} days); TikTok would not attribute it",
        ),
    )


# Built once and shared: a claim of thousands of rows names a handful of routes and of
# match-key sets. Bounded, so rows naming ever new pixels cannot grow them without end.
_CACHE_MAX = 1024
_ROUTES: dict[tuple[str, str, str | None], Route] = {}
_MATCH_KEY_SETS: dict[tuple[str, ...], frozenset[str]] = {}


def _route(source: str, pixel: str, test_code: str | None) -> Route:
    key = (source, pixel, test_code)
    route = _ROUTES.get(key)
    if route is None:
        route = Route(source, pixel, test_code)
        if len(_ROUTES) < _CACHE_MAX:
            _ROUTES[key] = route
    return route


def _match_keys(user: dict[str, Any]) -> frozenset[str]:
    keys = tuple(user)
    found = _MATCH_KEY_SETS.get(keys)
    if found is None:
        found = frozenset(key for key in keys if key in MATCH_KEYS)
        if len(_MATCH_KEY_SETS) < _CACHE_MAX:
            _MATCH_KEY_SETS[keys] = found
    return found


def _require(out: dict[str, Any], required: tuple[tuple[str, str], ...], source: str) -> None:
    for key, sub in required:
        given = out.get(key, {}).get(sub)
        if type(given) is not str or not given.strip():
            raise Invalid(
                MISSING,
                f"payload.{key}.{sub}",
                f"payload.{key}.{sub} is missing: TikTok requires it for {source} events",
            )
