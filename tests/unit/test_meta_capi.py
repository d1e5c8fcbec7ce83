"""Meta Conversions API events, as Meta's own documentation shows them, converted field by field."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forwarder.tiktok.meta_capi import NotConvertible, convert
from tests.support.meta import EMAIL_HASH, META_APP, META_CRM, META_LDU, META_OFFLINE, META_WEB


def test_meta_phone_hashes_are_what_tiktok_cannot_use() -> None:
    """Meta's example phone hash is SHA-256 of digits without "+", which TikTok cannot match."""
    assert hashlib.sha256(b"12345678901").hexdigest() == META_WEB["user_data"]["ph"][0]
    assert hashlib.sha256(b"+12345678901").hexdigest() != META_WEB["user_data"]["ph"][0]


def test_a_website_purchase() -> None:
    """Meta's website Purchase: e-mail kept, phone hashes, fbc and fbp dropped and named; the
    item's delivery_category is TikTok's event-level one."""
    out = convert("Purchase", None, META_WEB)
    assert (out.event, out.event_source) == ("Purchase", "web")
    assert out.payload == {
        "user": {
            "email": [EMAIL_HASH],
            "ip": "123.123.123.123",
            "user_agent": "$CLIENT_USER_AGENT",
        },
        "properties": {
            "currency": "usd",
            "value": 123.45,
            "contents": [{"content_id": "product123", "quantity": 1}],
            "delivery_category": "home_delivery",
            "content_type": "product",
        },
        "page": {"url": "http://jaspers-market.com/product/123"},
    }
    dropped = [name for name, _ in out.dropped]
    assert dropped == ["user_data.ph", "user_data.ph", "user_data.fbc", "user_data.fbp"]
    assert "user_data.fbc (Meta only)" in out.note()


def test_an_android_app_purchase() -> None:
    """Meta's app Purchase: madid becomes gaid on Android, extinfo gives app id and locale."""
    out = convert("Purchase", None, META_APP)
    assert (out.event, out.event_source) == ("Purchase", "app")
    assert out.payload["user"] == {
        "ip": "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
        "email": ["30a79640dfd8293d4f4965ec11821f640ca77979ca0a6b365f06372f81a3f602"],
        "gaid": "38400000-8cf0-11bd-b23e-10b96e40000d",
        "locale": "en-US",
        "att_status": "NOT_APPLICABLE",
    }
    assert out.payload["app"] == {"app_id": "com.some.app", "app_version": "771"}
    assert out.payload["properties"] == {"currency": "USD", "value": "142.52"}
    dropped = {name for name, _ in out.dropped}
    assert {"user_data.ph", "user_data.anon_id", "app_data.campaign_ids"} <= dropped


def test_app_names_differ_where_tiktok_names_app_events_otherwise() -> None:
    """CompleteRegistration is Registration for an app, kept as is on the web."""
    app = {**META_APP, "event_name": "CompleteRegistration"}
    assert convert("CompleteRegistration", None, app).event == "Registration"
    web = {**META_WEB, "event_name": "CompleteRegistration"}
    assert convert("CompleteRegistration", None, web).event == "CompleteRegistration"


def test_an_offline_purchase() -> None:
    """A store Purchase goes to TikTok's offline event set, with no page."""
    out = convert("Purchase", None, META_OFFLINE)
    assert out.event_source == "offline"
    assert out.payload["user"] == {"email": [EMAIL_HASH]}
    assert "page" not in out.payload


def test_limited_data_use() -> None:
    """LDU becomes limited_data_use true; Meta's country and state codes are named as dropped."""
    out = convert("Purchase", None, META_LDU)
    assert out.payload["limited_data_use"] is True
    assert out.payload["user"] == {"email": ["Alice@Example.com"]}
    dropped = {name for name, _ in out.dropped}
    assert dropped == {"data_processing_options_country", "data_processing_options_state"}
    assert convert("Purchase", None, {"data_processing_options": []}).payload == {
        "limited_data_use": False
    }


