"""Rows in Meta's shape (payload_format meta_capi) through the daemon's builder and check --payload.

Meta's own documented example events are built and compared field by field with the TikTok
event each must become; generated Meta events are all built into events TikTok's model and the
fake TikTok's validator accept, or refused with a reason code, and check --payload agrees.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forwarder.destination import Built, Refused
from forwarder.events import OutboxRow
from forwarder.fake_tiktok.validate import validate
from forwarder.tiktok import shapes
from forwarder.tiktok.build import BuildOptions, build
from forwarder.tiktok.build_meta import DROPPED_FIELDS
from forwarder.tiktok.findings import ERROR
from forwarder.tiktok.lint_meta import DROPPED, MAPPED, NORMALISED, NOT_SENT, meta_row
from forwarder.tiktok.lint_refusals import outbox_row
from forwarder.tiktok.meta_capi import ACTION_SOURCES
from forwarder.tiktok.spec import USER_KEYS
from tests.support.meta import (
    EMAIL_HASH,
    META_APP,
    META_CRM,
    META_LDU,
    META_OFFLINE,
    META_WEB,
    expected_web_event,
)
from tests.support.repo import ROOT
from tests.support.typed import typed_problems

MAX_AGE = 7 * 86400.0
OPTIONS = BuildOptions("PIXEL", "US", "granted", MAX_AGE, None)
SOAK = bool(os.environ.get("FORWARDER_SOAK"))
#: Meta, "Using the API", its example request body: two website Purchases, the second with
#: no action_source, event_source_url or event_id.
META_BODY = orjson.loads(
    b'{"data": [{"event_name": "Purchase", "event_time": 1633552688, "event_id": "event.id.123",'
    b' "event_source_url": "http:\\/\\/jaspers-market.com\\/product\\/123", "action_source": '
    b'"website", "user_data": {"client_ip_address": "192.19.9.9", "client_user_agent": "test ua",'
    b' "em": ["309a0a5c3e211326ae75ca18196d301a9bdbd1a882a4d2569511033da23f0abd"], "ph": '
    b'["254aa248acb47dd654ca3ea53f48c2c26d641d23d7e2e93a1ec56258df7674c4", '
    b'"6f4fcb9deaeadc8f9746ae76d97ce1239e98b404efe5da3ee0b7149740f89ad6"], "fbc": '
    b'"fb.1.1554763741205.AbCdEfGhIjKlMnOpQrStUvWxYz1234567890", "fbp": '
    b'"fb.1.1558571054389.1098115397"}, "custom_data": {"value": 100.2, "currency": "USD", '
    b'"content_ids": ["product.id.123"], "content_type": "product"}, "opt_out": false}, '
    b'{"event_name": "Purchase", "event_time": 1633552688, "user_data": {"client_ip_address": '
    b'"192.88.9.9", "client_user_agent": "test ua2"}, "custom_data": {"value": 50.5, '
    b'"currency": "USD"}, "opt_out": false}]}'
)
PHONE_DROPPED = "user_data.ph (hashed without the + TikTok's hash needs)"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def meta(document: dict[str, Any], event_id: str = "order-1", **columns: Any) -> OutboxRow:
    """The outbox row a shop inserts for *document*: Meta's JSON unchanged, its format named."""
    return OutboxRow(
        id=7,
        event_id=event_id,
        event=columns.get("event", document.get("event_name", "Purchase")),
        event_time=document.get("event_time"),
        payload=orjson.dumps(document).decode(),
        pixel_code="",
        event_source=columns.get("event_source", "web"),
        test_event_code="",
        attempts=0,
        created_at=float(document.get("event_time", 1_760_000_000)),
        payload_format=columns.get("payload_format", "meta_capi"),
    )


def built(row: OutboxRow) -> Built:
    """The row built a minute after its event, which must be sent."""
    result = build(row, OPTIONS, float(row.created_at) + 60)
    assert isinstance(result, Built), result
    return result


def flat(value: object, path: str = "") -> dict[str, object]:
    """Every leaf of an event by its path, so two events compare field by field."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in flat(item, f"{path}.{key}").items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in flat(item, f"{path}[{i}]").items()}
    return {path.lstrip("."): value}


def same_fields(event: dict[str, Any], expected: dict[str, Any]) -> None:
    """Assert *event* has exactly *expected*'s fields, each with its value."""
    got, want = flat(event), flat(expected)
    assert {k: got.get(k) for k in want} == want
    assert sorted(got) == sorted(want)


