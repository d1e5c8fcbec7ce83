"""Meta Conversions API events, as a shop builds them for Meta, turned into TikTok's event; pure.

A row whose ``payload_format`` is ``meta_capi`` holds one Meta server event. ``convert`` maps it,
by the one table below, onto forwarder's own payload shape (``user``, ``properties``, ``page``,
``app``, ``limited_data_use``, ``consent``); the event builder then normalises, hashes and checks
it as it does every row. What has no TikTok field is dropped and named, never lost silently.

Sources (docs/meta-capi.md has the table with them): Meta's Conversions API pages *Server Event
Parameters*, *Customer Information Parameters*, *Custom Data Parameters*, *Data Processing
Options*, *App Events*; facebook/facebook-python-business-sdk ``adobjects/serverside/*``;
facebook/capi-param-builder (its ``<hash>.<appendix>`` values); and TikTok's side,
tiktok-events-api.md §2, §6, §7.3, §8.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Final

from forwarder.tiktok.checks import JSON, TYPE, VALUE, Invalid
from forwarder.tiktok.meta_values import md5, sha256, strings, unsuffixed, values

#: The value of ``payload_format`` for rows in Meta's shape (NULL or ``tiktok``: TikTok's own).
META_CAPI: Final = "meta_capi"
TIKTOK: Final = "tiktok"
FORMATS: Final = (TIKTOK, META_CAPI)

#: Meta's ``action_source`` → TikTok's ``event_source``. Offline event sets are TikTok's
#: channel for conversions outside a website or an app; business messaging rests on Meta-only
#: click ids, so those rows are refused.
ACTION_SOURCES: Final[dict[str, str | None]] = {
    "website": "web",
    "app": "app",
    "physical_store": "offline",
    "phone_call": "offline",
    "chat": "offline",
    "email": "offline",
    "other": "offline",
    "system_generated": "offline",
    "business_messaging": None,
}

#: Meta's event names whose TikTok name differs for app events (the others keep their name: the
#: standard web names are the same on both sides, and an unknown name is a custom event).
APP_NAMES: Final = {
    "CompleteRegistration": "Registration",
    "InitiateCheckout": "Checkout",
    "Lead": "GenerateLead",
    "MobileAppInstall": "InstallApp",
}

#: Meta's own identifiers and fields with no TikTok field: dropped, named, counted.
META_ONLY: Final = frozenset(
    (
        "fbc", "fbp", "ge", "db", "f5first", "f5last", "fi", "dobd", "dobm", "doby",
        "subscription_id", "fb_login_id", "lead_id", "anon_id", "page_id",
        "page_scoped_user_id", "ctwa_clid", "ig_account_id", "ig_sid",
    )
)  # fmt: skip

#: custom_data keys sent under the same name in properties, and the renamed ones.
SAME_PROPERTIES: Final = (
    "value", "currency", "content_ids", "content_type", "order_id", "num_items", "search_string",
    "predicted_ltv", "delivery_category", "description",
)  # fmt: skip
CONTENT_KEYS: Final = {
    "id": "content_id",
    "quantity": "quantity",
    "item_price": "price",
    "title": "content_name",
    "category": "content_category",
    "brand": "brand",
}

_SCALARS = {"fn": "first_name", "ln": "last_name", "zp": None}
_NAME = r"[A-Za-z_][A-Za-z0-9_]{0,63}"
_PATH = re.compile(rf"{_NAME}(?:\.{_NAME}|\[\d+\]|\[1:\])*")


class NotConvertible(Invalid):
    """The Meta event cannot become a TikTok event: the builder refuses the row with its rule,
    the Meta field (``payload.<field>``) and a message saying why (never a value)."""


@dataclass
class Converted:
    """A Meta event in forwarder's payload shape, with what was mapped and what was dropped."""

    event: str
    event_source: str
    payload: dict[str, Any] = field(default_factory=dict)
    #: (Meta field, TikTok field) for every field that was carried over.
    mapped: list[tuple[str, str]] = field(default_factory=list)
    #: (Meta field, why) for every field that was not.
    dropped: list[tuple[str, str]] = field(default_factory=list)

    def note(self) -> str:
        """One line naming what was dropped, each field and why once, for the log and the row."""
        names = ", ".join(f"{shown(name)} ({why})" for name, why in dict.fromkeys(self.dropped))
        return f"not carried over from Meta's event: {names}" if names else ""


