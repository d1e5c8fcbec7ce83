"""The lint's advice on an event's payload: identifiers that cannot match (hashed wrong, not an
address, a private ip), a sale without its value, a web event without its page, fields the
daemon had to fix, and the match keys an event is really sent with.

§ are to tiktok-events-api.md.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator, Mapping
from typing import Any

import orjson

from forwarder.destination import Built
from forwarder.tiktok import schema
from forwarder.tiktok.findings import WARNING, Finding
from forwarder.tiktok.normalise import hash_identifier
from forwarder.tiktok.spec import HASHED_LIST_KEYS, HASHED_SCALAR_KEYS, PLAIN_KEYS

#: Events that report a sale: without properties.value TikTok reports no revenue for them.
VALUE_EVENTS = frozenset(("Purchase", "CompletePayment", "PlaceAnOrder", "Subscribe"))
_SINGLE_MATCH_KEYS = frozenset(("email", "phone", "external_id", "ttclid", "ttp"))
_HEX = re.compile(r"[0-9a-fA-F]+")
#: Hex digests of the wrong algorithm, by length.
_WRONG_DIGESTS = {32: "an MD5", 40: "a SHA-1"}
_SHA256_HEX_LEN = 64


def usable_payload(raw: object) -> dict[str, Any] | None:
    """Return the payload object to inspect, or None when unusable (the builder says why)."""
    if isinstance(raw, str):
        try:
            raw = orjson.loads(raw) if raw.strip() else None
        except orjson.JSONDecodeError:
            return None
    if raw is not None and not isinstance(raw, dict):
        return None
    return raw or {}


def payload_advice(
    body: dict[str, Any], name: str | None, source: str | None, region: str | None
) -> Iterator[Finding]:
    """Warn about the user's identifiers, the properties and the context objects of *body*."""
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
                f"user.{key} looks hashed, but TikTok needs it raw "
                "(docs/tiktok-events-api.md §6) and cannot match a hash of it; send the value as "
                "the browser or device gave it",
            )
        elif key == "ip" and not _public(value.strip()):
            yield Finding(
                WARNING,
                "user.ip",
                "user.ip is not a public address (a private, loopback or link-local one, such "
                "as a proxy's): TikTok matches on the public IP of the device "
                "(docs/tiktok-events-api.md §2.3); send the client's address (e.g. from "
                "X-Forwarded-For)",
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
            f"{source} event without page.url: TikTok's docs require it "
            "(docs/tiktok-events-api.md §2.2) and use it for matching and diagnostics; send the "
            "full page URL (location.href, with its query string, where ttclid is)",
        )


def fix_advice(
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


def match_key_advice(keys: frozenset[str], source: str | None) -> Iterator[Finding]:
    """Warn when the match keys really sent cannot attribute the event, or only weakly."""
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