def test_meta_website_purchase_becomes_tiktoks_event() -> None:
    """Meta's "Send Requests" Purchase: the TikTok web event, field by field, and the note."""
    result = built(meta(META_WEB))
    same_fields(result.event, expected_web_event("order-1", 1762902353))
    assert result.route.event_source == "web"
    assert result.warnings == (
        f"not carried over from Meta's event: {PHONE_DROPPED}, "
        "user_data.fbc (Meta only), user_data.fbp (Meta only)",
    )
    assert result.dropped == ("ph", "fbc", "fbp")


def test_meta_request_body_events_become_tiktoks() -> None:
    """Both events of Meta's example body, the second without action_source or a URL."""
    first, second = META_BODY["data"]
    now = 1633552688 + 60
    one = build(meta(first, event_id="event.id.123"), OPTIONS, now)
    assert isinstance(one, Built)
    same_fields(
        one.event,
        {
            "event": "Purchase",
            "event_time": 1633552688,
            "event_id": "event.id.123",
            "user": {"email": [EMAIL_HASH], "ip": "192.19.9.9", "user_agent": "test ua"},
            "properties": {
                "value": 100.2,
                "currency": "USD",
                "content_ids": ["product.id.123"],
                "content_type": "product",
            },
            "page": {"url": "http://jaspers-market.com/product/123"},
        },
    )
    assert one.dropped == ("ph", "fbc", "fbp")
    two = build(meta(second, event_id="order-2"), OPTIONS, now)
    assert isinstance(two, Built)
    same_fields(
        two.event,
        {
            "event": "Purchase",
            "event_time": 1633552688,
            "event_id": "order-2",
            "user": {"ip": "192.88.9.9", "user_agent": "test ua2"},
            "properties": {"value": 50.5, "currency": "USD"},
        },
    )
    assert (two.route.event_source, two.warnings, two.dropped) == ("web", (), ())


def test_meta_app_purchase_becomes_tiktoks_app_event() -> None:
    """Meta's Android app Purchase: an app event with gaid, locale, app id, a numeric value."""
    result = built(meta(META_APP))
    same_fields(
        result.event,
        {
            "event": "Purchase",
            "event_time": 1684389752,
            "event_id": "order-1",
            "user": {
                "ip": "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
                "email": ["30a79640dfd8293d4f4965ec11821f640ca77979ca0a6b365f06372f81a3f602"],
                "gaid": "38400000-8cf0-11bd-b23e-10b96e40000d",
                "locale": "en-US",
                "att_status": "NOT_APPLICABLE",
            },
            "properties": {"currency": "USD", "value": 142.52},
            "app": {"app_id": "com.some.app", "app_version": "771"},
        },
    )
    assert result.route.event_source == "app"
    assert result.dropped == ("ph", "anon_id", "other")
    lead = built(meta({**META_APP, "event_name": "Lead"}))
    assert lead.event["event"] == "GenerateLead"


def test_meta_offline_purchase_becomes_tiktoks_offline_event() -> None:
    """Meta's store Purchase goes to the offline event set with its e-mail and its item."""
    result = built(meta(META_OFFLINE))
    same_fields(
        result.event,
        {
            "event": "Purchase",
            "event_time": 1674000041,
            "event_id": "order-1",
            "user": {"email": [EMAIL_HASH]},
            "properties": {
                "currency": "USD",
                "value": 123.45,
                "contents": [{"content_id": "product123", "quantity": 1}],
                "content_type": "product",
            },
        },
    )
    assert result.route.event_source == "offline"
    assert result.dropped == ("ph",)


def test_meta_limited_data_use_becomes_tiktoks() -> None:
    """Meta's LDU example: the raw e-mail hashed as TikTok wants it, limited_data_use true."""
    result = built(meta(META_LDU))
    same_fields(
        result.event,
        {
            "event": "Purchase",
            "event_time": 1764000000,
            "event_id": "order-1",
            "user": {"email": [sha("alice@example.com")]},
            "properties": {"currency": "USD", "value": 10},
            "limited_data_use": True,
        },
    )
    assert "data_processing_options_state" in result.warnings[0]
    assert result.dropped == ("other",)
    assert "alice" not in repr(result).lower()