def shown(name: str) -> str:
    """A dropped field's name as a reason may show it: an application's key may be anything."""
    return name if _PATH.fullmatch(name) else "a key not shown (not a field name)"


def convert(event_name: str, event_source: str | None, document: object) -> Converted:
    """Map one Meta server event onto forwarder's payload; raise NotConvertible."""
    if not isinstance(document, dict):
        raise NotConvertible(JSON, "payload", "a meta_capi payload must be one Meta server event")
    if "data" in document:
        why = "a meta_capi payload is one Meta server event, not a request body with data"
        raise NotConvertible(VALUE, "payload.data", why)
    source = _event_source(document.get("action_source"), event_source)
    name = APP_NAMES.get(event_name, event_name) if source == "app" else event_name
    out = Converted(name, source)
    given_name = document.get("event_name")
    if given_name is not None and given_name != event_name:
        why = "event_name differs from the row's event column"
        raise NotConvertible(VALUE, "payload.event_name", why)
    _user(document.get("user_data"), document.get("app_data"), out)
    _properties(document.get("custom_data"), out)
    _page(document, out)
    _app(document.get("app_data"), out)
    _options(document, out)
    known = {"event_name", "event_time", "event_id", "action_source", "user_data",
             "custom_data", "event_source_url", "referrer_url", "app_data",
             "data_processing_options", "data_processing_options_country",
             "data_processing_options_state", "opt_out"}  # fmt: skip
    for key in document:
        if key not in known:
            out.dropped.append((str(key), "no TikTok field"))
    return out


def _event_source(action_source: object, column: str | None) -> str:
    if action_source is None:
        return column or "web"
    if not isinstance(action_source, str) or action_source not in ACTION_SOURCES:
        why = f"action_source must be one of {', '.join(ACTION_SOURCES)} (Meta's values)"
        raise NotConvertible(VALUE, "payload.action_source", why)
    source = ACTION_SOURCES[action_source]
    if source is None:
        why = "action_source business_messaging: its attribution rests on Meta-only click ids"
        raise NotConvertible(VALUE, "payload.action_source", why)
    return source


def _user(user_data: object, app_data: object, out: Converted) -> None:
    if user_data is None:
        return
    if not isinstance(user_data, dict):
        raise NotConvertible(TYPE, "payload.user_data", "user_data must be an object")
    user: dict[str, Any] = {}
    for key, value in user_data.items():
        where = f"user_data.{key}"
        if value is None:
            continue  # JSON null: absent
        if not strings(value) and key not in META_ONLY:
            out.dropped.append((where, "not a string or a list of strings"))
        elif key in META_ONLY:
            out.dropped.append((where, "Meta only"))
        elif key in ("em", "external_id"):
            _identifiers(where, value, "email" if key == "em" else "external_id", user, out)
        elif key == "ph":
            _phones(where, value, user, out)
        elif key in ("fn", "ln", "zp"):
            _hashed_scalar(where, value, _SCALARS[key], user, out)
        elif key in ("ct", "st", "country"):
            _plain(where, value, {"ct": "city", "st": "state"}.get(key, "country"), user, out)
        elif key in ("client_ip_address", "client_user_agent") and isinstance(value, str):
            target = "ip" if key == "client_ip_address" else "user_agent"
            user[target] = value
            out.mapped.append((where, f"user.{target}"))
        elif key == "madid" and isinstance(value, str):
            _advertising_id(value, app_data, user, out)
        else:
            out.dropped.append((where, "no TikTok field"))
    if user:
        out.payload["user"] = user


