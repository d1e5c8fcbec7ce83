"""TikTok's Events 2.0 event and request as one declarative table: type, fix and verdict per field.

The event builder (``forwarder.tiktok.build``, every event) and the lint (``forwarder check
--payload``) both read this table: the builder checks and normalises each typed field with the
``check`` of its row, and the lint reports the builder's refusals, so the two cannot disagree.
A field whose value is wrong gets the row's verdict: DEAD (the row is refused with code
``malformed`` and a reason naming the rule and the field), or DROP (the field is not sent; a
warning says why).

Sources, cited per row (§ are to tiktok-events-api.md; the repositories at the commits named):

- S1: bububa/tiktok-business ``model/event/track.go`` (commit 7aa26bb2, 2025-09-09), the field
  comments of TikTok's Events API 2.0 portal pages; ``enum/event_type.go`` (commit 4d9271cf).
- S2: tiktok/tiktok-business-api-sdk (commit f809c396) ``python_sdk/business_api_client/models/
  pixel_properties.py``, ``pixel_content.py``, ``pixel_context_user.py`` and
  ``python_sdk/docs/PixelProperties.md``, ``PixelContent.md``: TikTok's own (Events 1.0) types;
  ``python_sdk/business_api_client/tiktok_business/tiktok_code.py``: what TikTok answers a field
  of the wrong type (``ERROR_CODE_PARAM_ERROR = 40002``, "Not a valid string", §4) and an
  identifier sent unhashed (``ERROR_CODE_PII_NOT_HASHED = 40062``).

Why a table and not a pydantic model: validating the same fields with pydantic models took
several times the builder's whole budget per event (bench/model_choice.py measures both).
"""

# ruff: noqa: E501 (the field table below is one field per line, read as a table)

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from forwarder.tiktok.checks import (
    ALL,
    APP,
    CRM,
    DEAD,
    DROP,
    NONE,
    TYPE,
    WEB,
    WEB_APP,
    Invalid,
    check_att_status,
    check_boolean,
    check_content_type,
    check_currency,
    check_id,
    check_ids,
    check_integer,
    check_number,
    check_string,
    type_name,
)
from forwarder.tiktok.spec import ATT_STATUSES, CONTENT_TYPES, CURRENCIES

Check = Callable[[object, str], object]


class Field(NamedTuple):
    """One field of TikTok's event: what it is, how it is fixed, and what a wrong value costs."""

    path: str  # as in TikTok's event; "[]" marks each element of a list
    type: str  # the JSON type TikTok documents (see JSON_TYPES)
    sources: frozenset[str]  # the event_source values TikTok documents it for
    required: frozenset[str]  # the event_source values TikTok requires it for
    fix: str  # what the builder normalises, "" when it sends the value as given
    wrong: str  # a value of the right type but wrong: DEAD, or DROP (not sent, a warning); a
    # wrong JSON type is always DEAD, a field sent for another event_source always DROP
    check: Check | None  # the builder's check (build_user.py hashes and drops identifiers itself)
    cite: str


#: The Python types each documented JSON type is sent as (bool is not an int here).
JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "id": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "currency": (str,),
    "content_type": (str,),
    "att_status": (str,),
    "object": (dict,),
    "list": (list,),
    "id list": (list,),
    "hashed list": (list,),
    "hashed": (str,),
}
#: The values an enumerated type takes.
JSON_VALUES: dict[str, frozenset[str]] = {
    "currency": CURRENCIES,
    "content_type": CONTENT_TYPES,
    "att_status": ATT_STATUSES,
}

# The builder's fast test per key is "type(value) in accepted"; for an enumerated or a list key
# the accepted tuple is one of these two objects, which says what else to check.
_LISTED = tuple([str])  # a str that must also be one of the listed values
_OBJECTS = tuple([list])  # a list of objects, whose fields are tested by type: Checked.items
_CHECKED = tuple([list])  # another list, which its check tests


class Checked(NamedTuple):
    """The checked fields of one object, as the builder runs them: fast for right values."""

    types: dict[str, tuple[type, ...]]  # every checked key: the types accepted as they are
    values: dict[str, frozenset[str]]  # enumerated keys: the values accepted
    items: dict[str, dict[str, tuple[type, ...]]]  # lists of objects: their fields' types
    checks: dict[str, Check]  # every checked key: what fixes or refuses another value
    paths: dict[str, str]  # list keys: their path in a reason
    simple: bool  # no enumerated or list key: the type test is the whole check


