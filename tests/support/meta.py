"""Meta Conversions API events as Meta's own documentation shows them (shared by the converter's,
the builder's and the delivery tests)."""

from __future__ import annotations

from typing import Any

import orjson

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


def meta_event(event_time: float, **changes: Any) -> dict[str, Any]:
    """Meta's "Send Requests" website Purchase, as a shop builds it, at *event_time*."""
    return {**META_WEB, "event_time": int(event_time), **changes}


def meta_row(event_id: str, document: dict[str, Any], **columns: Any) -> dict[str, Any]:
    """The row a shop inserts: the Meta JSON unchanged, its format named."""
    return {
        "event_id": event_id,
        "event": document.get("event_name", "Purchase"),
        "event_time": document.get("event_time"),
        "payload": orjson.dumps(document).decode(),
        "payload_format": "meta_capi",
        **columns,
    }


def expected_web_event(event_id: str, event_time: int) -> dict[str, Any]:
    """The TikTok event Meta's website Purchase becomes (docs/meta-capi.md)."""
    return {
        "event": "Purchase",
        "event_time": event_time,
        "event_id": event_id,
        "user": {
            "email": [EMAIL_HASH],
            "ip": "123.123.123.123",
            "user_agent": "$CLIENT_USER_AGENT",
        },
        "properties": {
            "currency": "USD",
            "value": 123.45,
            "delivery_category": "home_delivery",
            "contents": [{"content_id": "product123", "quantity": 1}],
            "content_type": "product",
        },
        "page": {"url": "http://jaspers-market.com/product/123"},
    }
