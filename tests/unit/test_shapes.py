"""Tests for forwarder.shapes: check --payload reads a row, a TikTok event, a request body."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from forwarder.tiktok.lint import ERROR, WARNING, Finding, lint
from forwarder.tiktok.normalise import sha256_hex
from forwarder.tiktok.shapes import (
    OUTBOX_ROW,
    TIKTOK_EVENT,
    TIKTOK_REQUEST,
    Report,
    check,
    shape_of,
)

NOW = 1_760_000_000.0
MAX_AGE = 7 * 86400.0
EMAIL_HASH = sha256_hex("alice_abc@gmail.com")

# §2.5: TikTok's minimal valid web event, as the Payload Helper shows it (identifiers hashed).
EVENT: dict[str, Any] = {
    "event": "Purchase",
    "event_time": int(NOW) - 60,
    "event_id": "order-123",
    "user": {
        "email": [EMAIL_HASH],
        "ttclid": "E.C.P.CqgBOqhXQeu0cOkFBqtAu2dZ",
        "ttp": "2mMhkF3x9r0Yk2bq4cTQOnHtNkA",
        "ip": "203.0.113.9",
        "user_agent": "Mozilla/5.0 (Macintosh)",
    },
    "page": {"url": "https://shop.example/checkout/thanks"},
    "properties": {
        "currency": "USD",
        "value": 46.0,
        "content_type": "product",
        "contents": [{"content_id": "1077218", "price": 8, "quantity": 2}],
    },
}


def request(*events: object, **top: object) -> dict[str, Any]:
    """A /event/track/ body holding *events*, with *top* fields changed."""
    body: dict[str, Any] = {"event_source": "web", "event_source_id": "C4ABCDEF"}
    body.update(top)
    body["data"] = list(events)
    return body


def run(document: object) -> Report:
    """Check *document* at NOW."""
    return check(document, now=NOW, phone_region="US", max_age_s=MAX_AGE)


def errors(report: Report) -> list[tuple[str, str]]:
    """The (field, code) of each error."""
    return [(f.field, f.code) for f in report.findings if f.level == ERROR]


@pytest.mark.parametrize(
    ("document", "shape"),
    [
        ({"event": "Purchase", "event_id": "1", "payload": {}}, OUTBOX_ROW),
        ({"event": "Purchase", "event_id": "1", "pixel_code": "P"}, OUTBOX_ROW),
        ({"event": "Purchase", "event_id": "1"}, OUTBOX_ROW),
        ({"event": "Purchase", "user": {}, "payload": {}}, OUTBOX_ROW),
        ({"event": "Purchase", "event_id": "1", "properties": {}}, TIKTOK_EVENT),
        ({"event": "Purchase", "limited_data_use": True}, TIKTOK_EVENT),
        ({"event_source": "web", "data": []}, TIKTOK_REQUEST),
        (["Purchase"], OUTBOX_ROW),
    ],
)
def test_shape_is_told_by_its_keys(document: object, shape: str) -> None:
    """data makes a request; a row-only column a row; an event object at the top an event."""
    assert shape_of(document) == shape


def test_tiktok_event_is_checked_like_the_row_enqueue_makes_of_it() -> None:
    """TikTok's own valid event has no finding, and the shape line says how it was read."""
    report = run(EVENT)
    assert report.shape == TIKTOK_EVENT
    assert "event_source web" in report.read_as
    assert report.findings == []


def test_tiktok_event_errors_are_the_builders_in_tiktoks_names() -> None:
    """An event's errors carry the daemon's reason codes and TikTok's field names."""
    event = copy.deepcopy(EVENT)
    event["page"]["url"] = 42
    event["properties"]["currency"] = "XXX"
    event["user"]["fbp"] = "x"
    report = run(event)
    assert errors(report) == [
        ("user.fbp", "malformed/unknown_key"),
        ("properties.currency", "malformed/value"),
        ("page.url", "malformed/type"),
    ]
    assert all(not f.message.startswith("payload.") for f in report.findings)


