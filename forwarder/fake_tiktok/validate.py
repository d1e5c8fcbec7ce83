"""Validate a request to the fake as TikTok validates one: the code and message TikTok would
answer (tiktok-events-api.md §1 authentication, §2 request schema, §3.1 batch limit, §4 messages
naming the path, §5.1 codes), or None for a request TikTok accepts.
"""

from __future__ import annotations

import re
from typing import Any, Final, TypeGuard

from forwarder.tiktok.spec import (
    CONTENT_TYPES,
    CURRENCIES,
    EVENT_SOURCES,
    HASHED_LIST_KEYS,
    MAX_EVENTS,
    OFFLINE_EVENTS,
)

#: tiktok-events-api.md §2.3: user fields sent raw, which must still be strings.
PLAIN_USER_FIELDS: Final = ("ttclid", "ttp", "ip", "user_agent")

# tiktok-events-api.md §5.1 return codes used by the validator.
OK: Final = 0
PERMISSION_ERROR: Final = 40001
PARAM_ERROR: Final = 40002
INVALID_BATCH_SIZE: Final = 40061
PII_NOT_HASHED: Final = 40062
EMPTY_ACCESS_TOKEN: Final = 40104
INVALID_ACCESS_TOKEN: Final = 40105

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def check_token(access_token: str | None, token: str) -> tuple[int, str] | None:
    """The answer to a request whose Access-Token is missing or not *token*, else None."""
    # §1: the token goes bare in Access-Token; `Bearer <token>` is simply a wrong token.
    if not access_token:
        return EMPTY_ACCESS_TOKEN, "Access token is null"
    if access_token != token or access_token.startswith("Bearer "):
        return INVALID_ACCESS_TOKEN, "Access token is incorrect or has been revoked."
    return None


def refusal(
    payload: dict[str, Any], pixels: set[str], test_codes: set[str]
) -> tuple[int, str] | None:
    """The answer for a pixel the token may not operate, or an unknown test code."""
    pixel = payload.get("event_source_id")
    if isinstance(pixel, str) and pixel in pixels:
        # §5.1: the observed 40001 message (S4 mock).
        return PERMISSION_ERROR, (
            f"No permission to operate pixel code: {pixel}. "
            "You must be an admin or operator of this advertiser account."
        )
    code = payload.get("test_event_code")
    if isinstance(code, str) and code in test_codes:
        return PARAM_ERROR, "Invalid value for test_event_code: not a valid test event code."
    return None


def validate(
    payload: dict[str, Any], poison: set[str], names_index: bool, poison_code: int = PARAM_ERROR
) -> tuple[int, str] | None:
    """Return the (code, message) TikTok would answer for a bad request body, else None."""
    source = payload.get("event_source")
    if source not in EVENT_SOURCES:
        # §2.1/§4 (S12): TikTok's wording omits crm although crm is accepted.
        return PARAM_ERROR, "Invalid value for event_source: must be web, app or offline."
    source_id = payload.get("event_source_id")
    if not isinstance(source_id, str) or not source_id:
        return PARAM_ERROR, "Invalid value for event_source_id: not a valid string."  # §4 (S13)
    if "test_event_code" in payload and not isinstance(payload["test_event_code"], str):
        return PARAM_ERROR, "Invalid value for test_event_code: not a valid string."  # §7.2
    data = payload.get("data")
    if not isinstance(data, list):
        return PARAM_ERROR, "Invalid value for data: not a valid list."
    if not data:
        return PARAM_ERROR, "Invalid value for data: must contain at least 1 event."
    if len(data) > MAX_EVENTS:
        return (  # §3.1: the whole request is rejected; 40061 per the SDK enum (§5.1)
            INVALID_BATCH_SIZE,
            f"Invalid value for data: at most {MAX_EVENTS} events per request, got {len(data)}.",
        )
    for index, event in enumerate(data):
        error = _validate_event(index, event, source)
        if error is not None:
            return error
        if poison and event.get("event_id") in poison:
            if names_index:
                return poison_code, f"data.{index}.event_id: rejected by the fake (poison)"
            return poison_code, "Invalid value: rejected by the fake (poison)"
    return None


def _validate_event(i: int, event: Any, source: str) -> tuple[int, str] | None:
    """Check one ``data[i]`` entry (§2.2-§2.4); messages name the path like §4's examples."""
    if not isinstance(event, dict):
        return _not_valid(f"data.{i}", "object")
    name = event.get("event")
    if not isinstance(name, str) or not name:
        return _not_valid(f"data.{i}.event", "string")
    if source == "offline" and name not in OFFLINE_EVENTS:
        # §2.2 (S1): an offline event set takes standard events only.
        return PARAM_ERROR, f"data.{i}.event: offline events must be standard events"
    event_time = event.get("event_time")
    if not isinstance(event_time, int) or isinstance(event_time, bool):
        return _not_valid(f"data.{i}.event_time", "integer")  # §2.2: Unix seconds, an int
    if "event_id" in event and not isinstance(event["event_id"], str):
        return _not_valid(f"data.{i}.event_id", "string")
    if "user" in event:
        error = _validate_user(i, event["user"])
        if error is not None:
            return error
    if "properties" in event:
        error = _validate_properties(i, event["properties"])
        if error is not None:
            return error
    for key, required in (("page", None), ("app", "app_id"), ("lead", "lead_id")):
        error = _validate_strings(i, event, key, required if source in _NEEDS[key] else None)
        if error is not None:
            return error
    if "limited_data_use" in event and not isinstance(event["limited_data_use"], bool):
        return _not_valid(f"data.{i}.limited_data_use", "boolean")  # §7.3
    return None