def typed(obj: dict[str, Any], checked: Checked, where: str, index: int = -1) -> None:
    """Check and fix, in place, the fields of *obj* that *checked* names; null means absent.

    *obj* is ``where`` (or its element *index*): the path is only spelt out for a reason. Right
    values cost a type test each; anything else takes the slow pass, which fixes or refuses.
    """
    types = checked.types
    try:
        for key, given in obj.items():
            accepted = types[key]
            if type(given) not in accepted:
                break  # another type (or null)
            if accepted is _LISTED:
                if given not in checked.values[key]:
                    break
            elif accepted is _OBJECTS:
                # Each item's fields by type, as above, inlined: contents come with every sale.
                item_types = checked.items[key]
                for item in given:
                    if type(item) is not dict:
                        break
                    for name, field in item.items():
                        if type(field) not in item_types[name]:
                            break
                    else:
                        continue
                    break
                else:
                    continue
                break
            elif accepted is _CHECKED:
                checked.checks[key](given, checked.paths[key])
        else:
            return
    except KeyError:  # a custom key, sent as given
        if _typed_custom(obj, checked):
            return
    _fix(obj, checked, where, index)


def _typed_custom(obj: dict[str, object], checked: Checked) -> bool:
    """typed()'s fast test for an object with custom keys: whether it finds nothing to fix."""
    types = checked.types
    for key, given in obj.items():
        accepted = types.get(key)
        if accepted is None:
            continue
        if type(given) not in accepted:
            return False
        if accepted is _LISTED:
            if given not in checked.values[key]:
                return False
        elif accepted is _OBJECTS or accepted is _CHECKED:
            checked.checks[key](given, checked.paths[key])  # a list: its check fixes or refuses
    return True


def _fix(obj: dict[str, object], checked: Checked, where: str, index: int) -> None:
    nulls = [key for key, given in obj.items() if given is None and key in checked.checks]
    for key in nulls:
        del obj[key]
    for key, given in obj.items():
        check = checked.checks.get(key)
        if check is not None:
            # An existing key is replaced: the dict keeps its size while iterated.
            obj[key] = check(given, f"{where}.{key}" if index < 0 else f"{where}[{index}].{key}")


def check_contents(value: object, field: str) -> object:
    """A list of objects, each checked against the ``properties.contents[]`` rows."""
    if type(value) is not list:
        raise Invalid(TYPE, field, f"{field} must be a list of objects, got {type_name(value)}")
    types = CONTENT_RULES.types
    for item in value:
        if type(item) is not dict:
            index = _index(value, item)
            raise Invalid(
                TYPE,
                f"{field}[{index}]",
                f"{field}[{index}] must be an object, got {type_name(item)}",
            )
        try:
            for key, given in item.items():  # typed(), inlined: this runs for every item
                if type(given) not in types[key]:
                    _fix(item, CONTENT_RULES, field, _index(value, item))
                    break
        except KeyError:  # a custom key
            typed(item, CONTENT_RULES, field, _index(value, item))
    return value


def _index(items: list[object], item: object) -> int:
    """The position of *item* itself in *items* (found only for a reason: not per event)."""
    return next(index for index, other in enumerate(items) if other is item)