def test_same_event_as_a_row_and_as_tiktok_shows_it_gives_the_same_errors() -> None:
    """An outbox row and the TikTok event it becomes give the same errors and codes."""
    event = copy.deepcopy(EVENT)
    event["properties"]["contents"][0]["quantity"] = 1.5
    row = {key: event[key] for key in ("event", "event_time", "event_id")}
    row["payload"] = {key: value for key, value in event.items() if key not in row}
    as_row = [(f.field, f.code) for f in lint(row, now=NOW, phone_region="US", max_age_s=MAX_AGE)]
    assert errors(run(event)) == [field for field in as_row if field[1]]
    assert errors(run(event)) == [("properties.contents[0].quantity", "malformed/value")]


def test_raw_identifiers_in_tiktoks_shape_are_a_warning() -> None:
    """TikTok's shape wants hashes; raw ones are a warning (the daemon would hash them)."""
    event = copy.deepcopy(EVENT)
    event["user"]["email"] = ["alice_abc@gmail.com"]
    report = run(event)
    assert [(f.level, f.field) for f in report.findings] == [(WARNING, "user.email")]
    assert "alice" not in report.findings[0].message


def test_request_events_are_checked_by_index_with_its_source() -> None:
    """Each event of a request is checked with the request's source, named data[i]."""
    app_event = {key: value for key, value in EVENT.items() if key not in ("page",)}
    app_event = {**app_event, "user": {"email": [EMAIL_HASH], "ip": "203.0.113.9"}}
    report = run(request(app_event, "not an event", app_event, event_source="app"))
    assert report.shape == TIKTOK_REQUEST
    assert report.read_as.startswith("a TikTok /event/track/ request body with 3 event(s)")
    assert "event_source app" in report.read_as
    assert errors(report) == [
        ("data[0].app.app_id", "malformed/missing"),
        ("data[1]", "request/type"),
        ("data[2].app.app_id", "malformed/missing"),
    ]


def test_clean_request_has_no_finding() -> None:
    """A valid request of two web events has no finding."""
    assert run(request(EVENT, EVENT)).findings == []


@pytest.mark.parametrize(
    ("top", "field", "code"),
    [
        ({"event_source": "pixel"}, "event_source", "request/value"),
        ({"event_source": None}, "event_source", "request/missing"),
        ({"event_source_id": ""}, "event_source_id", "request/missing"),
        ({"event_source_id": 123}, "event_source_id", "request/type"),
        ({"test_event_code": 5}, "test_event_code", "request/type"),
    ],
)
def test_request_fields_are_checked(top: dict[str, Any], field: str, code: str) -> None:
    """The request's own fields give errors TikTok answers with 40002 (§2.1)."""
    body = request(EVENT, **top)
    if top.get("event_source", "") is None:
        del body["event_source"]
    assert (field, code) in errors(run(body))


@pytest.mark.parametrize(("size", "code"), [(0, "request/missing"), (1001, "request/value")])
def test_request_of_no_or_too_many_events_is_an_error(size: int, code: str) -> None:
    """data holds 1 to 1,000 events; outside that TikTok rejects the whole request (§3.1)."""
    report = run(request(*[EVENT] * size))
    assert ("data", code) in errors(report)


def test_request_extras_are_warnings() -> None:
    """partner_name and unknown top-level keys are warned about, not refused."""
    report = run(request(EVENT, partner_name="Acme", pixel_code="X"))
    assert [(f.level, f.field) for f in report.findings] == [
        (WARNING, "partner_name"),
        (WARNING, "pixel_code"),
    ]


def test_findings_are_errors_first() -> None:
    """Errors come before warnings in every shape."""
    event = copy.deepcopy(EVENT)
    event["properties"]["currency"] = "usd"
    event["page"]["url"] = 42
    for report in (run(event), run(request(event, partner_name="Acme"))):
        levels = [f.level for f in report.findings]
        assert levels == sorted(levels, key=lambda level: level != ERROR)
        assert ERROR in levels and WARNING in levels


def test_finding_type_is_the_lints() -> None:
    """A report holds lint findings, so the command prints every shape the same way."""
    assert all(isinstance(f, Finding) for f in run(request(EVENT, "x")).findings)
