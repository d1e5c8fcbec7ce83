"""Tests for forwarder.schema's field table as the builder applies it: fixes, refusals, drops."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from forwarder.destination import Built, Refused
from forwarder.events import OutboxRow
from forwarder.tiktok import checks, schema
from forwarder.tiktok.build import BuildOptions, build
from forwarder.tiktok.build_row import PAYLOAD_KEYS
from forwarder.tiktok.spec import USER_KEYS

NOW = 1_760_000_000.0
OPTS = BuildOptions("PIXEL", "US", "granted", 7 * 86400.0, None)
APP = {"app": {"app_id": "com.example.shop"}}
LEAD = {"lead": {"lead_id": "7131234567890123458"}}
BIG_ID = 7131234567890123458  # above 2**53: a JSON number loses its last digits in most parsers


def row(payload: dict[str, Any], **columns: Any) -> OutboxRow:
    """A row holding *payload*, with *columns* changed."""
    fields: dict[str, Any] = {
        "id": 1,
        "event_id": "order-1",
        "event": "Purchase",
        "event_time": int(NOW) - 60,
        "payload": orjson.dumps(payload).decode(),
        "pixel_code": "PIXEL",
        "event_source": "web",
        "test_event_code": None,
        "attempts": 0,
        "created_at": NOW - 30,
    }
    fields.update(columns)
    return OutboxRow(**fields)


def sent(payload: dict[str, Any], **columns: Any) -> Built:
    """Build and require success."""
    result = build(row(payload, **columns), OPTS, NOW)
    assert isinstance(result, Built), result
    return result


def dead(payload: dict[str, Any], **columns: Any) -> Refused:
    """Build and require a refusal."""
    result = build(row(payload, **columns), OPTS, NOW)
    assert isinstance(result, Refused), result
    return result


# --- fixed: normalised and sent ---------------------------------------------------------------

ITEM = {"content_id": "a"}
FIXES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("currency lower-case", {"currency": "usd"}, {"currency": "USD"}),
    ("currency padded", {"currency": " eur "}, {"currency": "EUR"}),
    ("value in a string", {"value": "23.00"}, {"value": 23.0}),
    ("whole value in a string", {"value": " 46 "}, {"value": 46}),
    ("price in a string", {"contents": [{"price": "8.50"}]}, {"contents": [{"price": 8.5}]}),
    ("quantity in a string", {"contents": [{"quantity": "2"}]}, {"contents": [{"quantity": 2}]}),
    ("whole float quantity", {"contents": [{"quantity": 2.0}]}, {"contents": [{"quantity": 2}]}),
    ("content_id a number", {"contents": [{"content_id": 7}]}, {"contents": [{"content_id": "7"}]}),
    (
        "content_type capitalised",
        {"content_type": " Product_Group"},
        {"content_type": "product_group"},
    ),
    ("content_ids numbers", {"content_ids": [1, "2"]}, {"content_ids": ["1", "2"]}),
    ("order_id a number", {"order_id": BIG_ID}, {"order_id": str(BIG_ID)}),
    ("num_items in a string", {"num_items": "3"}, {"num_items": 3}),
    ("a null is absent", {"value": None, "currency": "USD"}, {"currency": "USD"}),
    ("a custom property", {"coupon": 5, "contents": [ITEM]}, {"coupon": 5, "contents": [ITEM]}),
]


@pytest.mark.parametrize(
    ("given", "properties"),
    [pytest.param(given, want, id=name) for name, given, want in FIXES],
)
def test_typed_properties_are_fixed(given: dict[str, Any], properties: dict[str, Any]) -> None:
    """What has one reading (a code's case, a number in a string, an id as a number) is fixed."""
    result = sent({"properties": given})
    assert result.event["properties"] == properties
    assert result.warnings == ()


def test_lead_id_above_2_53_is_sent_as_a_string() -> None:
    """A crm lead_id written as a JSON number is sent as its exact digits, a string."""
    payload = {"lead": {"lead_id": BIG_ID, "lead_event_source": "HubSpot"}}
    text = orjson.dumps(sent(payload, event_source="crm", event="Qualified").event)
    assert b'"lead_id":"7131234567890123458"' in text


def test_app_id_as_a_number_is_sent_as_a_string() -> None:
    """An App Store id written as a number is sent as a string."""
    event = sent({"app": {"app_id": 343200656}}, event_source="app").event
    assert event["app"] == {"app_id": "343200656"}


def test_fractional_event_time_is_truncated() -> None:
    """A fractional event_time is sent as whole seconds, truncated, not refused."""
    event = sent({}, event_time=int(NOW) - 60 + 0.9).event
    assert event["event_time"] == int(NOW) - 60
    assert type(event["event_time"]) is int


@pytest.mark.parametrize(
    ("given", "ip"),
    [
        (" 203.0.113.69 ", "203.0.113.69"),
        ("203.0.113.69\n", "203.0.113.69"),
        ("2001:db8:1111:a:b0::200", "2001:db8:1111:a:b0::200"),
        ("2001:0db8:1111:000a:00b0:0000:0000:0200", "2001:0db8:1111:000a:00b0:0000:0000:0200"),
    ],
)
def test_ip_is_trimmed_and_kept(given: str, ip: str) -> None:
    """An IPv4 or IPv6 address (full or compressed, §2.3) is trimmed and sent."""
    assert sent({"user": {"ip": given}}).event["user"] == {"ip": ip}


@pytest.mark.parametrize("given", ["unknown", "203.0.113", "256.1.1.1", "01.2.3.4", "::g"])
def test_ip_that_is_not_an_address_is_dropped(given: str) -> None:
    """An ip that is not an address is not sent; a warning says so without quoting it."""
    result = sent({"user": {"ip": given, "user_agent": "Mozilla/5.0"}})
    assert result.event["user"] == {"user_agent": "Mozilla/5.0"}
    assert result.warnings == ("user.ip dropped: not an IPv4 or IPv6 address",)


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        (
            {"idfa": " 6d92078a-8246-4ba4-ae5b-76104861e7dc "},
            {"idfa": "6D92078A-8246-4BA4-AE5B-76104861E7DC"},
        ),
        ({"idfa": "AB" * 32}, {"idfa": "ab" * 32}),
        (
            {"gaid": " 38400000-8CF0-11BD-B23E-10B96E40000D"},
            {"gaid": "38400000-8cf0-11bd-b23e-10b96e40000d"},
        ),
        ({"att_status": "authorized"}, {"att_status": "AUTHORIZED"}),
    ],
)
def test_device_ids_take_tiktoks_case(user: dict[str, str], expected: dict[str, str]) -> None:
    """A raw IDFA is upper-case, a hashed one lower-case; a GAID lower-case; all trimmed."""
    assert sent({"user": user, **APP}, event_source="app").event["user"] == expected