_S1_USER = "S1 User"
_HASHED = "SHA-256 of the normalised value (docs/tiktok-events-api.md §6)"
# fmt: off
FIELDS: tuple[Field, ...] = (
    # §2.1: the request. event_source_id is the row's pixel_code or TIKTOK_PIXEL_CODE.
    Field("event_source", "string", ALL, ALL, "trimmed; blank is web", DEAD, None, "S1 TrackRequest.EventSource"),
    Field("event_source_id", "string", ALL, ALL, "trimmed", DEAD, None, "S1 TrackRequest.EventSourceID"),
    Field("test_event_code", "string", ALL, NONE, "trimmed", DEAD, None, "S1 TrackRequest.TestEventCode"),
    # §2.2: one event.
    Field("event", "string", ALL, ALL, "trimmed; offline: standard events only", DEAD, None, "S1 Event.Event"),
    Field("event_time", "integer", ALL, ALL, "a fraction truncated; future times sent as now", DEAD, None, "S1 Event.EventTime"),
    Field("event_id", "string", ALL, ALL, "sent byte for byte (the Pixel's dedup key)", DEAD, None, "S1 Event.EventID"),
    Field("user", "object", ALL, NONE, "", DEAD, None, "S1 Event.User"),
    Field("properties", "object", ALL, NONE, "", DEAD, None, "S1 Event.Properties"),
    Field("page", "object", ALL, WEB, "", DEAD, None, "S1 Event.Page"),
    Field("app", "object", ALL, APP, "", DEAD, None, "S1 Event.App"),
    Field("ad", "object", APP, NONE, "", DEAD, None, "S1 Event.Ad (app events only)"),
    Field("lead", "object", ALL, CRM, "", DEAD, None, "S1 Event.Lead"),
    Field("limited_data_use", "boolean", WEB_APP, NONE, "", DEAD, check_boolean, "S1 Event.LimitedDataUse; §7.3"),
    # §2.3: user. Hashed identifiers that cannot be read are dropped, as are wrong-source fields.
    Field("user.email", "hashed list", ALL, NONE, "trimmed, lower-cased; " + _HASHED, DROP, None, _S1_USER + ".Email"),
    Field("user.phone", "hashed list", ALL, NONE, "E.164 with '+'; " + _HASHED, DROP, None, _S1_USER + ".Phone"),
    # S1 documents external_id for web and CRM; Segment, which TikTok maintains, sends it for app
    # and offline events too (§2.3), so it is sent for every source.
    Field("user.external_id", "hashed list", ALL, NONE, "as given; " + _HASHED, DROP, None, _S1_USER + ".ExternalID; S3"),
    Field("user.first_name", "hashed", ALL, NONE, "trimmed, lower-cased; " + _HASHED, DROP, None, "§2.3 (S3, S4, S5)"),
    Field("user.last_name", "hashed", ALL, NONE, "trimmed, lower-cased; " + _HASHED, DROP, None, "§2.3 (S3, S4, S5)"),
    Field("user.zip_code", "hashed", ALL, NONE, "lower-cased, no spaces or dashes; " + _HASHED, DROP, None, "§2.3 (S3, S4, S5)"),
    Field("user.ttclid", "string", WEB, NONE, "", DROP, None, _S1_USER + ".Ttclid"),
    Field("user.ttp", "string", WEB, NONE, "", DROP, None, _S1_USER + ".Ttp"),
    Field("user.ip", "string", WEB_APP, NONE, "trimmed", DROP, None, _S1_USER + ".IP"),
    Field("user.user_agent", "string", WEB_APP, NONE, "", DROP, None, _S1_USER + ".UserAgent"),
    Field("user.locale", "string", WEB_APP, NONE, "", DROP, None, _S1_USER + ".Locale"),
    Field("user.idfa", "string", APP, NONE, "trimmed; upper-case, a SHA-256 lower-case", DROP, None, _S1_USER + ".IDFA"),
    Field("user.idfv", "string", APP, NONE, "", DROP, None, _S1_USER + ".IDFV"),
    Field("user.gaid", "string", APP, NONE, "trimmed, lower-cased", DROP, None, _S1_USER + ".GAID"),
    Field("user.att_status", "att_status", APP, NONE, "trimmed, upper-cased", DEAD, check_att_status, _S1_USER + ".AttStatus"),
    Field("user.city", "string", ALL, NONE, "", DROP, None, "§2.3 (S3, S4)"),
    Field("user.state", "string", ALL, NONE, "", DROP, None, "§2.3 (S3, S4)"),
    Field("user.country", "string", ALL, NONE, "", DROP, None, "§2.3 (S3, S4)"),
    # §2.4: properties; keys not listed here are custom properties, sent as given.
    Field("properties.value", "number", ALL, NONE, 'a decimal in a string ("23.00") to a number', DEAD, check_number, "S1 Properties.Value; S2 PixelProperties.value float"),
    Field("properties.currency", "currency", ALL, NONE, "trimmed, upper-cased", DEAD, check_currency, "S1 Properties.Currency; S2 PixelProperties.md"),
    Field("properties.content_type", "content_type", ALL, NONE, "trimmed, lower-cased", DEAD, check_content_type, "S1 Properties.ContentType"),
    Field("properties.contents", "list", ALL, NONE, "", DEAD, check_contents, "S1 Properties.Contents"),
    Field("properties.contents[].content_id", "id", ALL, NONE, "a whole number to its digits", DEAD, check_id, "S1 Content.ContentID; S2 PixelContent.content_id str"),
    Field("properties.contents[].price", "number", ALL, NONE, "a decimal in a string to a number", DEAD, check_number, "S1 Content.Price; S2 PixelContent.price float"),
    Field("properties.contents[].quantity", "integer", ALL, NONE, '2.0 and "2" to 2', DEAD, check_integer, "S2 PixelContent.quantity int; §2.4 (S3, S5)"),
    Field("properties.contents[].content_name", "string", ALL, NONE, "", DEAD, check_string, "S1 Content.ContentName"),
    Field("properties.contents[].content_category", "string", ALL, NONE, "", DEAD, check_string, "S1 Content.ContentCategory"),
    Field("properties.contents[].brand", "string", ALL, NONE, "", DEAD, check_string, "S1 Content.Brand"),
    Field("properties.content_ids", "id list", ALL, NONE, "whole numbers to their digits", DEAD, check_ids, "S1 Properties.ContentIDs"),
    Field("properties.num_items", "integer", ALL, NONE, '2.0 and "2" to 2', DEAD, check_integer, "S1 Properties.NumItems"),
    Field("properties.search_string", "string", ALL, NONE, "", DEAD, check_string, "S1 Properties.SearchString"),
    Field("properties.query", "string", ALL, NONE, "", DEAD, check_string, "S2 PixelProperties.query; §2.4"),
    Field("properties.description", "string", ALL, NONE, "", DEAD, check_string, "S1 Properties.Description"),
    Field("properties.order_id", "id", ALL, NONE, "a whole number to its digits", DEAD, check_id, "S1 Properties.OrderID"),
    Field("properties.shop_id", "id", ALL, NONE, "a whole number to its digits", DEAD, check_id, "S1 Properties.ShopID"),
    # §2.2: page, app, ad, lead.
    Field("page.url", "string", ALL, WEB, "", DEAD, check_string, "S1 Page.URL"),
    Field("page.referrer", "string", ALL, NONE, "", DEAD, check_string, "S1 Page.Referrer"),
    Field("app.app_id", "id", ALL, APP, "a whole number to its digits", DEAD, check_id, "S1 App.AppID"),
    Field("app.app_name", "string", ALL, NONE, "", DEAD, check_string, "S1 App.AppName"),
    Field("app.app_version", "string", ALL, NONE, "", DEAD, check_string, "S1 App.AppVersion"),
    Field("ad.callback", "string", APP, NONE, "", DEAD, check_string, "S1 Ad.Callback; §2.2"),
    Field("ad.campaign_id", "id", APP, NONE, "a whole number to its digits", DEAD, check_id, "S1 Ad.CampaignID"),
    Field("ad.ad_id", "id", APP, NONE, "a whole number to its digits", DEAD, check_id, "S1 Ad.AdID"),
    Field("ad.creative_id", "id", APP, NONE, "a whole number to its digits", DEAD, check_id, "S1 Ad.CreativeID"),
    Field("ad.is_retargeting", "boolean", APP, NONE, "", DEAD, check_boolean, "S1 Ad.IsRetargeting"),
    Field("ad.attributed", "boolean", APP, NONE, "", DEAD, check_boolean, "S1 Ad.Attributed"),
    Field("ad.attribution_type", "string", APP, NONE, "", DEAD, check_string, "§2.2 (S3; S1 spells it attribute_type)"),
    Field("ad.attribution_provider", "string", APP, NONE, "", DEAD, check_string, "§2.2 (S3)"),
    Field("lead.lead_id", "id", ALL, CRM, "a whole number to its digits", DEAD, check_id, "S1 Lead.LeadID"),
    Field("lead.lead_event_source", "string", ALL, NONE, "", DEAD, check_string, "S1 Lead.LeadEventSource"),
)
# fmt: on
BY_PATH = {field.path: field for field in FIELDS}
#: Required by TikTok's docs, yet no source shows TikTok rejecting an event without them: the
#: lint warns, the builder sends.
WARN_IF_ABSENT = frozenset(("page", "page.url"))