#: §2.2 (S1): the objects an event_source requires, by the key each must hold.
_NEEDS: Final = {"page": frozenset[str](), "app": frozenset({"app"}), "lead": frozenset({"crm"})}
#: §2.2 (S1): the string fields of page, app and lead.
_STRING_FIELDS: Final = {
    "page": ("url", "referrer"),
    "app": ("app_id", "app_name", "app_version"),
    "lead": ("lead_id", "lead_event_source"),
}


def _validate_strings(
    i: int, event: dict[str, Any], key: str, required: str | None
) -> tuple[int, str] | None:
    """Check ``data[i].<key>``, an object of strings, holding *required* when it is not None."""
    obj = event.get(key)
    if obj is None and required is None:
        return None
    if not isinstance(obj, dict):
        return _not_valid(f"data.{i}.{key}", "object")
    for name in _STRING_FIELDS[key]:
        if name in obj and not isinstance(obj[name], str):
            return _not_valid(f"data.{i}.{key}.{name}", "string")
    if required is not None and not (isinstance(obj.get(required), str) and obj[required]):
        return PARAM_ERROR, f"data.{i}.{key}.{required}: Missing data for required field."
    return None


def _validate_user(i: int, user: Any) -> tuple[int, str] | None:
    """Check ``data[i].user`` (§2.3): hashed PII as 64 lower-case hex, raw fields as strings."""
    if not isinstance(user, dict):
        return _not_valid(f"data.{i}.user", "object")
    for field in HASHED_LIST_KEYS:
        if field not in user:
            continue
        values = user[field]
        if isinstance(values, str):
            values = (values,)  # §2.3: a single string is accepted too
        elif not isinstance(values, list):
            return _not_valid(f"data.{i}.user.{field}", "list")
        for value in values:
            if not isinstance(value, str):
                return _not_valid(f"data.{i}.user.{field}", "string")
            if _SHA256_HEX.fullmatch(value) is None:
                return PII_NOT_HASHED, f"data.{i}.user.{field}: PII not hashed"  # §5.1, §6
    for field in PLAIN_USER_FIELDS:
        if field in user and not isinstance(user[field], str):
            return _not_valid(f"data.{i}.user.{field}", "string")
    return None


def _validate_properties(i: int, properties: Any) -> tuple[int, str] | None:
    """Check ``data[i].properties`` (§2.4): string content ids and a numeric value."""
    if not isinstance(properties, dict):
        return _not_valid(f"data.{i}.properties", "object")
    if "value" in properties and not is_number(properties["value"]):
        return _not_valid(f"data.{i}.properties.value", "number")
    if "currency" in properties and properties["currency"] not in CURRENCIES:
        return PARAM_ERROR, f"data.{i}.properties.currency: Unsupported currency."  # §2.4
    if "content_type" in properties and properties["content_type"] not in CONTENT_TYPES:
        return _not_valid(f"data.{i}.properties.content_type", "choice")  # §2.4
    for key in ("order_id", "shop_id", "search_string", "description"):
        if key in properties and not isinstance(properties[key], str):
            return _not_valid(f"data.{i}.properties.{key}", "string")
    if "num_items" in properties and not _is_integer(properties["num_items"]):
        return _not_valid(f"data.{i}.properties.num_items", "integer")
    ids = properties.get("content_ids", [])
    if not isinstance(ids, list) or not all(isinstance(item, str) for item in ids):
        return _not_valid(f"data.{i}.properties.content_ids", "list of strings")
    if "contents" in properties:
        contents = properties["contents"]
        if not isinstance(contents, list):
            return _not_valid(f"data.{i}.properties.contents", "list")
        for j, item in enumerate(contents):
            if not isinstance(item, dict):
                return _not_valid(f"data.{i}.properties.contents.{j}", "object")
            if "content_id" in item and not isinstance(item["content_id"], str):
                # §2.4/§4 (S4): "...contents.0.content_id: Not a valid string"
                return _not_valid(f"data.{i}.properties.contents.{j}.content_id", "string")
            if "price" in item and not is_number(item["price"]):
                return _not_valid(f"data.{i}.properties.contents.{j}.price", "number")
            if "quantity" in item and not _is_integer(item["quantity"]):
                return _not_valid(f"data.{i}.properties.contents.{j}.quantity", "integer")
    return None


def _not_valid(path: str, kind: str) -> tuple[int, str]:
    return PARAM_ERROR, f"{path}: Not a valid {kind}"


def is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_integer(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)