# --- dead: the row is refused with a precise reason ---------------------------------------------

REFUSALS: list[tuple[str, dict[str, Any], dict[str, Any], str, str]] = [
    (
        "currency unknown",
        {"properties": {"currency": "XXX"}},
        {},
        "value",
        "payload.properties.currency",
    ),
    (
        "currency a number",
        {"properties": {"currency": 840}},
        {},
        "type",
        "payload.properties.currency",
    ),
    (
        "value with a comma",
        {"properties": {"value": "12,50"}},
        {},
        "value",
        "payload.properties.value",
    ),
    ("value a bool", {"properties": {"value": True}}, {}, "type", "payload.properties.value"),
    (
        "price with a symbol",
        {"properties": {"contents": [{"price": "$8"}]}},
        {},
        "value",
        "payload.properties.contents[0].price",
    ),
    (
        "fractional quantity",
        {"properties": {"contents": [{"quantity": 1}, {"quantity": 1.5}]}},
        {},
        "value",
        "payload.properties.contents[1].quantity",
    ),
    (
        "content_name a number",
        {"properties": {"contents": [{"content_name": 5}]}},
        {},
        "type",
        "payload.properties.contents[0].content_name",
    ),
    (
        "content_type plural",
        {"properties": {"content_type": "products"}},
        {},
        "value",
        "payload.properties.content_type",
    ),
    (
        "content_ids a string",
        {"properties": {"content_ids": "1,2"}},
        {},
        "type",
        "payload.properties.content_ids",
    ),
    (
        "content_ids a float",
        {"properties": {"content_ids": [1.5]}},
        {},
        "type",
        "payload.properties.content_ids[0]",
    ),
    (
        "num_items fractional",
        {"properties": {"num_items": 2.5}},
        {},
        "value",
        "payload.properties.num_items",
    ),
    ("page.url a number", {"page": {"url": 42}}, {}, "type", "payload.page.url"),
    (
        "app without app_id",
        {"user": {"ip": "203.0.113.9"}},
        {"event_source": "app"},
        "missing",
        "payload.app.app_id",
    ),
    (
        "app with a blank app_id",
        {"app": {"app_id": " "}},
        {"event_source": "app"},
        "missing",
        "payload.app.app_id",
    ),
    (
        "app_id a float",
        {"app": {"app_id": 1.5}},
        {"event_source": "app"},
        "type",
        "payload.app.app_id",
    ),
    ("crm without lead", {}, {"event_source": "crm"}, "missing", "payload.lead.lead_id"),
    (
        "offline custom event",
        {},
        {"event_source": "offline", "event": "GiftCardRedeemed"},
        "source",
        "event",
    ),
    ("offline wrong case", {}, {"event_source": "offline", "event": "purchase"}, "source", "event"),
    (
        "att_status unknown",
        {"user": {"att_status": "DENY"}, **APP},
        {"event_source": "app"},
        "value",
        "payload.user.att_status",
    ),
    (
        "ad flag a string",
        {"ad": {"is_retargeting": "yes"}, **APP},
        {"event_source": "app"},
        "type",
        "payload.ad.is_retargeting",
    ),
    (
        "lead_id a float",
        {"lead": {"lead_id": 1e20}},
        {"event_source": "crm"},
        "type",
        "payload.lead.lead_id",
    ),
]


