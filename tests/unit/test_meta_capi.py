"""Meta Conversions API events, as Meta's own documentation shows them, converted field by field."""

from __future__ import annotations

import hashlib

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from forwarder.tiktok.meta_capi import NotConvertible, convert

#: Meta, "Using the API" (developers.facebook.com .../conversions-api/using-the-api), Send
#: Requests: a website Purchase with hashed e-mail and phones, fbc and fbp.
META_WEB = orjson.loads(
    b'{"event_name": "Purchase", "event_time": 1762902353, "user_data": {"em": '
    b'["309a0a5c3e211326ae75ca18196d301a9bdbd1a882a4d2569511033da23f0abd"], "ph": '
    b'["254aa248acb47dd654ca3ea53f48c2c26d641d23d7e2e93a1ec56258df7674c4", '
    b'"6f4fcb9deaeadc8f9746ae76d97ce1239e98b404efe5da3ee0b7149740f89ad6"], '
    b'"client_ip_address": "123.123.123.123", "client_user_agent": "$CLIENT_USER_AGENT", '
    b'"fbc": "fb.1.1554763741205.AbCdEfGhIjKlMnOpQrStUvWxYz1234567890", '
    b'"fbp": "fb.1.1558571054389.1098115397"}, "custom_data": {"currency": "usd", "value": '
    b'123.45, "contents": [{"id": "product123", "quantity": 1, "delivery_category": '
    b'"home_delivery"}]}, "event_source_url": "http://jaspers-market.com/product/123", '
    b'"action_source": "website"}'
)
#: Meta, "Conversions API for App Events": an Android app Purchase with madid and extinfo.
META_APP = orjson.loads(
    b'{"event_name": "Purchase", "event_time": 1684389752, "action_source": "app", '
    b'"user_data": {"client_ip_address": "2001:0db8:85a3:0000:0000:8a2e:0370:7334", "em": '
    b'["30a79640dfd8293d4f4965ec11821f640ca77979ca0a6b365f06372f81a3f602"], "ph": '
    b'["74234e98afe7498fb5daf1f36ac2d78acc339464f950703b8c019892f982b90b", '
    b'"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"], "madid": '
    b'"38400000-8cf0-11bd-b23e-10b96e40000d", "anon_id": "12345340-1234-3456-1234-123456789012"}, '
    b'"custom_data": {"currency": "USD", "value": "142.52"}, "app_data": '
    b'{"advertiser_tracking_enabled": 1, "application_tracking_enabled": 1, "campaign_ids": '
    b'"abcd1234", "extinfo": ["a2", "com.some.app", "771", "Version 7.7.1", "10.1.1", "OnePlus6", '
    b'"en_US", "GMT-1", "TMobile", "1920", "1080", "2.00", "2", "128", "8", "USA/New York"]}}'
)
#: Meta, "Sending Offline Events Using the Conversions API": a store Purchase.
META_OFFLINE = orjson.loads(
    b'{"event_name": "Purchase", "event_time": 1674000041, "user_data": {"em": '
    b'["309a0a5c3e211326ae75ca18196d301a9bdbd1a882a4d2569511033da23f0abd"], "ph": '
    b'["254aa248acb47dd654ca3ea53f48c2c26d641d23d7e2e93a1ec56258df7674c4", '
    b'"6f4fcb9deaeadc8f9746ae76d97ce1239e98b404efe5da3ee0b7149740f89ad6"]}, "custom_data": '
    b'{"currency": "usd", "value": 123.45, "contents": [{"id": "product123", "quantity": 1}]}, '
    b'"action_source": "physical_store"}'
)
#: Meta, "Data Processing Options for US Users": Limited Data Use with a manual location (the
#: doc's placeholders filled in).
META_LDU = {
    "event_name": "Purchase",
    "event_time": 1764000000,
    "user_data": {"em": "Alice@Example.com"},
    "custom_data": {"currency": "usd", "value": "10"},
    "data_processing_options": ["LDU"],
    "data_processing_options_country": 1,
    "data_processing_options_state": 1000,
}
#: Meta, "Conversions API for CRM: Integrate as a Platform": a CRM lead stage.
META_CRM = orjson.loads(
    b'{"event_name": "my lead stage", "event_time": 1617693833, "user_data": {"lead_id": '
    b'1234567890123456}, "action_source": "system_generated", "custom_data": '
    b'{"lead_event_source": "Salesforce", "event_source": "crm"}, "partner_agent": "datapartner"}'
)
EMAIL_HASH = "309a0a5c3e211326ae75ca18196d301a9bdbd1a882a4d2569511033da23f0abd"


def test_meta_phone_hashes_are_what_tiktok_cannot_use() -> None:
    """Meta's example phone hash is SHA-256 of digits without "+", which TikTok cannot match."""
    assert hashlib.sha256(b"12345678901").hexdigest() == META_WEB["user_data"]["ph"][0]
    assert hashlib.sha256(b"+12345678901").hexdigest() != META_WEB["user_data"]["ph"][0]


def test_a_website_purchase() -> None:
    """Meta's website Purchase: e-mail kept, phone hashes, fbc and fbp dropped and named."""
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