def test_a_crm_lead_stage_keeps_no_meta_id() -> None:
    """Meta's lead id is Meta's, never TikTok's lead_id: it is dropped and named."""
    out = convert("my lead stage", None, META_CRM)
    assert out.event_source == "offline"
    assert "user" not in out.payload
    assert ("user_data.lead_id", "Meta only") in out.dropped


def test_raw_phones_get_their_plus_and_suffixed_hashes_their_digest() -> None:
    """A raw Meta phone (digits with country code) becomes +digits; a param-builder hash loses
    its appendix; an MD5 is dropped."""
    document = {
        "user_data": {
            "ph": "16505551212",
            "em": [EMAIL_HASH + ".AQ", "d41d8cd98f00b204e9800998ecf8427e"],
            "zp": "94025-1234",
            "ct": "Menlo Park",
        }
    }
    user = convert("Lead", None, document).payload["user"]
    assert user == {
        "phone": ["+16505551212"],
        "email": [EMAIL_HASH],
        "zip_code": "94025",
        "city": "menlo park",
    }


@pytest.mark.parametrize(
    ("document", "why"),
    [
        ([], "one Meta server event"),
        ({"data": [META_WEB]}, "not a request body"),
        ({"action_source": "business_messaging"}, "Meta-only click ids"),
        ({"action_source": "fax"}, "action_source must be one of"),
        ({"event_name": "Lead"}, "differs from the row's event"),
        ({"user_data": "x"}, "user_data must be an object"),
    ],
)
def test_what_cannot_be_converted_says_why(document: object, why: str) -> None:
    """A payload that cannot become a TikTok event is refused with a reason naming the field."""
    with pytest.raises(NotConvertible, match=why):
        convert("Purchase", None, document)


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    user=st.dictionaries(
        st.sampled_from(["em", "ph", "fn", "zp", "ct", "fbc", "madid", "client_ip_address", "x"]),
        JSONISH,
        max_size=5,
    ),
    custom=st.dictionaries(
        st.sampled_from(["value", "currency", "contents", "content_name", "status", "y"]),
        JSONISH,
        max_size=4,
    ),
)
def test_every_field_is_mapped_or_named(user: dict[str, object], custom: dict[str, object]) -> None:
    """Whatever a Meta event holds, conversion refuses it or accounts for every field in it."""
    try:
        out = convert("Purchase", None, {"user_data": user, "custom_data": custom})
    except NotConvertible:
        return
    accounted = {name.split("[")[0] for name, _ in out.mapped + out.dropped}
    for key, value in user.items():
        blank = value == "" or (isinstance(value, list) and all(v == "" for v in value) and value)
        if value is not None and not blank:
            assert f"user_data.{key}" in accounted, (key, value, out)
    for key in custom:
        assert any(name.startswith(f"custom_data.{key}") for name in accounted), (key, out)


def test_what_has_no_single_place_is_named_not_lost() -> None:
    """An event-level name with several items, a second city and a repeated reason are named
    once each; an item's delivery_category becomes the event's."""
    document = {
        "user_data": {"ct": ["Menlo Park", "Palo Alto"], "ph": [EMAIL_HASH, EMAIL_HASH]},
        "custom_data": {
            "content_name": "Shoes",
            "contents": [{"id": "a", "delivery_category": "curbside"}, {"id": "b"}],
        },
    }
    out = convert("Purchase", None, document)
    assert out.payload["properties"] == {
        "contents": [{"content_id": "a"}, {"content_id": "b"}],
        "delivery_category": "curbside",
        "content_type": "product",
    }
    assert ("custom_data.content_name", "TikTok names each item") in out.dropped
    assert ("user_data.ct[1:]", "TikTok takes one value") in out.dropped
    assert out.note().count("user_data.ph") == 1


def test_a_refusal_names_its_rule_and_meta_field() -> None:
    """NotConvertible carries the rule and the Meta field the builder's reason names."""
    with pytest.raises(NotConvertible) as refused:
        convert("Purchase", None, {"custom_data": {"contents": [{}, "x"]}})
    assert (refused.value.rule, refused.value.field) == ("type", "payload.custom_data.contents[1]")
