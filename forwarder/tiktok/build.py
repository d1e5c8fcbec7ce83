"""Turn one outbox row into one TikTok event: validate, normalise, hash, apply consent.

What each field of TikTok's event must be, how it is fixed and what a wrong value costs is
``forwarder.schema``'s table; this module applies it (and ``forwarder.lint`` reports what it
refuses).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from socket import AF_INET, AF_INET6, inet_pton
from typing import Any, NamedTuple

import orjson
import phonenumbers

from forwarder.events import OutboxRow
from forwarder.tiktok import schema
from forwarder.tiktok.checks import (
    AGE,
    JSON,
    MISSING,
    SOURCE,
    TYPE,
    UNKNOWN_KEY,
    VALUE,
    Invalid,
    check_att_status,
    check_boolean,
    normalize_gaid,
    normalize_idfa,
    normalize_ip,
    type_name,
)
from forwarder.tiktok.spec import (
    EVENT_SOURCES,
    HASHED_LIST_KEYS,
    HASHED_SCALAR_KEYS,
    OFFLINE_EVENTS,
    PLAIN_KEYS,
    USER_KEYS,
)

#: The closed set of ``Refused.code`` values.
MALFORMED = "malformed"
TOO_OLD = "too_old"

GRANTED = "granted"
DENIED = "denied"

DEFAULT_EVENT_SOURCE = "web"

#: docs/contract.md: the keys an application may put in ``payload``.
PAYLOAD_KEYS = ("user", "properties", "page", "app", "ad", "lead", "limited_data_use", "consent")
#: §2.2: objects passed through to TikTok as given, in the order they are sent.
_OBJECT_KEYS = ("properties", "page", "app", "ad", "lead")

#: The user keys reported in ``Built.match_keys`` (match-key coverage for the marketer).
MATCH_KEYS = frozenset(("email", "phone", "external_id", "ttclid", "ttp", "ip", "user_agent"))
#: docs/contract.md: what ``ad_user_data: denied`` keeps on this machine.
PERSONAL_KEYS = frozenset(HASHED_LIST_KEYS + HASHED_SCALAR_KEYS + ("idfa", "gaid"))
CONSENT_KEYS = ("ad_user_data", "ad_personalization")

_PAYLOAD_KEY_SET = frozenset(PAYLOAD_KEYS)
_USER_KEY_SET = frozenset(USER_KEYS)
_HASHED_LIST = "hashed list"
_HASHED_SCALAR = "hashed scalar"
_PLAIN = "plain"
_NORMALIZED = "normalized"  # sent raw once normalised, dropped when that fails
_CHECKED = "checked"  # sent raw once checked, refused when wrong
_USER_KINDS = {
    **dict.fromkeys(HASHED_LIST_KEYS, _HASHED_LIST),
    **dict.fromkeys(HASHED_SCALAR_KEYS, _HASHED_SCALAR),
    **dict.fromkeys(PLAIN_KEYS, _PLAIN),
    **dict.fromkeys(("ip", "idfa", "gaid"), _NORMALIZED),
    "att_status": _CHECKED,
}
#: schema's user rows whose fix is more than "as given": the normaliser, and why it gave None.
_PLAIN_NORMALIZERS: dict[str, tuple[Callable[[str], str | None], str]] = {
    "ip": (normalize_ip, "not an IPv4 or IPv6 address"),
    "idfa": (normalize_idfa, "empty"),
    "gaid": (normalize_gaid, "empty"),
}
#: schema: the user keys TikTok documents for each event_source; the others are not sent.
_USER_KEYS_FOR = {source: schema.user_keys(source) for source in EVENT_SOURCES}
#: schema: the objects of an event in the order they are sent, with their checked fields, the
#: sources TikTok documents them for, and their path in a reason.
_OBJECTS = tuple(
    (key, schema.rules(f"{key}."), schema.BY_PATH[key].sources, f"payload.{key}")
    for key in _OBJECT_KEYS
)
_LIMITED_DATA_SOURCES = schema.BY_PATH["limited_data_use"].sources
#: schema: per event_source, the (object, key) pairs an event is refused without.
_REQUIRED = {source: schema.required(source) for source in EVENT_SOURCES}
_CONSENT_KEY_SET = frozenset(CONSENT_KEYS)
_CONSENT_VALUES = frozenset((GRANTED, DENIED))
_EVENT_SOURCE_SET = frozenset(EVENT_SOURCES)
_NO_MATCH_KEYS: frozenset[str] = frozenset()

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
#: §6: E.164 with the leading "+", no leading 0 after it, at most 15 digits.
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
#: Key names quoted back in a reason; anything else might be personal data and is not shown.
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
# isinstance() with a tuple, not a union (X | Y): on Python 3.11 a union took eight times as long,
# and these checks run for every event.
_JSON_TEXT_TYPES = (str, bytes, bytearray, memoryview)
_NUMBER_TYPES = (int, float)
_DAY = 86400.0
_CLAMP_WARNING_S = 60.0  # seconds in the future before a clamp is worth a warning
_MILLISECONDS_HINT = 100_000_000_000  # an event_time this large is likely milliseconds


@dataclass(frozen=True, slots=True)
class BuildOptions:
    """The settings that shape every event."""

    default_pixel: str  # used when row.pixel_code is None or ""
    phone_region: str | None  # ISO 3166 alpha-2 for national numbers; None: international only
    consent_default: str  # "granted" or "denied", for both keys when payload has no consent
    max_age_s: float  # events older than this (by event_time) are refused
    test_event_code: str | None  # used when row.test_event_code is None/""; None/"": real traffic

    def __post_init__(self) -> None:
        if self.consent_default not in _CONSENT_VALUES:
            raise ValueError(
                f"consent_default must be 'granted' or 'denied', got {self.consent_default!r}"
            )


@dataclass(frozen=True, slots=True)
class Destination:
    """What one request to TikTok is keyed by (§2.1): events for different ones never mix."""

    event_source: str
    pixel: str
    test_event_code: str | None


class Built(NamedTuple):
    """An event ready to send: one element of TikTok's ``data[]`` array.

    A named tuple, made once per event: see OutboxRow.
    """

    row_id: int
    destination: Destination
    event: dict[str, Any]
    match_keys: frozenset[str]  # among MATCH_KEYS, present in the sent user object
    warnings: tuple[str, ...]  # human-readable, never holding a raw identifier value
    created_at: float


@dataclass(frozen=True, slots=True)
class Refused:
    """A row that must not be sent; *reason* names the field and never holds its value.

    The reason starts with the reason code, ``[code/rule]`` (e.g. ``[malformed/value]``), which
    ``forwarder check --payload`` reports for the same row; *rule* is one of checks.RULES.
    """

    row_id: int
    code: str  # MALFORMED or TOO_OLD
    reason: str
    rule: str = ""
    field: str = ""  # the column or payload path it is about, e.g. "payload.properties.value"

    @property
    def reason_code(self) -> str:
        """``code/rule``, e.g. ``malformed/type``: a closed set, stable across releases."""
        return f"{self.code}/{self.rule}"


def _refused(row_id: int, code: str, error: Invalid) -> Refused:
    return Refused(row_id, code, f"[{code}/{error.rule}] {error}", error.rule, error.field)


_sha256 = hashlib.sha256
_new_tuple = tuple.__new__
_typed = schema.typed


def sha256_hex(value: str) -> str:
    """Return the lower-case hex SHA-256 of *value* encoded as UTF-8."""
    return _sha256(value.encode("utf-8")).hexdigest()


def normalize_email(raw: str) -> str | None:
    """Trim and lower-case an email (§6); return None when it is not an address."""
    email = raw.strip().lower()
    local, at, domain = email.rpartition("@")
    if not (at and local and domain):
        return None
    return email


_NANP_REGIONS = frozenset({"US", "CA"})
_NANP = re.compile(r"1?[2-9]\d{2}[2-9]\d{6}")


def normalize_phone(raw: str, region: str | None) -> str | None:
    """Return *raw* in E.164 with its leading "+" (§6), or None when it cannot be parsed."""
    # Fast path: already international once the usual punctuation is gone. A "(0)" is a trunk
    # prefix ("+44 (0)20 ..."); keeping its 0 would break §6's "no leading 0", so parse those.
    if "(0)" not in raw:
        # The usual punctuation removed; five replace() calls cost less than one translate().
        compact = (
            raw.replace(" ", "").replace("-", "").replace("(", "").replace(")", "").replace(".", "")
        )
        if _E164.fullmatch(compact):
            return compact
        # Second fast path: a North American national number (NXX-NXX-XXXX, area code and
        # exchange starting 2-9), which libphonenumber would turn into "+1" + its ten digits.
        if region in _NANP_REGIONS and _NANP.fullmatch(compact):
            return "+1" + compact[-10:]
    # §6: TikTok recommends libphonenumber for everything else.
    try:
        number = phonenumbers.parse(raw, region.upper() if region else None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    e164: str = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return e164


def _normalize_external_id(raw: str, region: str | None) -> str | None:
    # §6: hashed as given, no lowercasing or trimming; a blank id identifies nobody.
    return raw if raw.strip() else None


def _normalize_name(raw: str, region: str | None) -> str | None:
    # §6 (from S3/S4/S5): trim and lower-case.
    return raw.strip().lower() or None


def _normalize_zip(raw: str, region: str | None) -> str | None:
    # §6 (from S4): trim, lower-case, remove spaces and dashes.
    return raw.strip().lower().replace(" ", "").replace("-", "") or None


def _normalize_email(raw: str, region: str | None) -> str | None:
    # normalize_email, inlined: this runs for every event.
    email = raw.strip().lower()
    local, at, domain = email.rpartition("@")
    if not (at and local and domain):
        return None
    return email


_NORMALIZERS: dict[str, Callable[[str, str | None], str | None]] = {
    "email": _normalize_email,
    "phone": normalize_phone,
    "external_id": _normalize_external_id,
    "first_name": _normalize_name,
    "last_name": _normalize_name,
    "zip_code": _normalize_zip,
}


def hash_identifier(kind: str, raw: str, region: str | None) -> str | None:
    """Normalise and hash one identifier as TikTok specifies (§6); return None to drop it."""
    normalizer = _NORMALIZERS.get(kind)
    if normalizer is None:
        raise ValueError(
            f"unknown identifier kind {kind!r}; expected one of {', '.join(_NORMALIZERS)}"
        )
    return _hash(normalizer, raw, region)


def _hash(
    normalizer: Callable[[str, str | None], str | None], raw: str, region: str | None
) -> str | None:
    # §6: 64 hex characters (after trimming) is already a SHA-256 hash, as Segment and Stape
    # detect it; it passes through lower-cased instead of being hashed twice.
    stripped = raw.strip()
    if len(stripped) == 64 and _HEX64.fullmatch(stripped):
        return stripped.lower()
    normalized = normalizer(raw, region)
    return None if normalized is None else _sha256(normalized.encode()).hexdigest()


def build(row: OutboxRow, opts: BuildOptions, now: float) -> Built | Refused:
    """Build the TikTok event for *row*, or say why it must not be sent."""
    try:
        return _build(row, opts, now)
    except Invalid as error:
        return _refused(row.id, MALFORMED, error)


def _build(row: OutboxRow, opts: BuildOptions, now: float) -> Built | Refused:
    # This runs for every event. Plain str columns take the inline paths, which do what
    # _required_text and _optional_text do for them; anything else goes through the helpers,
    # which give the reasons, in the same order.
    # The dedup key is matched byte for byte against the browser Pixel's: checked, never trimmed.
    event_id = row.event_id
    if type(event_id) is not str or not event_id.strip():
        event_id = _required_text(event_id, "event_id", trim=False)
    # §2.2: names are case-sensitive, kept as given.
    event = row.event
    event = (event.strip() if type(event) is str else "") or _required_text(event, "event")
    value = row.event_source
    source = (
        value.strip() if type(value) is str else _optional_text(value, "event_source")
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
        value.strip() if type(value) is str else _optional_text(value, "pixel_code")
    ) or opts.default_pixel.strip()
    if not pixel:
        raise Invalid(
            MISSING, "pixel_code", "no pixel: set TIKTOK_PIXEL_CODE or the row's pixel_code"
        )
    # §7.2: a test code sends the event to the Test Events tab instead of real traffic.
    value = row.test_event_code
    test_code = (
        value.strip() if type(value) is str else _optional_text(value, "test_event_code")
    ) or opts.test_event_code
    warnings: list[str] = []
    value = row.event_time
    if type(value) is int and value <= now:
        event_time = value
    else:
        event_time = _event_time(value, row.created_at, now, warnings)
    raw = row.payload
    if type(raw) is str and raw:
        # _parse_payload, inlined for the usual JSON text; it gives the reasons otherwise.
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            payload = _parse_payload(raw)
        if type(payload) is not dict or not payload.keys() <= _PAYLOAD_KEY_SET:
            payload = _parse_payload(raw)
    else:
        payload = _parse_payload(raw)
    consent = payload.get("consent")
    if consent is None:
        ad_user_data = ad_personalization = opts.consent_default
    else:
        ad_user_data, ad_personalization = _consent(consent, opts.consent_default)

    out: dict[str, Any] = {"event": event, "event_time": event_time, "event_id": event_id}
    match_keys = _NO_MATCH_KEYS
    user_value = payload.get("user")
    if user_value is not None:
        region = opts.phone_region or None
        user = _user(user_value, region, ad_user_data == GRANTED, warnings, source)
        if user:
            out["user"] = user
            # _match_keys, inlined.
            match_keys = _MATCH_KEY_SETS.get(tuple(user)) or _match_keys(user)
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
            warnings.append(f"{key} not sent: TikTok documents it for {_names(sources)} events")
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
    limited = payload.get("limited_data_use")
    if limited is not None and type(limited) is not bool:
        check_boolean(limited, "payload.limited_data_use")
    if ad_personalization == DENIED:
        limited = True  # §7.3: the sender flags limited data processing
    if limited is not None:
        if source in _LIMITED_DATA_SOURCES:
            out["limited_data_use"] = limited
        elif limited:
            # §2.2 and §7.3: TikTok documents limited_data_use for web and app events only.
            warnings.append(
                f"limited_data_use not sent: TikTok supports it for web and app, not {source}"
            )

    age = now - event_time
    if age > opts.max_age_s:
        return _refused(
            row.id,
            TOO_OLD,
            Invalid(
                AGE,
                "event_time",
                f"event_time is {_days(age)} days old, older than FORWARDER_MAX_EVENT_AGE "
                f"({_days(opts.max_age_s)} days); TikTok would not attribute it",
            ),
        )
    destination = _DESTINATIONS.get((source, pixel, test_code or None))
    if destination is None:
        destination = _destination(source, pixel, test_code or None)
    # tuple.__new__ directly: Built's own __new__ is a Python function, a frame per event.
    return _new_tuple(
        Built,
        (row.id, destination, out, match_keys, tuple(warnings) if warnings else (), row.created_at),
    )


# Built once and shared: a claim of thousands of rows names a handful of destinations and of
# match-key sets. Bounded, so rows naming ever new pixels cannot grow them without end.
_CACHE_MAX = 1024
_DESTINATIONS: dict[tuple[str, str, str | None], Destination] = {}
_MATCH_KEY_SETS: dict[tuple[str, ...], frozenset[str]] = {}


def _destination(source: str, pixel: str, test_code: str | None) -> Destination:
    key = (source, pixel, test_code)
    destination = _DESTINATIONS.get(key)
    if destination is None:
        destination = Destination(source, pixel, test_code)
        if len(_DESTINATIONS) < _CACHE_MAX:
            _DESTINATIONS[key] = destination
    return destination


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


def _required_text(value: object, name: str, *, trim: bool = True) -> str:
    if not isinstance(value, str):
        rule = MISSING if value is None else TYPE
        raise Invalid(rule, name, f"{name} must be a non-empty string, got {type_name(value)}")
    text = value.strip()
    if not text:
        raise Invalid(MISSING, name, f"{name} must be a non-empty string, got an empty one")
    return text if trim else value


def _optional_text(value: object, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise Invalid(TYPE, name, f"{name} must be a string or NULL, got {type_name(value)}")
    return value.strip() or None


def _names(sources: frozenset[str]) -> str:
    return " and ".join(source for source in EVENT_SOURCES if source in sources)


def _event_time(value: object, created_at: float, now: float, warnings: list[str]) -> int:
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
            hint = " (it looks like milliseconds)" if seconds >= _MILLISECONDS_HINT else ""
            warnings.append(f"event_time was {ahead:.0f} s in the future{hint}; sent as now")
        seconds = int(now)
    return seconds


def _parse_payload(raw: object) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, _JSON_TEXT_TYPES):
        raise Invalid(TYPE, "payload", f"payload must be JSON text, got {type_name(raw)}")
    if len(raw) == 0:
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise Invalid(
            JSON,
            "payload",
            f"payload is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}",
        ) from None
    if not isinstance(data, dict):
        raise Invalid(JSON, "payload", f"payload must be a JSON object, got {type_name(data)}")
    if not data.keys() <= _PAYLOAD_KEY_SET:
        for key in data:
            if key not in _PAYLOAD_KEY_SET:
                # An unknown key could carry raw personal data to TikTok, so it is refused.
                raise Invalid(
                    UNKNOWN_KEY,
                    _key_path("payload", key),
                    f"payload has {_unknown_key(key)}; allowed: {', '.join(PAYLOAD_KEYS)}",
                )
    return data


def _consent(value: object, default: str) -> tuple[str, str]:
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
                _key_path("payload.consent", key),
                f"payload.consent has {_unknown_key(key)}; allowed: {', '.join(CONSENT_KEYS)}",
            )
        if given is not None and (not isinstance(given, str) or given not in _CONSENT_VALUES):
            rule = VALUE if isinstance(given, str) else TYPE
            where = f"payload.consent.{key}"
            raise Invalid(rule, where, f"{where} must be 'granted' or 'denied'")
    return value.get("ad_user_data") or default, value.get("ad_personalization") or default


def _user(
    value: object, region: str | None, personal: bool, warnings: list[str], source: str
) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Invalid(
            TYPE, "payload.user", f"payload.user must be an object, got {type_name(value)}"
        )
    if not value.keys() <= _USER_KEYS_FOR[source]:
        value = _user_for_source(value, source, warnings)
    # The user object is this call's own (parsed from the row): it is sent as it is changed
    # here, in place, its keys in the order given; what is not sent goes at the end.
    unsent: list[str] | None = None
    for key, given in value.items():
        if given is None:
            unsent = _also(unsent, key)
            continue
        kind = _USER_KINDS[key]
        if kind is _PLAIN:
            if not isinstance(given, str):
                raise _not_a_string(key, given)
            if not personal and key in PERSONAL_KEYS:
                unsent = _also(unsent, key)
            elif not given.strip():
                warnings.append(f"user.{key} dropped: empty")
                unsent = _also(unsent, key)
            # otherwise §6 "Never hash": sent as given
        elif kind is _HASHED_LIST:
            if isinstance(given, str):
                # One identifier, the usual case: what _hash_list does for a list of one,
                # with _hash inlined.
                if not personal:
                    unsent = _also(unsent, key)
                    continue
                stripped = given.strip()
                if not stripped:
                    hashed = None
                elif len(stripped) == 64 and _HEX64.fullmatch(stripped):
                    hashed = stripped.lower()
                else:
                    if key == "external_id":
                        normalized: str | None = given  # §6: hashed as given
                    elif key == "email":
                        # _normalize_email, inlined.
                        normalized = stripped.lower()
                        local, at, domain = normalized.rpartition("@")
                        if not (at and local and domain):
                            normalized = None
                    else:
                        normalized = normalize_phone(given, region)
                    hashed = (
                        None if normalized is None else _sha256(normalized.encode()).hexdigest()
                    )
                if hashed is None:
                    warnings.append(f"user.{key} dropped: {_why_invalid(key, given, region)}")
                    unsent = _also(unsent, key)
                else:
                    value[key] = [hashed]
                continue
            items = _string_list(given, key)
            hashes = _hash_list(key, given, items, region, warnings) if personal else None
            if hashes:
                value[key] = hashes  # §2.3 / §6: sent as a list of hashes
            else:
                unsent = _also(unsent, key)
        elif kind is _NORMALIZED:
            # schema: ip, idfa and gaid are sent raw but normalised; unreadable, dropped.
            if not isinstance(given, str):
                raise _not_a_string(key, given)
            if not personal and key in PERSONAL_KEYS:
                unsent = _also(unsent, key)
                continue
            if key == "ip":
                # normalize_ip's first step, inlined: most addresses are sent as given.
                try:
                    inet_pton(AF_INET6 if ":" in given else AF_INET, given)
                    continue
                except OSError:
                    pass
            normalize, why = _PLAIN_NORMALIZERS[key]
            normalized = normalize(given)
            if normalized is None:
                warnings.append(f"user.{key} dropped: {why if given.strip() else 'empty'}")
                unsent = _also(unsent, key)
            else:
                value[key] = normalized
        elif kind is _CHECKED:
            value[key] = check_att_status(given, f"payload.user.{key}")
        else:
            if not isinstance(given, str):
                raise _not_a_string(key, given)
            hashed = hash_identifier(key, given, region) if personal else None
            if hashed is None:
                if personal:
                    warnings.append(f"user.{key} dropped: empty")
                unsent = _also(unsent, key)
            else:
                value[key] = hashed
    if unsent is not None:
        for key in unsent:
            del value[key]
    return value


def _also(keys: list[str] | None, key: str) -> list[str]:
    if keys is None:
        return [key]
    keys.append(key)
    return keys


def _user_for_source(value: dict[str, Any], source: str, warnings: list[str]) -> dict[str, Any]:
    """*value* without the keys TikTok documents for other sources; refuse unknown keys."""
    for key in value:
        if key not in _USER_KEY_SET:
            # Privacy: an unknown key could hold raw personal data, so it is never forwarded.
            raise Invalid(
                UNKNOWN_KEY,
                _key_path("payload.user", key),
                f"payload.user has {_unknown_key(key)}; allowed: {', '.join(USER_KEYS)}",
            )
    allowed = _USER_KEYS_FOR[source]
    kept: dict[str, Any] = {}
    for key, given in value.items():
        if key in allowed:
            kept[key] = given
        elif given is not None:
            sources = schema.BY_PATH[f"user.{key}"].sources
            warnings.append(
                f"user.{key} not sent: TikTok documents it for {_names(sources)} events"
            )
    return kept


def _not_a_string(key: str, given: object) -> Invalid:
    where = f"payload.user.{key}"
    return Invalid(TYPE, where, f"{where} must be a string, got {type_name(given)}")


def _string_list(value: object, key: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    where = f"payload.user.{key}"
    if not isinstance(value, list):
        raise Invalid(
            TYPE, where, f"{where} must be a string or a list of strings, got {type_name(value)}"
        )
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise Invalid(
                TYPE,
                f"{where}[{index}]",
                f"{where}[{index}] must be a string, got {type_name(item)}",
            )
    return value


def _hash_list(
    key: str, given: object, items: list[str], region: str | None, warnings: list[str]
) -> list[str]:
    hashes: list[str] = []
    normalizer = _NORMALIZERS[key]
    for index, raw in enumerate(items):
        hashed = _hash(normalizer, raw, region) if raw.strip() else None
        if hashed is None:
            where = f"user.{key}" if isinstance(given, str) else f"user.{key}[{index}]"
            warnings.append(f"{where} dropped: {_why_invalid(key, raw, region)}")
        elif hashed not in hashes:
            hashes.append(hashed)
    return hashes


def _why_invalid(key: str, raw: str, region: str | None) -> str:
    if not raw.strip():
        return "empty"
    if key == "email":
        return "not an email address"
    if key == "phone":
        if region:
            return f"not a valid phone number for region {region}"
        return "not a valid international phone number (+ and country code; no region is set)"
    return "empty"


def _unknown_key(key: str) -> str:
    if _FIELD_NAME.fullmatch(key):
        return f"unknown key {key!r}"
    return "an unknown key (not shown: it does not look like a field name)"


def _key_path(where: str, key: str) -> str:
    """The path of an unknown *key* in a Refused, or of its object when it is not quotable."""
    return f"{where}.{key}" if _FIELD_NAME.fullmatch(key) else where


def _days(seconds: float) -> str:
    days = seconds / _DAY
    return f"{round(days, 1):g}" if days >= 1 else f"{days:.2g}"