def _identifiers(
    where: str, value: object, target: str, user: dict[str, Any], out: Converted
) -> None:
    kept: list[str] = []
    for given in values(value):
        item = unsuffixed(given)
        if md5(item):
            out.dropped.append((where, "an MD5 hash: TikTok takes SHA-256 only"))
        else:
            kept.append(item)  # raw or SHA-256: the builder normalises or passes it through
    if kept:
        user[target] = kept
        out.mapped.append((where, f"user.{target}"))


def _phones(where: str, value: object, user: dict[str, Any], out: Converted) -> None:
    kept: list[str] = []
    for given in values(value):
        item = unsuffixed(given).strip()
        if sha256(item) or md5(item):
            # Meta hashes digits without "+", TikTok the E.164 form with it: a hash cannot be
            # turned into the other (tiktok-events-api.md §6).
            out.dropped.append((where, "hashed without the + TikTok's hash needs"))
        elif item:
            kept.append(item if item.startswith("+") else "+" + item)
    if kept:
        user["phone"] = kept
        out.mapped.append((where, "user.phone"))


def _hashed_scalar(
    where: str, value: object, target: str | None, user: dict[str, Any], out: Converted
) -> None:
    items = [unsuffixed(item) for item in values(value)]
    if not items:
        return
    first = items[0]
    if target is None:  # zp: Meta cuts a ZIP+4 at its dash, forwarder would join the two parts
        target = "zip_code"
        first = first if sha256(first) else first.split("-", 1)[0]
    user[target] = first
    out.mapped.append((where, f"user.{target}"))
    if len(items) > 1:
        out.dropped.append((f"{where}[1:]", "TikTok takes one value"))


def _plain(where: str, value: object, target: str, user: dict[str, Any], out: Converted) -> None:
    items = values(value)
    if not items:
        return
    if sha256(items[0]) or sha256(unsuffixed(items[0])):
        out.dropped.append((where, "hashed, but TikTok takes it in clear"))
        return
    user[target] = items[0].strip().lower()
    out.mapped.append((where, f"user.{target}"))
    if len(items) > 1:
        out.dropped.append((f"{where}[1:]", "TikTok takes one value"))


def _platform(app_data: object) -> str | None:
    """``a2`` (Android) or ``i2`` (iOS), from app_data.extinfo[0]."""
    if isinstance(app_data, dict):
        extinfo = app_data.get("extinfo")
        if isinstance(extinfo, list) and extinfo and isinstance(extinfo[0], str):
            return extinfo[0]
    return None


def _advertising_id(value: str, app_data: object, user: dict[str, Any], out: Converted) -> None:
    platform = _platform(app_data)
    if platform in ("a2", "i2"):
        target = "gaid" if platform == "a2" else "idfa"
        user[target] = value
        out.mapped.append(("user_data.madid", f"user.{target}"))
    else:
        out.dropped.append(("user_data.madid", "no app_data.extinfo platform (a2 or i2)"))


def _properties(custom_data: object, out: Converted) -> None:
    if custom_data is None:
        return
    if not isinstance(custom_data, dict):
        raise NotConvertible(TYPE, "payload.custom_data", "custom_data must be an object")
    properties: dict[str, Any] = {}
    for key, value in custom_data.items():
        where = f"custom_data.{key}"
        if key in SAME_PROPERTIES:
            properties[key] = value
            out.mapped.append((where, f"properties.{key}"))
        elif key == "contents" and isinstance(value, list):
            contents = [_content(index, item, out, properties) for index, item in enumerate(value)]
            properties["contents"] = contents
            out.mapped.append((where, "properties.contents"))
        elif key in ("content_name", "content_category"):
            continue  # _single_item_names
        else:
            out.dropped.append((where, "no TikTok field"))
    _single_item_names(custom_data, properties, out)
    if properties.get("contents") and "content_type" not in properties:
        properties["content_type"] = "product"  # Meta's contents carry product ids
    if properties:
        out.payload["properties"] = properties