def required(source: str) -> tuple[tuple[str, str], ...]:
    """The (object, key) pairs an event of *source* is refused without (e.g. app.app_id)."""
    return tuple(
        (field.path.split(".")[0], field.path.split(".")[1])
        for field in FIELDS
        if source in field.required
        and field.path.count(".") == 1
        and not field.path.startswith("user.")
        and field.path not in WARN_IF_ABSENT
    )


def rules(prefix: str) -> Checked:
    """The checked fields directly under *prefix* (e.g. "properties."), for the builder."""
    checked = Checked({}, {}, {}, {}, {}, simple=True)
    for field in FIELDS:
        key = field.path.removeprefix(prefix)
        if not field.path.startswith(prefix) or field.check is None or "." in key:
            continue
        checked.checks[key] = field.check
        if field.type in JSON_VALUES:
            checked.types[key] = _LISTED
            checked.values[key] = JSON_VALUES[field.type]
        elif "list" in field.type:
            items = rules(f"{field.path}[].")
            if field.type == "list" and items.simple:
                checked.types[key] = _OBJECTS
                checked.items[key] = items.types
            else:
                checked.types[key] = _CHECKED
            checked.paths[key] = f"payload.{field.path}"
        else:
            checked.types[key] = JSON_TYPES[field.type]
    return checked._replace(simple=not checked.values and not checked.paths)


PROPERTY_RULES = rules("properties.")
CONTENT_RULES = rules("properties.contents[].")
assert CONTENT_RULES.simple, "check_contents tests the items' fields by type alone"
PAGE_RULES = rules("page.")
APP_RULES = rules("app.")
AD_RULES = rules("ad.")
LEAD_RULES = rules("lead.")


def user_keys(source: str) -> frozenset[str]:
    """The user keys TikTok documents for *source*."""
    return frozenset(
        field.path.removeprefix("user.")
        for field in FIELDS
        if field.path.startswith("user.") and source in field.sources
    )
