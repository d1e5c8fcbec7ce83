"""Tests for forwarder.lint: the payload check behind ``forwarder check --payload``."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from forwarder import metrics
from forwarder.commands import enqueue
from forwarder.tiktok.build_row import COLUMNS
from forwarder.tiktok.lint import ERROR, WARNING, Finding, lint
from forwarder.tiktok.normalise import sha256_hex
from forwarder.tiktok.spec import APP_EVENTS, CURRENCIES, RENAMED_EVENTS, SUNSET_EVENTS, WEB_EVENTS

NOW = 1_760_000_000.0
DAY = 86400
MAX_AGE = 7 * DAY

# Raw identifiers; no finding may ever quote them.
RAW_EMAIL = " ALICE_abc@gmail.com "
RAW_PHONE = "(+1)2133734253"
RAW_EXTERNAL_ID = "user_123"
FORBIDDEN = ("alice", "gmail", "2133734253", "user_123")

MD5_HEX = "0cc175b9c0f1b6a831c399e269772661"
SHA1_HEX = "86f7e437faa5a7fce15d1ddcb9eaeac4a7b6a4d3"
EMAIL_HASH = sha256_hex("alice_abc@gmail.com")

# A realistic web Purchase, as an application hands it to `forwarder enqueue`.
CLEAN: dict[str, Any] = {
    "event_id": "order-1077",
    "event": "Purchase",
    "event_time": int(NOW) - 90,
    "event_source": "web",
    "pixel_code": "D34FV3JC77U1PDQ72P1G",
    "payload": {
        "user": {
            "email": RAW_EMAIL,
            "phone": [RAW_PHONE],
            "external_id": RAW_EXTERNAL_ID,
            "ttclid": "E.C.P.CqgBOqhXQeu0cOkFBqtAu2dZ",
            "ttp": "2mMhkF3x9r0Yk2bq4cTQOnHtNkA",
            "ip": "203.0.113.9",
            "user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) Safari/604.1",
            "locale": "en-US",
        },
        "page": {
            "url": "https://shop.example/checkout/thanks?ttclid=E.C.P.CqgBOqhXQeu0cOkFBqtAu2dZ",
            "referrer": "https://shop.example/cart",
        },
        "properties": {
            "currency": "USD",
            "value": 46.0,
            "content_type": "product",
            "contents": [
                {"content_id": "1077218", "content_name": "Mug", "price": 8, "quantity": 2},
                {"content_id": "1077219", "content_name": "Teapot", "price": 30.0, "quantity": 1},
            ],
            "order_id": "1077",
        },
        "consent": {"ad_user_data": "granted", "ad_personalization": "granted"},
    },
}

# A realistic app Purchase (event_source app: no page, no ttclid/ttp, app.app_id instead).
CLEAN_APP: dict[str, Any] = {
    "event_id": "txn-88",
    "event": "Purchase",
    "event_time": int(NOW) - 30,
    "event_source": "app",
    "pixel_code": "7412345678901234567",
    "payload": {
        "user": {
            "email": [EMAIL_HASH],
            "ip": "2001:db8:1111:a:b0::200",
            "user_agent": "MyShop/4.2 (Android 14)",
        },
        "app": {"app_id": "com.example.shop", "app_name": "MyShop", "app_version": "4.2"},
        "properties": {"currency": "EUR", "value": 9.99},
    },
}


def check(
    document: object, *, region: str | None = "US", max_age_s: float = MAX_AGE
) -> list[Finding]:
    """Lint *document* at NOW and require every finding to keep identifiers private."""
    findings = lint(document, now=NOW, phone_region=region, max_age_s=max_age_s)
    for finding in findings:
        assert finding.level in (ERROR, WARNING), finding
        for raw in FORBIDDEN:
            assert raw not in finding.message.lower(), finding
            assert raw not in finding.field.lower(), finding
    return findings


def edited(base: dict[str, Any], path: str, value: object) -> dict[str, Any]:
    """Return a deep copy of *base* with the dotted *path* set to *value* (DROP removes it)."""
    document = copy.deepcopy(base)
    *parents, last = path.split(".")
    node: Any = document
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if value is DROP:
        del node[int(last) if last.isdigit() else last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return document


DROP = object()


@dataclass(frozen=True)
class Case:
    """One problem: how to make it from a clean event, and the finding it must produce."""

    make: Callable[[], object]
    level: str
    field: str
    word: str
    region: str | None = "US"
    max_age_s: float = MAX_AGE


def web(path: str, value: object) -> Callable[[], object]:
    """The clean web Purchase with one change."""
    return lambda: edited(CLEAN, path, value)


def web2(first: tuple[str, object], second: tuple[str, object]) -> Callable[[], object]:
    """The clean web Purchase with two changes."""
    return lambda: edited(edited(CLEAN, *first), *second)


def app(path: str, value: object) -> Callable[[], object]:
    """The clean app Purchase with one change."""
    return lambda: edited(CLEAN_APP, path, value)


CASES: dict[str, Case] = {
    # enqueue's columns and the builder's refusals
    "not an object": Case(lambda: ["Purchase"], ERROR, "document", "JSON object"),
    "unknown column": Case(web("pixel", "X"), ERROR, "pixel", "unknown column"),
    "payload key as a column": Case(web("user", {}), ERROR, "user", "inside payload"),
    "column not a string": Case(web("event_id", 1077), ERROR, "event_id", "string"),
    "missing event_id": Case(web("event_id", DROP), ERROR, "event_id", "non-empty"),
    "bad event_source": Case(web("event_source", "pixel"), ERROR, "event_source", "one of"),
    "payload not an object": Case(web("payload", [1]), ERROR, "payload", "JSON object"),
    "payload not JSON": Case(web("payload", "{user:"), ERROR, "payload", "not valid JSON"),
    "payload JSON not an object": Case(web("payload", "[]"), ERROR, "payload", "JSON object"),
    "unknown payload key": Case(
        web("payload.custom_data", {}), ERROR, "payload.custom_data", "unknown key 'custom_data'"
    ),
    "unknown user key": Case(web("payload.user.fbp", "x"), ERROR, "user.fbp", "unknown key 'fbp'"),
    "unknown consent key": Case(
        web("payload.consent.analytics", "granted"), ERROR, "consent.analytics", "unknown key"
    ),
    "limited_data_use not a bool": Case(
        web("payload.limited_data_use", "yes"), ERROR, "limited_data_use", "true or false"
    ),
    "email not a string": Case(web("payload.user.email", 42), ERROR, "user.email", "string"),
    "properties not an object": Case(web("payload.properties", []), ERROR, "properties", "object"),
    # event names
    "custom event": Case(web("event", "GiftCardRedeemed"), WARNING, "event", "not optimise"),
    "wrong case": Case(web("event", "purchase"), WARNING, "event", "did you mean Purchase"),
    "misspelt": Case(web("event", "Purchse"), WARNING, "event", "did you mean Purchase"),
    "misspelt legacy": Case(web("event", "CompletePaymnt"), WARNING, "event", "Purchase"),
    "CompletePayment": Case(web("event", "CompletePayment"), WARNING, "event", "send Purchase"),
    "SubmitForm": Case(web("event", "SubmitForm"), WARNING, "event", "send Lead"),
    "ClickButton": Case(web("event", "ClickButton"), WARNING, "event", "2027"),
    "PlaceAnOrder": Case(web("event", "PlaceAnOrder"), WARNING, "event", "2027"),
    "PageView server-side": Case(web("event", "PageView"), WARNING, "event", "Pixel only"),
    "web name on app": Case(app("event", "Lead"), WARNING, "event", "not an app one"),
    "app name on web": Case(web("event", "LaunchAPP"), WARNING, "event", "standard app event"),
    "app misspelt": Case(app("event", "LaunchApp"), WARNING, "event", "did you mean LaunchAPP"),
    "custom offline": Case(
        web2(("event_source", "offline"), ("event", "GiftCardRedeemed")),
        ERROR,
        "event",
        "standard events only",
    ),
    "misspelt offline": Case(
        web2(("event_source", "offline"), ("event", "Purchse")),
        ERROR,
        "event",
        "did you mean Purchase?",
    ),
    # properties
    "value not a number": Case(
        web("payload.properties.value", "46 USD"), ERROR, "properties.value", "not a plain number"
    ),
    "value a decimal comma": Case(
        web("payload.properties.value", "12,50"), ERROR, "properties.value", "comma"
    ),
    "value a string number": Case(
        web("payload.properties.value", "12.5"), WARNING, "properties.value", "normalised"
    ),
    "value negative": Case(
        web("payload.properties.value", -46.0), WARNING, "properties.value", "negative"
    ),
    "value without currency": Case(
        web("payload.properties.currency", DROP), WARNING, "properties.currency", "no currency"
    ),
    "Purchase currency without value": Case(
        web("payload.properties.value", DROP), WARNING, "properties.value", "no revenue"
    ),
    "Purchase without properties": Case(
        web("payload.properties", DROP), WARNING, "properties.value", "no revenue"
    ),
    "currency unsupported": Case(
        web("payload.properties.currency", "BTC"), ERROR, "properties.currency", "ISO 4217"
    ),
    "currency lower-case": Case(
        web("payload.properties.currency", "usd"), WARNING, "properties.currency", "upper-cased"
    ),
    "currency not a string": Case(
        web("payload.properties.currency", 840), ERROR, "properties.currency", "got int"
    ),
    "content_id a number": Case(
        web("payload.properties.contents.0.content_id", 1077218),
        WARNING,
        "properties.contents[0].content_id",
        "its digits",
    ),
    "second content_id a float": Case(
        web("payload.properties.contents.1.content_id", 1077219.0),
        ERROR,
        "properties.contents[1].content_id",
        "must be a string",
    ),
    "content_id missing": Case(
        web("payload.properties.contents.0.content_id", DROP),
        WARNING,
        "properties.contents[0].content_id",
        "catalog",
    ),
    "price in a string": Case(
        web("payload.properties.contents.0.price", "8"),
        WARNING,
        "properties.contents[0].price",
        "normalised",
    ),
    "price with a currency symbol": Case(
        web("payload.properties.contents.0.price", "$8"),
        ERROR,
        "properties.contents[0].price",
        "currency symbol",
    ),
    "quantity not an int": Case(
        web("payload.properties.contents.0.quantity", 2.5),
        ERROR,
        "properties.contents[0].quantity",
        "whole number",
    ),
    "content_type missing": Case(
        web("payload.properties.content_type", DROP),
        WARNING,
        "properties.content_type",
        '"product"',
    ),
    "content_type unknown": Case(
        web("payload.properties.content_type", "sku"),
        ERROR,
        "properties.content_type",
        "product_group",
    ),
    # page and app
    "web without page": Case(web("payload.page", DROP), WARNING, "page.url", "page URL"),
    "web with blank page.url": Case(web("payload.page.url", " "), WARNING, "page.url", "§2.2"),
    "page.url not a string": Case(web("payload.page.url", 1), ERROR, "page.url", "string"),
    "app without app_id": Case(app("payload.app", DROP), ERROR, "app.app_id", "package name"),
    "ttclid on an app event": Case(
        app("payload.user.ttclid", "E.C.P.x"), WARNING, "user.ttclid", "web events"
    ),
    "ip with spaces": Case(web("payload.user.ip", " 203.0.113.9 "), WARNING, "user.ip", "trimmed"),
    "ip not an address": Case(web("payload.user.ip", "unknown"), WARNING, "user.ip", "IPv4"),
    "ip of a proxy": Case(web("payload.user.ip", "10.1.2.3"), WARNING, "user.ip", "public"),
    # event_time
    "future": Case(web("event_time", int(NOW) + 600), WARNING, "event_time", "future"),
    "older than max age": Case(
        web("event_time", int(NOW) - 8 * DAY), ERROR, "event_time", "dead-letters"
    ),
    "outside attribution windows": Case(
        web("event_time", int(NOW) - 30 * DAY),
        WARNING,
        "event_time",
        "attribution windows",
        max_age_s=90 * DAY,
    ),
    "milliseconds": Case(web("event_time", int(NOW) * 1000), WARNING, "event_time", "milliseconds"),
    "fractional": Case(web("event_time", NOW - 0.5), WARNING, "event_time", "truncates"),
    "not a number": Case(web("event_time", "2025-10-09"), ERROR, "event_time", "integer"),
    # match keys
    "no match key": Case(web("payload.user", {}), WARNING, "user", "no match key"),
    "no user at all": Case(web("payload.user", DROP), WARNING, "user", "cannot attribute"),
    "match keys withheld by consent": Case(
        lambda: edited(
            edited(CLEAN, "payload.user", {"email": RAW_EMAIL}),
            "payload.consent.ad_user_data",
            "denied",
        ),
        WARNING,
        "user",
        "no match key",
    ),
    "ip without user_agent": Case(
        web("payload.user.user_agent", DROP), WARNING, "user.user_agent", "both"
    ),
    "user_agent without ip": Case(web("payload.user.ip", DROP), WARNING, "user.ip", "both"),
    "web without ttclid or ttp": Case(
        web2(("payload.user.ttclid", DROP), ("payload.user.ttp", DROP)),
        WARNING,
        "user.ttclid",
        "_ttp cookie",
    ),
    # identifiers
    "upper-case SHA-256": Case(
        web("payload.user.email", EMAIL_HASH.upper()), WARNING, "user.email", "lower-case"
    ),
    "MD5 email": Case(web("payload.user.email", [MD5_HEX]), WARNING, "user.email[0]", "SHA-256"),
    "SHA-1 phone": Case(web("payload.user.phone", [SHA1_HEX]), WARNING, "user.phone[0]", "SHA-1"),
    "MD5-like external_id": Case(
        web("payload.user.external_id", MD5_HEX), WARNING, "user.external_id", "MD5"
    ),
    "phone without country code, no region": Case(
        web("payload.user.phone", ["2133734253"]),
        WARNING,
        "user.phone[0]",
        "FORWARDER_PHONE_REGION",
        region=None,
    ),
    "phone invalid for the region": Case(
        web("payload.user.phone", ["21337"]), WARNING, "user.phone[0]", "region US"
    ),
    "email without @": Case(
        web("payload.user.email", "ALICE_abc.gmail.com"), WARNING, "user.email", "not an email"
    ),
    "empty phone": Case(web("payload.user.phone", ["  "]), WARNING, "user.phone[0]", "empty"),
    "hashed ip": Case(web("payload.user.ip", sha256_hex("203.0.113.9")), WARNING, "user.ip", "raw"),
}


def test_clean_web_purchase_has_no_findings() -> None:
    """A realistic web Purchase with raw identifiers gets no finding at all, not even a warning."""
    assert check(CLEAN) == []


def test_clean_payload_given_as_json_text_has_no_findings() -> None:
    """The payload column may be a JSON string of the same object."""
    document = dict(CLEAN, payload=orjson.dumps(CLEAN["payload"]).decode())
    assert check(document) == []


def test_clean_app_purchase_with_hashes_has_no_findings() -> None:
    """A realistic app Purchase with a lower-case SHA-256 email gets no finding."""
    assert check(CLEAN_APP) == []


def test_raw_identifiers_need_no_hashing_by_the_sender() -> None:
    """Raw email, phone and external_id are fine: the daemon normalises and hashes them."""
    findings = check(CLEAN)
    assert not [f for f in findings if f.field.startswith("user.")]


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_each_problem_is_reported(case: Case) -> None:
    """Each problem gives a finding of the expected level, on its field, saying what is wrong."""
    findings = check(case.make(), region=case.region, max_age_s=case.max_age_s)
    matching = [f for f in findings if f.field == case.field and f.level == case.level]
    assert matching, findings
    assert any(case.word in f.message for f in matching), matching
    if case.level == WARNING:
        assert not [f for f in findings if f.level == ERROR], findings


def test_errors_come_first_and_all_are_reported() -> None:
    """Several problems at once are all reported, errors before warnings."""
    document = edited(CLEAN, "payload.custom_data", {"a": 1})
    document = edited(document, "payload.properties.value", "12,5")
    document = edited(document, "payload.properties.contents.1.content_id", 7.5)
    document = edited(document, "event", "CompletePayment")
    findings = check(document)
    levels = [f.level for f in findings]
    assert levels == sorted(levels, key=lambda level: level != ERROR)
    assert {f.field for f in findings if f.level == ERROR} == {
        "payload.custom_data",
        "properties.value",
        "properties.contents[1].content_id",
    }
    assert [f.field for f in findings if f.level == WARNING] == ["event"]


def test_builder_refusal_is_not_reported_twice() -> None:
    """A problem both the lint and the builder see gives one finding."""
    findings = check(edited(CLEAN, "event_time", int(NOW) - 8 * DAY))
    assert [f.field for f in findings] == ["event_time"]
    findings = check(edited(CLEAN, "payload.user.phone", ["2133734253"]), region=None)
    assert [f.field for f in findings] == ["user.phone[0]"]


@pytest.mark.parametrize("payload", [[1], "{user:", "[]"])
def test_unusable_payload_is_reported_once(payload: object) -> None:
    """A payload that cannot be read gives one error, not a warning for each thing it lacks."""
    findings = check(edited(CLEAN, "payload", payload))
    assert [(f.level, f.field) for f in findings] == [(ERROR, "payload")]


def test_empty_payload_is_valid_but_weak() -> None:
    """No payload is accepted, but a web Purchase then lacks value, page and match keys."""
    findings = check(edited(CLEAN, "payload", DROP))
    assert {f.level for f in findings} == {WARNING}
    assert {f.field for f in findings} == {"properties.value", "page.url", "user", "user.ttclid"}


def test_small_clock_skew_is_tolerated() -> None:
    """An event_time up to five minutes ahead is not reported (the daemon sends it as now)."""
    assert check(edited(CLEAN, "event_time", int(NOW) + 240)) == []


def test_event_time_may_be_omitted() -> None:
    """Without event_time the daemon uses the insert time, which is fine."""
    assert check(edited(CLEAN, "event_time", DROP)) == []


def test_unquotable_key_is_not_echoed() -> None:
    """An unknown key that could be personal data is reported without quoting it."""
    document = copy.deepcopy(CLEAN)
    document["payload"]["user"]["alice_abc@gmail.com"] = "x"
    findings = check(document)
    assert [(f.level, f.field) for f in findings] == [(ERROR, "user")]
    assert "not shown" in findings[0].message


def test_messages_never_hold_raw_identifiers() -> None:
    """No finding quotes the raw email or phone, whatever is wrong around them."""
    broken = edited(CLEAN, "payload.user.email", [RAW_EMAIL, "ALICE_abc(at)gmail.com"])
    broken = edited(broken, "payload.user.phone", [RAW_PHONE, "2133734253", "+1 213 373"])
    broken = edited(broken, "payload.user.ip", DROP)
    broken = edited(broken, "event", "purchase")
    findings = check(broken, region=None)
    assert len(findings) >= 4
    for case in CASES.values():
        check(case.make(), region=case.region, max_age_s=case.max_age_s)


def test_lists_match_the_rest_of_the_project() -> None:
    """The columns match enqueue's, and the event names match the metrics' closed set."""
    assert COLUMNS == enqueue.COLUMNS
    names = set(WEB_EVENTS) | set(APP_EVENTS) | set(RENAMED_EVENTS) | set(SUNSET_EVENTS)
    assert names == metrics.STANDARD_EVENTS
    assert len(CURRENCIES) == 62
    assert all(len(code) == 3 and code.isupper() for code in CURRENCIES)