@pytest.mark.parametrize(
    ("payload", "columns", "rule", "field"),
    [pytest.param(p, c, rule, field, id=name) for name, p, c, rule, field in REFUSALS],
)
def test_what_has_no_one_reading_is_refused(
    payload: dict[str, Any], columns: dict[str, Any], rule: str, field: str
) -> None:
    """A wrong value with no single reading is refused: malformed, with its rule and field."""
    result = dead(payload, **columns)
    assert (result.code, result.rule, result.field) == ("malformed", rule, field)
    assert result.reason.startswith(f"[malformed/{rule}] ")
    assert field.split("[", 1)[0] in result.reason


def test_offline_accepts_legacy_and_sunset_names() -> None:
    """An offline set takes the standard names, the renamed ones and the soft-deprecated ones."""
    for name in ("Purchase", "CompletePayment", "PlaceAnOrder"):
        assert sent({}, event_source="offline", event=name).event["event"] == name


def test_crm_takes_custom_events_with_a_lead() -> None:
    """A crm event may have any name; with lead.lead_id it is sent."""
    assert sent(LEAD, event_source="crm", event="Qualified").event["lead"] == LEAD["lead"]


def test_web_event_without_page_is_sent() -> None:
    """TikTok's docs want page.url for web events, but nothing shows it refuses one without."""
    assert "page" not in sent({"user": {"ttclid": "E.C.P.x"}}).event


# --- dropped: a field TikTok documents for another event_source ---------------------------------


def test_web_fields_are_not_sent_for_app_events() -> None:
    """ttclid and ttp are web-only (§2.3): an app event is sent without them, with a warning."""
    payload = {"user": {"ttclid": "E.C.P.x", "ttp": "ttp-1", "ip": "203.0.113.9"}, **APP}
    result = sent(payload, event_source="app")
    assert result.event["user"] == {"ip": "203.0.113.9"}
    assert result.warnings == (
        "user.ttclid not sent: TikTok documents it for web events",
        "user.ttp not sent: TikTok documents it for web events",
    )
    assert result.match_keys == {"ip"}


def test_app_fields_are_not_sent_for_web_events() -> None:
    """idfa, idfv, gaid and att_status are app-only; so is the ad object (§2.2, §2.3)."""
    payload = {
        "user": {"idfa": "X", "gaid": "y", "email": "a@example.com"},
        "ad": {"callback": "c"},
    }
    result = sent(payload)
    assert set(result.event["user"]) == {"email"}
    assert "ad" not in result.event
    assert result.warnings == (
        "user.idfa not sent: TikTok documents it for app events",
        "user.gaid not sent: TikTok documents it for app events",
        "ad not sent: TikTok documents it for app events",
    )


def test_ip_and_user_agent_are_not_sent_for_offline_events() -> None:
    """ip, user_agent and locale are documented for web and app events only."""
    result = sent({"user": {"ip": "203.0.113.9", "email": "a@example.com"}}, event_source="offline")
    assert set(result.event["user"]) == {"email"}
    assert result.warnings == ("user.ip not sent: TikTok documents it for web and app events",)


# --- the table itself --------------------------------------------------------------------------


def test_table_covers_the_payload_contract() -> None:
    """Every payload and user key the builder accepts has a row; paths are unique."""
    paths = [field.path for field in schema.FIELDS]
    assert len(paths) == len(set(paths))
    for key in PAYLOAD_KEYS:
        assert key in schema.BY_PATH or key == "consent", key
    for key in USER_KEYS:
        assert f"user.{key}" in schema.BY_PATH, key


def test_table_rows_are_well_formed() -> None:
    """Each row names a known type and verdict, and sources within the four event_source values."""
    for field in schema.FIELDS:
        assert field.type in schema.JSON_TYPES, field
        assert field.wrong in (checks.DEAD, checks.DROP), field
        assert field.sources <= checks.ALL and field.required <= field.sources | checks.ALL
        assert field.cite, field


def test_right_values_are_fixed_points_of_their_checks() -> None:
    """A check returns a value of the documented type unchanged, so the fast path may skip it."""
    examples: dict[str, object] = {
        "string": "x",
        "id": "42",
        "number": 1.5,
        "integer": 2,
        "boolean": False,
        "currency": "USD",
        "content_type": "product",
        "att_status": "DENIED",
        "id list": ["1"],
        "list": [{"content_id": "1", "price": 2, "quantity": 1}],
    }
    for field in schema.FIELDS:
        if field.check is not None:
            value = examples[field.type]
            assert field.check(value, field.path) == value, field


def test_reasons_use_the_closed_set_of_rules() -> None:
    """Every refusal above names one of the closed rules."""
    for _, payload, columns, rule, _ in REFUSALS:
        assert rule in checks.RULES
        assert dead(payload, **columns).rule in checks.RULES
