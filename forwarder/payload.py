"""Turn one outbox row into one TikTok event: validate, normalise, hash, apply consent."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson
import phonenumbers

from forwarder.events import OutboxRow

#: The closed set of ``Refused.code`` values.
MALFORMED = "malformed"
TOO_OLD = "too_old"

GRANTED = "granted"
DENIED = "denied"

#: tiktok-events-api.md §2.1: the ``event_source`` values TikTok accepts.
EVENT_SOURCES = ("web", "app", "offline", "crm")
DEFAULT_EVENT_SOURCE = "web"

#: docs/contract.md: the keys an application may put in ``payload``.
_LIMITED_DATA_SOURCES = frozenset({"web", "app"})
PAYLOAD_KEYS = ("user", "properties", "page", "app", "ad", "lead", "limited_data_use", "consent")
#: §2.2: objects passed through to TikTok as given, in the order they are sent.
_OBJECT_KEYS = ("properties", "page", "app", "ad", "lead")

#: §2.3 and §6: identifiers hashed with SHA-256 and sent as a list of hashes.
HASHED_LIST_KEYS = ("email", "phone", "external_id")
#: §2.3 and §6: identifiers hashed with SHA-256 and sent as one hash.
HASHED_SCALAR_KEYS = ("first_name", "last_name", "zip_code")
#: §2.3 and §6 "Never hash": sent as the application gave them.
PLAIN_KEYS = (
    "ttclid",
    "ttp",
    "ip",
    "user_agent",
    "locale",
    "idfv",
    "att_status",
    "city",
    "state",
    "country",
    "idfa",
    "gaid",
)
USER_KEYS = HASHED_LIST_KEYS + HASHED_SCALAR_KEYS + PLAIN_KEYS
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
_USER_KINDS = {
    **dict.fromkeys(HASHED_LIST_KEYS, _HASHED_LIST),
    **dict.fromkeys(HASHED_SCALAR_KEYS, _HASHED_SCALAR),
    **dict.fromkeys(PLAIN_KEYS, _PLAIN),
}
_CONSENT_KEY_SET = frozenset(CONSENT_KEYS)
_CONSENT_VALUES = frozenset((GRANTED, DENIED))
_EVENT_SOURCE_SET = frozenset(EVENT_SOURCES)
_NO_MATCH_KEYS: frozenset[str] = frozenset()

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
#: §6: E.164 with the leading "+", no leading 0 after it, at most 15 digits.
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
#: Key names quoted back in a reason; anything else might be personal data and is not shown.
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_TYPE_NAMES: dict[type, str] = {
    type(None): "null",
    bool: "bool",
    int: "int",
    float: "float",
    str: "string",
    list: "list",
    dict: "object",
    bytes: "bytes",
}
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
    """A row that must not be sent; *reason* names the field and never holds its value."""

    row_id: int
    code: str  # MALFORMED or TOO_OLD
    reason: str


class _Malformed(Exception):
    """The row cannot be sent as written; the message is the Refused reason."""


_sha256 = hashlib.sha256


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
    except _Malformed as error:
        return Refused(row.id, MALFORMED, str(error))


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
        raise _Malformed(f"event_source must be one of {', '.join(EVENT_SOURCES)}")
    value = row.pixel_code
    pixel = (
        value.strip() if type(value) is str else _optional_text(value, "pixel_code")
    ) or opts.default_pixel.strip()
    if not pixel:
        raise _Malformed("no pixel: set TIKTOK_PIXEL_CODE or the row's pixel_code")
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
    payload = _parse_payload(row.payload)
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
        user = _user(user_value, region, ad_user_data == GRANTED, warnings)
        if user:
            out["user"] = user
            match_keys = _match_keys(user)
    for key in _OBJECT_KEYS:
        value = payload.get(key)
        if value is None:
            continue
        if not isinstance(value, dict):
            raise _Malformed(f"payload.{key} must be an object, got {_type_name(value)}")
        if key == "properties":
            _check_properties(value)
        out[key] = value
    limited = payload.get("limited_data_use")
    if limited is not None and not isinstance(limited, bool):
        raise _Malformed(
            f"payload.limited_data_use must be true or false, got {_type_name(limited)}"
        )
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
        return Refused(
            row.id,
            TOO_OLD,
            f"event_time is {_days(age)} days old, older than FORWARDER_MAX_EVENT_AGE "
            f"({_days(opts.max_age_s)} days); TikTok would not attribute it",
        )
    return Built(
        row.id,
        _destination(source, pixel, test_code or None),
        out,
        match_keys,
        tuple(warnings) if warnings else (),
        row.created_at,
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


def _required_text(value: object, name: str, *, trim: bool = True) -> str:
    if not isinstance(value, str):
        raise _Malformed(f"{name} must be a non-empty string, got {_type_name(value)}")
    text = value.strip()
    if not text:
        raise _Malformed(f"{name} must be a non-empty string, got an empty one")
    return text if trim else value


def _optional_text(value: object, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Malformed(f"{name} must be a string or NULL, got {_type_name(value)}")
    return value.strip() or None


def _event_time(value: object, created_at: float, now: float, warnings: list[str]) -> int:
    # §2.2: integer Unix seconds; docs/contract.md: defaults to the insert time.
    if value is None:
        seconds = int(created_at)
    elif isinstance(value, bool) or not isinstance(value, _NUMBER_TYPES):
        raise _Malformed(f"event_time must be an integer of Unix seconds, got {_type_name(value)}")
    elif isinstance(value, float):
        if not value.is_integer():
            raise _Malformed("event_time must be whole Unix seconds, got a fractional number")
        seconds = int(value)
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
        raise _Malformed(f"payload must be JSON text, got {_type_name(raw)}")
    if len(raw) == 0:
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise _Malformed(
            f"payload is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}"
        ) from None
    if not isinstance(data, dict):
        raise _Malformed(f"payload must be a JSON object, got {_type_name(data)}")
    if not data.keys() <= _PAYLOAD_KEY_SET:
        for key in data:
            if key not in _PAYLOAD_KEY_SET:
                # An unknown key could carry raw personal data to TikTok, so it is refused.
                raise _Malformed(
                    f"payload has {_unknown_key(key)}; allowed: {', '.join(PAYLOAD_KEYS)}"
                )
    return data


def _consent(value: object, default: str) -> tuple[str, str]:
    # docs/contract.md and tiktok-events-api.md §7.3: the 2.0 schema has no consent field, so
    # consent is applied here and the object itself is never sent.
    if value is None:
        return default, default
    if not isinstance(value, dict):
        raise _Malformed(f"payload.consent must be an object, got {_type_name(value)}")
    for key, given in value.items():
        if key not in _CONSENT_KEY_SET:
            raise _Malformed(
                f"payload.consent has {_unknown_key(key)}; allowed: {', '.join(CONSENT_KEYS)}"
            )
        if given is not None and (not isinstance(given, str) or given not in _CONSENT_VALUES):
            raise _Malformed(f"payload.consent.{key} must be 'granted' or 'denied'")
    return value.get("ad_user_data") or default, value.get("ad_personalization") or default


def _user(value: object, region: str | None, personal: bool, warnings: list[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Malformed(f"payload.user must be an object, got {_type_name(value)}")
    if not value.keys() <= _USER_KEY_SET:
        for key in value:
            if key not in _USER_KEY_SET:
                # Privacy: an unknown key could hold raw personal data, so it is never forwarded.
                raise _Malformed(
                    f"payload.user has {_unknown_key(key)}; allowed: {', '.join(USER_KEYS)}"
                )
    user: dict[str, Any] = {}
    for key, given in value.items():
        if given is None:
            continue
        kind = _USER_KINDS[key]
        if kind is _PLAIN:
            if not isinstance(given, str):
                raise _Malformed(f"payload.user.{key} must be a string, got {_type_name(given)}")
            if not personal and key in PERSONAL_KEYS:
                continue
            if not given.strip():
                warnings.append(f"user.{key} dropped: empty")
                continue
            user[key] = given  # §6 "Never hash": sent as given
        elif kind is _HASHED_LIST:
            if isinstance(given, str):
                # One identifier, the usual case: what _hash_list does for a list of one,
                # with _hash inlined.
                if not personal:
                    continue
                stripped = given.strip()
                if not stripped:
                    hashed = None
                elif len(stripped) == 64 and _HEX64.fullmatch(stripped):
                    hashed = stripped.lower()
                else:
                    normalized = _NORMALIZERS[key](given, region)
                    hashed = (
                        None if normalized is None else _sha256(normalized.encode()).hexdigest()
                    )
                if hashed is None:
                    warnings.append(f"user.{key} dropped: {_why_invalid(key, given, region)}")
                else:
                    user[key] = [hashed]
                continue
            items = _string_list(given, key)
            if not personal:
                continue
            hashes = _hash_list(key, given, items, region, warnings)
            if hashes:
                user[key] = hashes  # §2.3 / §6: sent as a list of hashes
        else:
            if not isinstance(given, str):
                raise _Malformed(f"payload.user.{key} must be a string, got {_type_name(given)}")
            if not personal:
                continue
            hashed = hash_identifier(key, given, region)
            if hashed is None:
                warnings.append(f"user.{key} dropped: empty")
            else:
                user[key] = hashed
    return user


def _string_list(value: object, key: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise _Malformed(
            f"payload.user.{key} must be a string or a list of strings, got {_type_name(value)}"
        )
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise _Malformed(
                f"payload.user.{key}[{index}] must be a string, got {_type_name(item)}"
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


def _check_properties(properties: dict[str, Any]) -> None:
    # §2.4: value is a plain number; contents items carry content_id as a string (40002 if not).
    if "value" in properties:
        value = properties["value"]
        if isinstance(value, bool) or not isinstance(value, _NUMBER_TYPES):
            raise _Malformed(f"payload.properties.value must be a number, got {_type_name(value)}")
    if "contents" in properties:
        contents = properties["contents"]
        if not isinstance(contents, list):
            raise _Malformed(
                f"payload.properties.contents must be a list of objects, got {_type_name(contents)}"
            )
        for index, item in enumerate(contents):
            if not isinstance(item, dict):
                raise _Malformed(
                    f"payload.properties.contents[{index}] must be an object, "
                    f"got {_type_name(item)}"
                )
            if "content_id" in item and not isinstance(item["content_id"], str):
                raise _Malformed(
                    f"payload.properties.contents[{index}].content_id must be a string "
                    f"(TikTok rejects numbers), got {_type_name(item['content_id'])}"
                )


def _unknown_key(key: str) -> str:
    if _FIELD_NAME.fullmatch(key):
        return f"unknown key {key!r}"
    return "an unknown key (not shown: it does not look like a field name)"


def _type_name(value: object) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def _days(seconds: float) -> str:
    days = seconds / _DAY
    return f"{round(days, 1):g}" if days >= 1 else f"{days:.2g}"