def test_meta_crm_lead_stage_is_refused() -> None:
    """Meta's CRM lead stage has no TikTok event: an offline set takes standard names only."""
    result = build(meta(META_CRM), OPTIONS, 1617693833 + 60)
    assert isinstance(result, Refused)
    assert (result.reason_code, result.field) == ("malformed/source", "event")


def test_a_raw_meta_phone_is_sent_hashed_with_its_plus() -> None:
    """A raw phone in Meta's form (no "+") is hashed as TikTok's E.164 with "+"."""
    document = {"event_name": "Lead", "event_time": 1764000000, "user_data": {"ph": "12133734253"}}
    result = built(meta(document))
    assert result.event["user"] == {"phone": [sha("+12133734253")]}
    assert result.warnings == () and result.dropped == ()


@pytest.mark.parametrize(
    ("document", "code", "field"),
    [
        ([1], "malformed/json", "payload"),
        ({"data": [META_WEB]}, "malformed/value", "payload.data"),
        ({"action_source": "business_messaging"}, "malformed/value", "payload.action_source"),
        ({"action_source": "fax"}, "malformed/value", "payload.action_source"),
        ({"event_name": "Lead"}, "malformed/value", "payload.event_name"),
        ({"user_data": "x"}, "malformed/type", "payload.user_data"),
        ({"custom_data": [1]}, "malformed/type", "payload.custom_data"),
        (
            {"custom_data": {"contents": [{}, 3]}},
            "malformed/type",
            "payload.custom_data.contents[1]",
        ),
        ({"app_data": 1}, "malformed/type", "payload.app_data"),
    ],
)
def test_what_cannot_be_converted_is_refused_naming_the_field(
    document: object, code: str, field: str
) -> None:
    """A Meta event that cannot become a TikTok event is refused as malformed, naming its field."""
    row = meta({}, event="Purchase")._replace(payload=orjson.dumps(document).decode())
    result = build(row, OPTIONS, 1_760_000_060)
    assert isinstance(result, Refused)
    assert (result.code, result.reason_code, result.field) == ("malformed", code, field)
    assert result.reason.startswith(f"[{code}] ")


@pytest.mark.parametrize(
    ("given", "rule"), [("Meta_CAPI", "value"), ("json", "value"), (1, "type"), (b"x", "type")]
)
def test_an_unknown_payload_format_is_refused_naming_the_column(given: object, rule: str) -> None:
    """An unknown payload_format refuses the row as malformed/value, without quoting it."""
    result = build(meta(META_WEB, payload_format=given), OPTIONS, 1762902353 + 60)
    assert isinstance(result, Refused)
    assert (result.reason_code, result.field) == (f"malformed/{rule}", "payload_format")
    assert "Meta_CAPI" not in result.reason and "json" not in result.reason


@pytest.mark.parametrize("given", [None, "tiktok", " tiktok ", ""])
def test_tiktok_rows_build_as_before_whatever_says_so(given: object) -> None:
    """NULL, blank and "tiktok" all build a TikTok-shaped row exactly as a row without it."""
    payload = orjson.dumps({"user": {"email": "a@b.co"}, "properties": {"value": 3}}).decode()
    row = OutboxRow(1, "e", "Purchase", 1_760_000_000, payload, "", "web", "", 0, 1.7e9)
    assert build(row._replace(payload_format=given), OPTIONS, 1_760_000_060) == build(
        row, OPTIONS, 1_760_000_060
    )


def test_a_converted_event_names_a_key_it_cannot_quote_without_it() -> None:
    """An unknown Meta key that is not a field name is named as such, never quoted."""
    document = {"event_name": "Lead", "event_time": 1764000000, "a@b.co": 1}
    result = built(meta(document))
    assert "a@b.co" not in result.warnings[0] and "not a field name" in result.warnings[0]
    assert result.dropped == ("other",)


# --- generated Meta events ----------------------------------------------------------------------

text = st.text(max_size=10)
junk = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), text, st.just({}), st.just([1]))
hashes = st.sampled_from([EMAIL_HASH, EMAIL_HASH + ".AQ", "d41d8cd98f00b204e9800998ecf8427e"])
emails = st.one_of(st.sampled_from([" Buyer@Example.com", "x@y.co"]), hashes, text)
phones = st.one_of(st.sampled_from(["12133734253", "+1 213 373 4253", "447911123456"]), hashes)


