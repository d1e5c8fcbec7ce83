"""The check of one field of TikTok's event: its type, its fix, its refusal.

Each check takes the value and the field's name (for the reason) and returns the value to send,
the given one when it is right, or raises Invalid. ``forwarder.tiktok.schema`` names, per field
of TikTok's event, which check applies; the closed lists of values the checks test against are
``forwarder.tiktok.spec``'s. The wording refusals share (a type's name, an unknown key, a list of
sources, an age in days) is here too. § are to tiktok-events-api.md.
"""

from __future__ import annotations

import re

from forwarder.tiktok.spec import ATT_STATUSES, CONTENT_TYPES, CURRENCIES, EVENT_SOURCES

#: The verdicts for a wrong value: the row is dead-lettered, or the field is not sent.
DEAD = "dead"
DROP = "drop"

#: The closed set of refusal rules, stored as ``[malformed/<rule>]`` (or ``[too_old/age]``).
MISSING = "missing"  # a field TikTok requires for this event_source is absent
TYPE = "type"  # a field of the wrong JSON type
VALUE = "value"  # the right type, a value TikTok does not accept (an unknown currency, "12,50")
UNKNOWN_KEY = "unknown_key"  # a key outside TikTok's schema that could carry personal data
JSON = "json"  # the payload column is not a JSON object
SOURCE = "source"  # not accepted for this event_source (a custom event in an offline set)
AGE = "age"  # older than FORWARDER_MAX_EVENT_AGE (code too_old)
RULES = (MISSING, TYPE, VALUE, UNKNOWN_KEY, JSON, SOURCE, AGE)

#: The sets of event_source values the schema's rows name (see spec.EVENT_SOURCES).
ALL = frozenset(EVENT_SOURCES)
WEB = frozenset({"web"})
APP = frozenset({"app"})
WEB_APP = frozenset({"web", "app"})
CRM = frozenset({"crm"})
NONE: frozenset[str] = frozenset()

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
#: Key names quoted back in a reason; anything else might be personal data and is not shown.
FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_DAY = 86400.0
_NUMBER_TEXT = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_INTEGER_TEXT = re.compile(r"-?[0-9]+")


class Invalid(Exception):
    """A field the row cannot be sent with; the message names the field, never its value."""

    def __init__(self, rule: str, field: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule
        self.field = field


def type_name(value: object) -> str:
    """Name *value*'s JSON type as a reason shows it ("string", "object", ...)."""
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def unknown_key(key: str) -> str:
    """Name an unknown *key* in a reason: quoted when it looks like a field name, else not."""
    if FIELD_NAME.fullmatch(key):
        return f"unknown key {key!r}"
    return "an unknown key (not shown: it does not look like a field name)"


def key_path(where: str, key: str) -> str:
    """The path of an unknown *key* in a Refused, or of its object when it is not quotable."""
    return f"{where}.{key}" if FIELD_NAME.fullmatch(key) else where


def source_names(sources: frozenset[str]) -> str:
    """Name *sources* for a reason, in EVENT_SOURCES' order: "web and app"."""
    return " and ".join(source for source in EVENT_SOURCES if source in sources)


def days(seconds: float) -> str:
    """*seconds* in days for a reason: "7", "1.5", "0.25"."""
    count = seconds / _DAY
    return f"{round(count, 1):g}" if count >= 1 else f"{count:.2g}"


# --- checks: each returns the value to send (the given one when it is right) or raises -------


def check_string(value: object, field: str) -> object:
    """A string, sent as given."""
    if type(value) is str:
        return value
    raise Invalid(TYPE, field, f"{field} must be a string, got {type_name(value)}")


def check_id(value: object, field: str) -> object:
    """An id TikTok types as a string: a whole JSON number becomes its decimal digits."""
    if type(value) is str:
        return value
    if type(value) is int:
        # Above 2^53 a JSON number loses digits in most parsers; as digits it cannot (§2.4).
        return str(value)
    raise Invalid(TYPE, field, f"{field} must be a string (an id), got {type_name(value)}")


def check_number(value: object, field: str) -> object:
    """A number; a plain decimal in a string ("23.00") becomes that number."""
    if type(value) is int or type(value) is float:
        return value
    if type(value) is str:
        text = value.strip()
        if _NUMBER_TEXT.fullmatch(text) and len(text) <= 30:
            return float(text) if "." in text else int(text)
        raise Invalid(
            VALUE,
            field,
            f"{field} is text that is not a plain number (digits and one '.', no currency "
            "symbol, comma or thousands separator)",
        )
    raise Invalid(TYPE, field, f"{field} must be a number, got {type_name(value)}")


def check_integer(value: object, field: str) -> object:
    """A whole number; 2.0 and "2" become 2, while 1.5 is refused (rounding would guess)."""
    if type(value) is int:
        return value
    if type(value) is float and value.is_integer():
        return int(value)
    if type(value) is str and _INTEGER_TEXT.fullmatch(value.strip()) and len(value) <= 30:
        return int(value.strip())
    if type(value) is float or type(value) is str:
        raise Invalid(VALUE, field, f"{field} must be a whole number, got a fraction or text")
    raise Invalid(TYPE, field, f"{field} must be a whole number, got {type_name(value)}")


def check_boolean(value: object, field: str) -> object:
    """true or false."""
    if type(value) is bool:
        return value
    raise Invalid(TYPE, field, f"{field} must be true or false, got {type_name(value)}")


def check_currency(value: object, field: str) -> object:
    """One of TikTok's 62 codes; trimmed and upper-cased ("usd" is USD)."""
    if type(value) is not str:
        raise Invalid(TYPE, field, f"{field} must be an ISO 4217 code, got {type_name(value)}")
    code = value.strip().upper()
    if code in CURRENCIES:
        return code
    raise Invalid(
        VALUE,
        field,
        f"{field} is not one of the {len(CURRENCIES)} ISO 4217 codes TikTok supports "
        "(e.g. USD, EUR); TikTok cannot report this revenue",
    )


def check_content_type(value: object, field: str) -> object:
    """``product`` or ``product_group``; trimmed and lower-cased."""
    if type(value) is not str:
        raise Invalid(TYPE, field, f"{field} must be a string, got {type_name(value)}")
    kind = value.strip().lower()
    if kind in CONTENT_TYPES:
        return kind
    raise Invalid(
        VALUE,
        field,
        f'{field} must be "product" (content_id is the sku_id) or "product_group" (item_group_id)',
    )


def check_ids(value: object, field: str) -> object:
    """A list of ids (see check_id)."""
    if type(value) is not list:
        raise Invalid(TYPE, field, f"{field} must be a list of strings, got {type_name(value)}")
    for index, item in enumerate(value):
        if type(item) is not str:
            value[index] = check_id(item, f"{field}[{index}]")
    return value


def check_att_status(value: object, field: str) -> object:
    """One of the five ATT states, upper-cased; another is refused, as DENIED must not be lost."""
    if type(value) is not str:
        raise Invalid(TYPE, field, f"{field} must be a string, got {type_name(value)}")
    status = value.strip().upper()
    if status in ATT_STATUSES:
        return status
    raise Invalid(VALUE, field, f"{field} must be one of {', '.join(sorted(ATT_STATUSES))}")
