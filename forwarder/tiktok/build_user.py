"""Build the user object of TikTok's event: identifiers normalised and hashed, personal ones
sent only with ``ad_user_data`` consent, keys TikTok documents for other event sources left out.

``forwarder.tiktok.build`` calls ``user_object`` once per event that has a user; what each key
is and how it is fixed is ``forwarder.tiktok.schema``'s table (§ are to tiktok-events-api.md).
"""

from __future__ import annotations

from collections.abc import Callable
from socket import AF_INET, AF_INET6, inet_pton
from typing import Any

from forwarder.tiktok import schema
from forwarder.tiktok.checks import (
    TYPE,
    UNKNOWN_KEY,
    Invalid,
    check_att_status,
    key_path,
    source_names,
    type_name,
    unknown_key,
)
from forwarder.tiktok.normalise import HASH_CACHE, normalize_gaid, normalize_idfa, normalize_ip
from forwarder.tiktok.spec import (
    EVENT_SOURCES,
    HASHED_LIST_KEYS,
    HASHED_SCALAR_KEYS,
    PLAIN_KEYS,
    USER_KEYS,
)

#: docs/contract.md: what ``ad_user_data: denied`` keeps on this machine.
PERSONAL_KEYS = frozenset(HASHED_LIST_KEYS + HASHED_SCALAR_KEYS + ("idfa", "gaid"))

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
#: normalise.hash_identifier through the process's bounded cache: (kind, raw, region) -> hash.
_hashed = HASH_CACHE.hashed


def user_object(
    value: object, region: str | None, personal: bool, warnings: list[str], source: str
) -> dict[str, Any]:
    """Return *value*, payload.user, as sent for *source*; *personal*: ad_user_data granted."""
    if not isinstance(value, dict):
        raise Invalid(
            TYPE, "payload.user", f"payload.user must be an object, got {type_name(value)}"
        )
    if not value.keys() <= _USER_KEYS_FOR[source]:
        value = _user_for_source(value, source, warnings)
    # The object is this call's own (parsed from the row): changed in place and sent, keys in
    # the order given, the unsent removed at the end. Per event, the usual cases run inline: a
    # plain key, one identifier as a string, an ip normalize_ip keeps as is.
    unsent: list[str] | None = None
    for key, given in value.items():
        kind = _USER_KINDS[key]
        if given is None:
            pass
        elif kind is _PLAIN:
            if not isinstance(given, str):
                raise _not_a_string(key, given)
            if personal or key not in PERSONAL_KEYS:
                if given.strip():
                    continue  # §6 "Never hash": sent as given
                warnings.append(f"user.{key} dropped: empty")
        elif kind is _HASHED_LIST and isinstance(given, str):
            if personal:
                hashed = _hashed(key, given, region)  # normalised and hashed once per visitor
                if hashed is not None:
                    value[key] = [hashed]
                    continue
                warnings.append(f"user.{key} dropped: {_why_invalid(key, given, region)}")
        elif kind is _HASHED_SCALAR and isinstance(given, str):
            if personal:
                hashed = _hashed(key, given, region)
                if hashed is not None:
                    value[key] = hashed
                    continue
                warnings.append(f"user.{key} dropped: empty")
        elif key == "ip" and isinstance(given, str):
            try:
                inet_pton(AF_INET6 if ":" in given else AF_INET, given)
                continue
            except OSError:
                if _fix_user_key(value, key, given, kind, region, personal, warnings):
                    continue
        elif _fix_user_key(value, key, given, kind, region, personal, warnings):
            continue
        unsent = _also(unsent, key)
    if unsent is not None:
        for key in unsent:
            del value[key]
    return value


def _fix_user_key(
    value: dict[str, Any],
    key: str,
    given: object,
    kind: str,
    region: str | None,
    personal: bool,
    warnings: list[str],
) -> bool:
    """Fix one of the rarer user keys in *value*; return whether it is sent."""
    if kind is _HASHED_LIST:  # a list of identifiers
        items = _string_list(given, key)
        hashes = _hash_list(key, given, items, region, warnings) if personal else None
        if hashes:
            value[key] = hashes  # §2.3 / §6: sent as a list of hashes
        return bool(hashes)
    if kind is _CHECKED:
        value[key] = check_att_status(given, f"payload.user.{key}")
        return True
    if not isinstance(given, str):
        raise _not_a_string(key, given)
    if kind is _NORMALIZED:
        # schema: ip, idfa and gaid are sent raw but normalised; unreadable, dropped.
        if not personal and key in PERSONAL_KEYS:
            return False
        normalize, why = _PLAIN_NORMALIZERS[key]
        normalized = normalize(given)
        if normalized is None:
            warnings.append(f"user.{key} dropped: {why if given.strip() else 'empty'}")
            return False
        value[key] = normalized
        return True
    hashed = _hashed(key, given, region) if personal else None  # a hashed scalar
    if hashed is None:
        if personal:
            warnings.append(f"user.{key} dropped: empty")
        return False
    value[key] = hashed
    return True


def _also(keys: list[str] | None, key: str) -> list[str]:
    # The list of unsent keys is made on the first one only: most user objects have none.
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
                key_path("payload.user", key),
                f"payload.user has {unknown_key(key)}; allowed: {', '.join(USER_KEYS)}",
            )
    allowed = _USER_KEYS_FOR[source]
    kept: dict[str, Any] = {}
    for key, given in value.items():
        if key in allowed:
            kept[key] = given
        elif given is not None:
            sources = schema.BY_PATH[f"user.{key}"].sources
            warnings.append(
                f"user.{key} not sent: TikTok documents it for {source_names(sources)} events"
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
    for index, raw in enumerate(items):
        hashed = _hashed(key, raw, region) if raw.strip() else None
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