def mostly(right: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """*right*'s values nine times in ten, else something of the wrong type."""
    return st.integers(0, 9).flatmap(lambda n: right if n else junk)


def one_or_list(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Meta's value forms: one string or a list of them, sometimes something else."""
    return st.one_of(values, st.lists(values, max_size=3), junk)


user_data = st.fixed_dictionaries(
    {},
    optional={
        "em": one_or_list(emails),
        "ph": one_or_list(phones),
        "external_id": one_or_list(st.one_of(text, hashes)),
        "fn": one_or_list(st.sampled_from(["Mary", "Valéry"])),
        "zp": one_or_list(st.sampled_from(["94025-1234", "m11ae"])),
        "ct": one_or_list(st.sampled_from(["Menlo Park", EMAIL_HASH])),
        "country": one_or_list(st.sampled_from(["us", "US"])),
        "client_ip_address": st.one_of(st.sampled_from(["203.0.113.7", "::1", "nope"]), junk),
        "client_user_agent": st.one_of(st.just("Mozilla/5.0"), junk),
        "madid": st.one_of(st.just("38400000-8CF0-11bd-b23e-10b96e40000d"), junk),
        "fbc": text,
        "fbp": text,
        "ge": text,
        "lead_id": st.integers(0, 2**40),
        "other": junk,
    },
)
contents = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "id": st.one_of(st.sampled_from(["sku-1", "12"]), st.integers(0, 99), junk),
            "quantity": st.one_of(st.integers(0, 5), st.sampled_from(["2", 1.5]), junk),
            "item_price": st.one_of(st.floats(0, 1e4), st.sampled_from(["8.50", "$8"]), junk),
            "title": st.one_of(text, junk),
            "category": text,
            "brand": text,
            "delivery_category": st.sampled_from(["in_store", "home_delivery"]),
            "description": text,
        },
    ),
    max_size=3,
)
custom_data = st.fixed_dictionaries(
    {},
    optional={
        "value": st.one_of(st.floats(0, 1e6), st.sampled_from(["142.52", "<VALUE>"]), junk),
        "currency": st.one_of(st.sampled_from(["usd", "EUR", "xyz"]), junk),
        "content_ids": st.one_of(st.lists(st.sampled_from(["a", "1"]), max_size=2), junk),
        "contents": st.one_of(contents, junk),
        "content_type": st.one_of(st.sampled_from(["product", "product_group", "sku"]), junk),
        "content_name": st.one_of(text, junk),
        "order_id": st.one_of(st.just("o-1"), st.integers(0, 99)),
        "num_items": st.one_of(st.integers(0, 5), junk),
        "status": text,
    },
)
app_data = st.fixed_dictionaries(
    {},
    optional={
        "extinfo": st.one_of(
            st.lists(st.sampled_from(["a2", "i2", "com.shop.app", "7.1", "en_US", ""]), max_size=8),
            junk,
        ),
        "advertiser_tracking_enabled": st.one_of(st.sampled_from([0, 1]), junk),
        "application_tracking_enabled": st.one_of(st.sampled_from([0, 1]), junk),
        "campaign_ids": text,
    },
)
meta_events = st.fixed_dictionaries(
    {
        "event_name": st.sampled_from(["Purchase", "Lead", "CompleteRegistration", "Donate"]),
        "event_time": st.integers(1_760_000_000 - 86400, 1_760_000_000),
        "event_id": st.sampled_from(["order-1", "order-2"]),
    },
    optional={
        "action_source": mostly(st.sampled_from(list(ACTION_SOURCES))),
        "user_data": mostly(user_data),
        "custom_data": mostly(custom_data),
        "app_data": mostly(app_data),
        "event_source_url": mostly(st.just("https://shop.example/p/1")),
        "referrer_url": text,
        "data_processing_options": st.one_of(st.sampled_from([["LDU"], []]), junk),
        "data_processing_options_state": st.integers(0, 1013),
        "opt_out": st.booleans(),
        "partner_agent": text,
    },
)
NOW = 1_760_000_000.0 + 60