def _content(
    index: int, item: object, out: Converted, properties: dict[str, Any]
) -> dict[str, Any]:
    if not isinstance(item, dict):
        where = f"custom_data.contents[{index}]"
        raise NotConvertible(TYPE, f"payload.{where}", f"{where} must be an object")
    content: dict[str, Any] = {}
    for key, value in item.items():
        target = CONTENT_KEYS.get(key)
        if target is not None:
            content[target] = value
        elif key == "delivery_category":  # TikTok has it per event: the event's own one wins
            properties.setdefault(key, value)
            out.mapped.append((f"custom_data.contents[{index}].{key}", f"properties.{key}"))
        else:
            out.dropped.append((f"custom_data.contents[{index}].{key}", "no TikTok field"))
    return content


def _single_item_names(
    custom_data: dict[str, Any], properties: dict[str, Any], out: Converted
) -> None:
    """TikTok keeps a content's name and category per item: Meta's event-level ones go to the
    one item there is (or make one); with several items, they belong to none."""
    names = {
        key: custom_data[key] for key in ("content_name", "content_category") if key in custom_data
    }
    if not names:
        return
    contents = properties.get("contents")
    if contents and len(contents) > 1:
        out.dropped.extend((f"custom_data.{key}", "TikTok names each item") for key in names)
        return
    if contents:
        contents[0] = {**names, **contents[0]}
    else:
        properties["contents"] = [names]
    out.mapped.extend((f"custom_data.{key}", f"properties.contents[0].{key}") for key in names)


def _page(document: dict[str, Any], out: Converted) -> None:
    page: dict[str, Any] = {}
    for key, target in (("event_source_url", "url"), ("referrer_url", "referrer")):
        if key in document:
            page[target] = document[key]
            out.mapped.append((key, f"page.{target}"))
    if page:
        out.payload["page"] = page


def _app(app_data: object, out: Converted) -> None:
    if app_data is None:
        return
    if not isinstance(app_data, dict):
        raise NotConvertible(TYPE, "payload.app_data", "app_data must be an object")
    extinfo = app_data.get("extinfo")
    info = (
        [item if isinstance(item, str) else "" for item in extinfo]
        if isinstance(extinfo, list)
        else []
    )
    app: dict[str, Any] = {}
    if len(info) > 1 and info[1]:
        app["app_id"] = info[1]
        out.mapped.append(("app_data.extinfo[1]", "app.app_id"))
    if len(info) > 2 and info[2]:
        app["app_version"] = info[2]
        out.mapped.append(("app_data.extinfo[2]", "app.app_version"))
    if app:
        out.payload["app"] = app
    user = out.payload.setdefault("user", {})
    if len(info) > 6 and info[6]:
        user["locale"] = info[6].replace("_", "-")
        out.mapped.append(("app_data.extinfo[6]", "user.locale"))
    tracking = app_data.get("advertiser_tracking_enabled")
    if info and info[0] == "a2":
        user["att_status"] = "NOT_APPLICABLE"
    elif tracking in (0, 1) and not isinstance(tracking, bool):
        user["att_status"] = "AUTHORIZED" if tracking == 1 else "DENIED"
        out.mapped.append(("app_data.advertiser_tracking_enabled", "user.att_status"))
    if app_data.get("application_tracking_enabled") == 0:
        # The person turned tracking off in the app: no identifier of theirs leaves the machine.
        out.payload.setdefault("consent", {})["ad_user_data"] = "denied"
        out.mapped.append(("app_data.application_tracking_enabled", "consent.ad_user_data"))
    if not user:
        del out.payload["user"]
    for key in app_data:
        if key not in ("extinfo", "advertiser_tracking_enabled", "application_tracking_enabled"):
            out.dropped.append((f"app_data.{key}", "no TikTok field"))


def _options(document: dict[str, Any], out: Converted) -> None:
    options = document.get("data_processing_options")
    if isinstance(options, list):
        # Limited Data Use: both platforms restrict processing where US state law asks it.
        out.payload["limited_data_use"] = "LDU" in options
        out.mapped.append(("data_processing_options", "limited_data_use"))
    for key in ("data_processing_options_country", "data_processing_options_state"):
        if key in document:
            out.dropped.append((key, "TikTok decides where limited data use applies"))
    if document.get("opt_out") is True:
        out.dropped.append(("opt_out", "TikTok has no attribution-only flag; the event is sent"))