@settings(
    max_examples=2000 if SOAK else 200,
    deadline=None,
    derandomize=not SOAK,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(meta_events)
def test_every_converted_event_passes_the_event_model(document: dict[str, Any]) -> None:
    """Every Meta event is built into an event TikTok's model and the fake TikTok accept, or
    refused with a reason code; check --payload has an error exactly when the daemon refuses."""
    row = outbox_row(meta_row(document), NOW)
    result = build(row, OPTIONS, NOW)
    report = shapes.check(document, now=NOW, phone_region="US", max_age_s=MAX_AGE)
    errors = [finding for finding in report.findings if finding.level == ERROR]
    assert report.shape == shapes.META_EVENT
    if isinstance(result, Refused):
        assert result.reason.startswith(f"[{result.reason_code}] ")
        assert errors and errors[0].code == result.reason_code
        assert report.conversion is None or report.conversion.event is None
        return
    assert errors == []
    source = result.route.event_source
    assert typed_problems(result.event, source) == []
    body = {"event_source": source, "event_source_id": "PIXEL", "data": [result.event]}
    assert validate(body, set(), names_index=True) is None
    assert set(result.event.get("user", {})) <= set(USER_KEYS)
    assert set(result.dropped) <= set(DROPPED_FIELDS)
    assert report.conversion is not None and report.conversion.event == result.event
    sent = orjson.dumps(result.event).decode().lower() + " ".join(result.warnings).lower()
    assert "buyer@example.com" not in sent and "2133734253" not in sent


def test_check_shows_each_meta_field_mapped_normalised_or_dropped() -> None:
    """check --payload on a Meta event lists what became of each field and the event as sent."""
    document = {
        **META_WEB,
        "event_id": "order-1",
        "event_time": int(NOW) - 60,
        "user_data": {**META_WEB["user_data"], "fn": "Mary"},
        "app_data": {"extinfo": ["i2"], "advertiser_tracking_enabled": 1},
    }
    report = shapes.check(document, now=NOW, phone_region="US", max_age_s=MAX_AGE)
    assert report.shape == shapes.META_EVENT and report.conversion is not None
    lines = {meta: (how, tiktok) for how, meta, tiktok in report.conversion.fields}
    assert lines["user_data.em"] == (MAPPED, "user.email")
    assert lines["user_data.fn"] == (NORMALISED, "user.first_name")
    assert lines["custom_data.currency"] == (NORMALISED, "properties.currency")
    # An app-only field on a web event.
    assert lines["app_data.advertiser_tracking_enabled"] == (NOT_SENT, "user.att_status")
    assert lines["user_data.fbc"] == (DROPPED, "Meta only")
    assert report.conversion.event is not None
    assert report.conversion.event["user"]["first_name"] == sha("mary")
    warned = {finding.field for finding in report.findings}
    assert {"user_data.ph", "user_data.fbc", "user_data.fbp"} <= warned
    without_id = shapes.check(META_WEB, now=NOW, phone_region="US", max_age_s=MAX_AGE)
    assert [f.field for f in without_id.findings if f.level == ERROR] == ["event_id"]


def test_check_reads_a_meta_capi_row_and_refuses_a_meta_body() -> None:
    """A row with payload_format meta_capi is converted; a whole Meta body is an error."""
    row = {"event_id": "e-1", "event": "Lead", "payload_format": "meta_capi", "payload": META_LDU}
    report = shapes.check(row, now=1764000060, phone_region=None, max_age_s=MAX_AGE)
    assert report.shape == shapes.OUTBOX_ROW and report.conversion is not None
    assert [f.code for f in report.findings if f.level == ERROR] == ["malformed/value"]
    assert report.findings[0].field == "event_name"  # META_LDU says Purchase, the row Lead
    body = shapes.check(META_BODY, now=NOW, phone_region=None, max_age_s=MAX_AGE)
    assert body.shape == shapes.META_REQUEST
    assert [(f.field, f.code) for f in body.findings] == [("data", "malformed/value")]


def test_check_warns_when_the_meta_event_id_is_not_the_rows() -> None:
    """A row whose Meta event carries another event_id is told TikTok gets the column's."""
    payload = {**META_LDU, "event_id": "meta-1"}
    row = {
        "event_id": "e-1",
        "event": "Purchase",
        "payload_format": "meta_capi",
        "payload": payload,
    }
    report = shapes.check(row, now=1764000060, phone_region=None, max_age_s=MAX_AGE)
    assert any(f.field == "event_id" and "differs" in f.message for f in report.findings)


def test_the_dropped_field_labels_are_documented() -> None:
    """docs/monitoring.md names every label of forwarder_converted_fields_dropped_total."""
    text = (ROOT / "docs" / "monitoring.md").read_text()
    section = text[text.index("forwarder_converted_fields_dropped_total") :]
    assert [label for label in DROPPED_FIELDS if f"`{label}`" not in section] == []
