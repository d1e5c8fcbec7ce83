"""Tests for forwarder.payload: normalisation, hashing, consent and row validation."""

from __future__ import annotations

import random
from typing import Any

import orjson
import phonenumbers
import pytest

from forwarder.destination import Built, Refused, Route
from forwarder.events import OutboxRow
from forwarder.tiktok.build import BuildOptions, build
from forwarder.tiktok.normalise import hash_identifier, normalize_email, normalize_phone, sha256_hex

NOW = 1_760_000_000.0
DAY = 86400

# Raw identifiers used throughout; no reason or warning may ever contain them.
RAW_EMAIL = " ALICE_abc@gmail.com "
RAW_PHONE = "(+1)2133734253"
RAW_EXTERNAL_ID = "user_123"
FORBIDDEN = ("alice", "gmail", "2133734253", "373-4253", "user_123")

# tiktok-events-api.md §6: TikTok's own examples.
EMAIL_HASH = "848a771458438fc2ec420560d769fb9b9b86851ee338ec56517baabd79d3bb4f"
PHONE_HASH = "9f7ec22d72092cd3c0b58726ed9c2d91b92e51a3f29837508fb2948bb22dd2fd"
EXTERNAL_ID_HASH = "80fba0ae1c48e3978e43e4efc365e14e12ea0c830ba8ba5b9a2dafc7e3f2ab8b"

OPTS = BuildOptions(
    default_pixel="DEFAULTPIXEL",
    phone_region="US",
    consent_default="granted",
    max_age_s=7 * DAY,
    test_event_code=None,
)

PERSONAL_USER: dict[str, Any] = {
    "email": RAW_EMAIL,
    "phone": [RAW_PHONE],
    "external_id": RAW_EXTERNAL_ID,
    "first_name": " Alice ",
    "last_name": "Smith",
    "zip_code": "90210-1234",
    "ttclid": "E.C.P.abc",
    "ip": "203.0.113.9",
}
NON_PERSONAL_KEYS = {"ttclid", "ip"}
#: An app event's device identifiers, as TikTok wants them sent (§2.3).
IDFA = "6D92078A-8246-4BA4-AE5B-76104861E7DC"
GAID = "38400000-8cf0-11bd-b23e-10b96e40000d"
APP = {"app": {"app_id": "com.example.shop"}}


def make_row(**changes: object) -> OutboxRow:
    """Return a valid outbox row with *changes* applied."""
    fields: dict[str, Any] = {
        "id": 7,
        "event_id": "order-123",
        "event": "Purchase",
        "event_time": int(NOW) - 60,
        "payload": "{}",
        "pixel_code": "ROWPIXEL",
        "event_source": None,
        "test_event_code": None,
        "attempts": 0,
        "created_at": NOW - 30,
    }
    fields.update(changes)
    return OutboxRow(**fields)


def dumps(value: object) -> str:
    """Return *value* as JSON text."""
    return orjson.dumps(value).decode()


def built(row: OutboxRow, opts: BuildOptions = OPTS, now: float = NOW) -> Built:
    """Build *row* and require success."""
    result = build(row, opts, now)
    assert isinstance(result, Built), result
    assert_private(*result.warnings)
    return result


def refused(row: OutboxRow, opts: BuildOptions = OPTS, now: float = NOW) -> Refused:
    """Build *row* and require a refusal."""
    result = build(row, opts, now)
    assert isinstance(result, Refused), result
    assert_private(result.reason)
    return result


def assert_private(*texts: str) -> None:
    """Fail if any text contains one of the raw identifiers used in these tests."""
    for text in texts:
        for raw in FORBIDDEN:
            assert raw not in text.lower(), text


# --- normalisation and hashing ------------------------------------------------------------


def test_tiktok_email_vector() -> None:
    """TikTok's email example is trimmed, lower-cased and hashed to its published digest."""
    assert normalize_email(RAW_EMAIL) == "alice_abc@gmail.com"
    assert sha256_hex("alice_abc@gmail.com") == EMAIL_HASH
    assert hash_identifier("email", RAW_EMAIL, None) == EMAIL_HASH


def test_tiktok_phone_vector() -> None:
    """TikTok's phone example becomes E.164 with its '+' and hashes to the published digest."""
    assert normalize_phone(RAW_PHONE, None) == "+12133734253"
    assert hash_identifier("phone", RAW_PHONE, None) == PHONE_HASH
    assert hash_identifier("phone", RAW_PHONE, "US") == PHONE_HASH


def test_tiktok_external_id_vector() -> None:
    """TikTok's external_id example is hashed as given."""
    assert hash_identifier("external_id", RAW_EXTERNAL_ID, None) == EXTERNAL_ID_HASH


def test_external_id_is_not_lowercased_or_trimmed() -> None:
    """external_id keeps its case and spaces; only a blank one is dropped."""
    assert hash_identifier("external_id", "User_123", None) == sha256_hex("User_123")
    assert hash_identifier("external_id", " user_123", None) == sha256_hex(" user_123")
    assert hash_identifier("external_id", "", None) is None
    assert hash_identifier("external_id", "   ", None) is None


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("(213) 373-4253", "US", "+12133734253"),
        ("213.373.4253", "us", "+12133734253"),
        ("+1 213 373 4253", None, "+12133734253"),
        ("0044 20 7946 0958", "GB", "+442079460958"),
        ("0044 20 7946 0958", "DE", "+442079460958"),
        ("020 7946 0958", "GB", "+442079460958"),
        ("+44 (0)20 7946 0958", None, "+442079460958"),
        ("+1 213 373 4253 ext. 5", None, "+12133734253"),
        ("(213) 373-4253", None, None),
        ("0044 20 7946 0958", None, None),
        ("12", "US", None),
        ("call me maybe", "US", None),
        ("", "US", None),
        ("+0123456789", None, None),
    ],
)
def test_normalize_phone(raw: str, region: str | None, expected: str | None) -> None:
    """National numbers need a region; international ones parse without; garbage gives None."""
    assert normalize_phone(raw, region) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Bob@Example.COM", "bob@example.com"),
        ("\tbob@example.com\n", "bob@example.com"),
        ("bob.example.com", None),
        ("@example.com", None),
        ("bob@", None),
        ("   ", None),
    ],
)
def test_normalize_email(raw: str, expected: str | None) -> None:
    """An email is trimmed and lower-cased; one without an '@' between two parts is None."""
    assert normalize_email(raw) == expected


@pytest.mark.parametrize(
    ("kind", "raw", "normalized"),
    [
        ("first_name", "  Alice ", "alice"),
        ("last_name", "SMITH", "smith"),
        ("zip_code", " 90210-1234 ", "902101234"),
        ("zip_code", "SW1A 1AA", "sw1a1aa"),
    ],
)
def test_names_and_zip_are_normalised(kind: str, raw: str, normalized: str) -> None:
    """Names are trimmed and lower-cased; zip codes also lose spaces and dashes."""
    assert hash_identifier(kind, raw, None) == sha256_hex(normalized)


@pytest.mark.parametrize(
    "kind", ["email", "phone", "external_id", "first_name", "last_name", "zip_code"]
)
def test_sha256_input_passes_through_lowercased(kind: str) -> None:
    """A value that already is 64 hex characters is not hashed again, only lower-cased."""
    assert hash_identifier(kind, EMAIL_HASH.upper(), "US") == EMAIL_HASH
    assert hash_identifier(kind, f" {EMAIL_HASH} ", "US") == EMAIL_HASH


def test_hash_identifier_rejects_unknown_kind() -> None:
    """Asking to hash a kind TikTok does not define is a programming error."""
    with pytest.raises(ValueError, match="unknown identifier kind 'ip'"):
        hash_identifier("ip", "203.0.113.9", None)


def test_build_options_reject_unknown_consent_default() -> None:
    """consent_default must be 'granted' or 'denied'."""
    with pytest.raises(ValueError, match="consent_default"):
        BuildOptions("P", None, "yes", 1.0, None)


# --- user object ------------------------------------------------------------------------


def test_identifiers_are_hashed_into_lists() -> None:
    """email, phone and external_id go out as lists of hashes; names and zip as one hash."""
    row = make_row(payload=dumps({"user": PERSONAL_USER}))
    user = built(row).event["user"]
    assert user["email"] == [EMAIL_HASH]
    assert user["phone"] == [PHONE_HASH]
    assert user["external_id"] == [EXTERNAL_ID_HASH]
    assert user["first_name"] == sha256_hex("alice")
    assert user["last_name"] == sha256_hex("smith")
    assert user["zip_code"] == sha256_hex("902101234")


def test_national_phone_uses_region() -> None:
    """A national phone number is read in the configured region before hashing."""
    row = make_row(payload=dumps({"user": {"phone": "(213) 373-4253"}}))
    assert built(row).event["user"]["phone"] == [PHONE_HASH]


def test_list_is_deduplicated_in_order() -> None:
    """Identifiers that normalise to the same hash are sent once, first occurrence first."""
    other = sha256_hex("bob@example.com")
    emails = ["Bob@Example.com", RAW_EMAIL, " bob@example.com", EMAIL_HASH.upper()]
    row = make_row(payload=dumps({"user": {"email": emails}}))
    result = built(row)
    assert result.event["user"]["email"] == [other, EMAIL_HASH]
    assert result.warnings == ()


def test_garbage_phone_dropped_with_private_warning() -> None:
    """An unparseable phone is dropped with a warning naming the field, not the value."""
    row = make_row(payload=dumps({"user": {"phone": ["555-ALICE-2133734253x", RAW_PHONE]}}))
    result = built(row)
    assert result.event["user"]["phone"] == [PHONE_HASH]
    assert result.warnings == ("user.phone[0] dropped: not a valid phone number for region US",)


def test_national_phone_without_region_is_dropped() -> None:
    """Without a region a national number cannot be read, so it is dropped with a warning."""
    opts = BuildOptions("P", None, "granted", 7 * DAY, None)
    row = make_row(payload=dumps({"user": {"phone": "(213) 373-4253", "ip": "203.0.113.9"}}))
    result = built(row, opts)
    assert "phone" not in result.event["user"]
    assert result.match_keys == {"ip"}
    assert len(result.warnings) == 1
    assert result.warnings[0].startswith("user.phone dropped: not a valid international phone")


def test_invalid_and_empty_items_dropped_and_key_omitted() -> None:
    """When every item of a list is invalid or empty the key is left out, with one warning each."""
    user = {"email": ["not-an-address", "", "  "], "external_id": "", "first_name": " "}
    row = make_row(payload=dumps({"user": user}))
    result = built(row)
    assert "user" not in result.event
    assert result.match_keys == frozenset()
    assert result.warnings == (
        "user.email[0] dropped: not an email address",
        "user.email[1] dropped: empty",
        "user.email[2] dropped: empty",
        "user.external_id dropped: empty",
        "user.first_name dropped: empty",
    )


def test_never_hashed_fields_stay_raw() -> None:
    """ttclid, ttp, ip, user_agent and the other plain fields are sent exactly as given."""
    plain = {
        "ttclid": "E.C.P.CqUB",
        "ttp": "2Qx_ttp cookie",
        "ip": "2001:DB8::1",
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
        "locale": "en-US",
        "city": " Los Angeles ",
        "state": "CA",
        "country": "US",
    }
    result = built(make_row(payload=dumps({"user": plain})))
    assert result.event["user"] == plain
    assert result.match_keys == {"ttclid", "ttp", "ip", "user_agent"}
    device = {
        "ip": "203.0.113.9",
        "user_agent": "MyShop/4.2 (iOS 17.5)",
        "idfv": "ABCD-1234",
        "att_status": "AUTHORIZED",
        "idfa": IDFA,
        "gaid": GAID,
    }
    result = built(make_row(event_source="app", payload=dumps({"user": device, **APP})))
    assert result.event["user"] == device
    assert result.warnings == ()


def test_empty_plain_field_dropped_with_warning() -> None:
    """An empty never-hashed field is not sent and says so."""
    result = built(make_row(payload=dumps({"user": {"ttclid": "", "ip": "203.0.113.9"}})))
    assert result.event["user"] == {"ip": "203.0.113.9"}
    assert result.warnings == ("user.ttclid dropped: empty",)


def test_null_values_are_absent() -> None:
    """A JSON null in payload or user means the value is absent, not malformed."""
    payload = {"user": {"email": None, "ip": None}, "properties": None, "consent": None}
    result = built(make_row(payload=dumps(payload)))
    assert result.event == {
        "event": "Purchase",
        "event_time": int(NOW) - 60,
        "event_id": "order-123",
    }
    assert result.warnings == ()


def test_match_keys_list_sent_identifiers() -> None:
    """match_keys names the match identifiers present in the sent user object."""
    row = make_row(payload=dumps({"user": PERSONAL_USER}))
    assert built(row).match_keys == {"email", "phone", "external_id", "ttclid", "ip"}


# --- consent ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("consent", "default", "personal_sent", "limited"),
    [
        ({"ad_user_data": "granted", "ad_personalization": "granted"}, "denied", True, None),
        ({"ad_user_data": "granted", "ad_personalization": "denied"}, "granted", True, True),
        ({"ad_user_data": "denied", "ad_personalization": "granted"}, "granted", False, None),
        ({"ad_user_data": "denied", "ad_personalization": "denied"}, "granted", False, True),
        (None, "granted", True, None),
        (None, "denied", False, True),
        ({}, "denied", False, True),
        ({"ad_user_data": "granted"}, "denied", True, True),
        ({"ad_personalization": "granted"}, "denied", False, None),
        ({"ad_user_data": None, "ad_personalization": "denied"}, "granted", True, True),
    ],
)
def test_consent_combinations(
    consent: dict[str, Any] | None, default: str, personal_sent: bool, limited: bool | None
) -> None:
    """ad_user_data gates every personal identifier; ad_personalization sets limited_data_use."""
    opts = BuildOptions("P", "US", default, 7 * DAY, None)
    payload: dict[str, Any] = {"user": PERSONAL_USER}
    if consent is not None:
        payload["consent"] = consent
    event = built(make_row(payload=dumps(payload)), opts).event
    expected_keys = set(PERSONAL_USER) if personal_sent else NON_PERSONAL_KEYS
    assert set(event["user"]) == expected_keys
    assert event["user"]["ttclid"] == "E.C.P.abc"
    assert event.get("limited_data_use") == limited
    assert "consent" not in event


def test_personalization_denied_overrides_payload_flag() -> None:
    """ad_personalization denied forces limited_data_use true even if the payload said false."""
    payload = {"limited_data_use": False, "consent": {"ad_personalization": "denied"}}
    assert built(make_row(payload=dumps(payload))).event["limited_data_use"] is True


def test_payload_limited_data_use_passes_through() -> None:
    """With personalization granted, the payload's own limited_data_use is sent as given."""
    event = built(make_row(payload=dumps({"limited_data_use": False}))).event
    assert event["limited_data_use"] is False


def test_user_data_denied_withholds_device_ids() -> None:
    """ad_user_data denied keeps an app event's IDFA and GAID on this machine, not its IDFV."""
    user = {"idfa": IDFA, "gaid": GAID, "idfv": "ABCD-1234"}
    payload = {"user": user, "consent": {"ad_user_data": "denied"}, **APP}
    event = built(make_row(event_source="app", payload=dumps(payload))).event
    assert event["user"] == {"idfv": "ABCD-1234"}


def test_user_data_denied_leaves_empty_user_out() -> None:
    """When consent removes every identifier, no user object is sent at all."""
    payload = {"user": {"email": RAW_EMAIL}, "consent": {"ad_user_data": "denied"}}
    result = built(make_row(payload=dumps(payload)))
    assert "user" not in result.event
    assert result.match_keys == frozenset()


def test_user_data_denied_skips_invalid_identifiers_silently() -> None:
    """Identifiers that consent keeps local are neither hashed nor warned about."""
    payload = {"user": {"phone": "garbage"}, "consent": {"ad_user_data": "denied"}}
    result = built(make_row(payload=dumps(payload)))
    assert result.warnings == ()


# --- row columns --------------------------------------------------------------------------


def test_event_time_defaults_to_created_at() -> None:
    """A NULL event_time becomes the row's insert time in whole seconds."""
    result = built(make_row(event_time=None, created_at=NOW - 99.7))
    assert result.event["event_time"] == int(NOW - 99.7)
    assert result.created_at == NOW - 99.7


def test_integral_float_event_time_is_accepted() -> None:
    """An event_time stored as a whole float is sent as an integer."""
    event = built(make_row(event_time=float(int(NOW) - 5))).event
    assert event["event_time"] == int(NOW) - 5
    assert type(event["event_time"]) is int


def test_future_event_time_is_clamped() -> None:
    """An event_time ahead of now is sent as now; a small skew raises no warning."""
    result = built(make_row(event_time=int(NOW) + 5), now=NOW + 0.9)
    assert result.event["event_time"] == int(NOW)
    assert result.warnings == ()


def test_far_future_event_time_warns() -> None:
    """A clamp of more than a minute is reported, with a hint when it looks like milliseconds."""
    result = built(make_row(event_time=int(NOW) * 1000))
    assert result.event["event_time"] == int(NOW)
    assert len(result.warnings) == 1
    assert "looks like milliseconds" in result.warnings[0]
    assert built(make_row(event_time=int(NOW) + 3600)).warnings == (
        "event_time was 3600 s in the future; sent as now",
    )


def test_too_old_is_refused() -> None:
    """An event older than the maximum age is refused as too_old with both ages in days."""
    result = refused(make_row(event_time=int(NOW) - 8 * DAY - 3600))
    assert result.code == "too_old"
    assert (result.rule, result.field, result.reason_code) == ("age", "event_time", "too_old/age")
    assert result.row_id == 7
    assert result.reason == (
        "[too_old/age] event_time is 8 days old, older than FORWARDER_MAX_EVENT_AGE (7 days); "
        "TikTok would not attribute it"
    )


def test_too_old_by_created_at() -> None:
    """A row without event_time is aged by its insert time."""
    assert refused(make_row(event_time=None, created_at=NOW - 10 * DAY)).code == "too_old"


def test_exactly_max_age_is_sent() -> None:
    """An event exactly as old as the maximum age is still sent."""
    assert built(make_row(event_time=int(NOW) - 7 * DAY)).event["event_time"] == NOW - 7 * DAY


def test_pixel_defaults_to_setting() -> None:
    """An empty or NULL pixel_code uses the configured default pixel."""
    for pixel in (None, "", "  "):
        assert built(make_row(pixel_code=pixel)).route.pixel == "DEFAULTPIXEL"
    assert built(make_row(pixel_code="ROWPIXEL")).route.pixel == "ROWPIXEL"


def test_test_event_code_defaults_to_setting() -> None:
    """A row's test code wins; else the setting's; an empty one means real traffic (None)."""
    opts = BuildOptions("P", "US", "granted", 7 * DAY, "TEST123")
    assert built(make_row(test_event_code=None), opts).route.test_event_code == "TEST123"
    assert built(make_row(test_event_code=""), opts).route.test_event_code == "TEST123"
    assert built(make_row(test_event_code="ROWTEST"), opts).route.test_event_code == ("ROWTEST")
    real = BuildOptions("P", "US", "granted", 7 * DAY, "")
    assert built(make_row(test_event_code=""), real).route.test_event_code is None
    assert built(make_row()).route.test_event_code is None


def test_event_source_defaults_to_web() -> None:
    """A NULL or empty event_source means web; other valid sources are kept."""
    assert built(make_row(event_source=None)).route.event_source == "web"
    assert built(make_row(event_source="")).route.event_source == "web"
    assert built(make_row(event_source="offline")).route.event_source == "offline"


def test_event_name_is_trimmed_and_event_id_kept_exactly() -> None:
    """event loses surrounding spaces; event_id, the Pixel dedup key, is sent byte for byte."""
    event = built(make_row(event=" purchase ", event_id=" Order-ABC ")).event
    assert event["event"] == "purchase"
    assert event["event_id"] == " Order-ABC "


def test_limited_data_use_only_for_web_and_app() -> None:
    """limited_data_use is sent for web and app events, and left out (with a warning) otherwise."""
    denied = '{"consent": {"ad_personalization": "denied"}}'
    assert built(make_row(payload=denied)).event["limited_data_use"] is True
    denied_app = dumps({"consent": {"ad_personalization": "denied"}, **APP})
    assert built(make_row(payload=denied_app, event_source="app")).event["limited_data_use"]
    offline = built(make_row(payload=denied, event_source="offline"))
    assert "limited_data_use" not in offline.event
    assert any("limited_data_use" in w for w in offline.warnings)


@pytest.mark.parametrize("payload", [None, "", b"", b"{}", bytearray(b"{}"), "{}"])
def test_empty_payload_is_an_empty_object(payload: object) -> None:
    """A NULL, empty or '{}' payload (text or bytes) gives an event with no optional keys."""
    result = built(make_row(payload=payload))
    assert result.event == {
        "event": "Purchase",
        "event_time": int(NOW) - 60,
        "event_id": "order-123",
    }
    assert result.match_keys == frozenset()


def test_unknown_payload_key_refused() -> None:
    """A payload key TikTok's event does not define is refused, naming it and the allowed keys."""
    result = refused(make_row(payload=dumps({"foo": RAW_EMAIL})))
    assert result.reason == (
        "[malformed/unknown_key] payload has unknown key 'foo'; allowed: user, properties, page, "
        "app, ad, lead, limited_data_use, consent"
    )
    assert (result.rule, result.field) == ("unknown_key", "payload.foo")


def test_unknown_user_key_refused() -> None:
    """A user key TikTok does not define is refused, since it could carry raw personal data."""
    result = refused(make_row(payload=dumps({"user": {"full_name": "Alice Smith"}})))
    assert result.code == "malformed"
    assert result.reason.startswith(
        "[malformed/unknown_key] payload.user has unknown key 'full_name'; allowed: email,"
    )


def test_unknown_key_that_looks_like_data_is_not_shown() -> None:
    """An unknown key that is not field-name shaped is left out of the reason."""
    result = refused(make_row(payload=dumps({"user": {RAW_EMAIL.strip(): 1}})))
    assert "not shown" in result.reason


# --- malformed rows (one table) --------------------------------------------------------------

BASE_USER = {"email": RAW_EMAIL, "phone": RAW_PHONE}


def with_payload(**keys: object) -> dict[str, object]:
    """Return row changes whose payload holds the raw test identifiers plus *keys*."""
    payload: dict[str, object] = {"user": BASE_USER}
    payload.update(keys)
    return {"payload": dumps(payload)}


def with_user(**keys: object) -> dict[str, object]:
    """Return row changes whose payload user holds the raw test identifiers plus *keys*."""
    return with_payload(user={**BASE_USER, **keys})


MALFORMED_CASES: list[tuple[str, dict[str, object], str]] = [
    ("event_id null", {"event_id": None}, "event_id must be a non-empty string, got null"),
    ("event_id int", {"event_id": 5}, "event_id must be a non-empty string, got int"),
    ("event_id blank", {"event_id": "  "}, "event_id must be a non-empty string, got an empty"),
    ("event empty", {"event": ""}, "event must be a non-empty string, got an empty one"),
    ("event bytes", {"event": b"Purchase"}, "event must be a non-empty string, got bytes"),
    ("source unknown", {"event_source": "shop"}, "event_source must be one of web, app, offline"),
    ("source int", {"event_source": 1}, "event_source must be a string or NULL, got int"),
    ("pixel int", {"pixel_code": 123}, "pixel_code must be a string or NULL, got int"),
    ("test code int", {"test_event_code": 7}, "test_event_code must be a string or NULL, got int"),
    ("time bool", {"event_time": True}, "event_time must be an integer of Unix seconds, got bool"),
    ("time str", {"event_time": "1760000000"}, "event_time must be an integer of Unix seconds"),
    ("time nan", {"event_time": float("nan")}, "event_time must be Unix seconds, got NaN"),
    ("time inf", {"event_time": float("inf")}, "event_time must be Unix seconds, got NaN"),
    ("payload int", {"payload": 12}, "payload must be JSON text, got int"),
    ("payload dict", {"payload": {"user": {}}}, "payload must be JSON text, got object"),
    ("payload not json", {"payload": "{user: 1}"}, "payload is not valid JSON: "),
    ("payload cut", {"payload": dumps(BASE_USER)[:-5]}, "payload is not valid JSON: "),
    ("payload utf8", {"payload": b"\xff{}"}, "payload is not valid JSON: "),
    ("payload list", {"payload": "[1, 2]"}, "payload must be a JSON object, got list"),
    ("payload key", with_payload(foo=1), "payload has unknown key 'foo'; allowed: user,"),
    ("user list", with_payload(user=[RAW_EMAIL]), "payload.user must be an object, got list"),
    ("user key", with_user(name="Alice"), "payload.user has unknown key 'name'; allowed: "),
    (
        "email int",
        with_user(email=5),
        "payload.user.email must be a string or a list of strings, got int",
    ),
    ("phone item", with_user(phone=[RAW_PHONE, 2133734253]), "payload.user.phone[1] must be a"),
    ("id item null", with_user(external_id=["a", None]), "payload.user.external_id[1] must be"),
    ("name list", with_user(first_name=["Alice"]), "payload.user.first_name must be a string"),
    ("zip int", with_user(zip_code=90210), "payload.user.zip_code must be a string, got int"),
    ("ip int", with_user(ip=12), "payload.user.ip must be a string, got int"),
    ("ua object", with_user(user_agent={}), "payload.user.user_agent must be a string, got object"),
    ("properties str", with_payload(properties="x"), "payload.properties must be an object"),
    ("page list", with_payload(page=[]), "payload.page must be an object, got list"),
    ("app int", with_payload(app=1), "payload.app must be an object, got int"),
    ("ad bool", with_payload(ad=True), "payload.ad must be an object, got bool"),
    ("lead str", with_payload(lead="x"), "payload.lead must be an object, got string"),
    (
        "value comma",
        with_payload(properties={"value": "10,00"}),
        "payload.properties.value is text that is not a plain number",
    ),
    (
        "value bool",
        with_payload(properties={"value": True}),
        "payload.properties.value must be a number, got bool",
    ),
    (
        "value list",
        with_payload(properties={"value": [10]}),
        "payload.properties.value must be a number, got list",
    ),
    (
        "contents obj",
        with_payload(properties={"contents": {}}),
        "payload.properties.contents must be a list of objects, got object",
    ),
    (
        "contents item",
        with_payload(properties={"contents": ["sku-1"]}),
        "payload.properties.contents[0] must be an object, got string",
    ),
    (
        "content_id float",
        with_payload(properties={"contents": [{"content_id": "a"}, {"content_id": 1077218.0}]}),
        "payload.properties.contents[1].content_id must be a string (an id), got float",
    ),
    (
        "ldu str",
        with_payload(limited_data_use="yes"),
        "payload.limited_data_use must be true or false, got string",
    ),
    ("consent str", with_payload(consent="denied"), "payload.consent must be an object"),
    (
        "consent key",
        with_payload(consent={"ad_storage": "granted"}),
        "payload.consent has unknown key 'ad_storage'; allowed: ad_user_data, ad_personalization",
    ),
    (
        "consent value",
        with_payload(consent={"ad_user_data": "no"}),
        "payload.consent.ad_user_data must be 'granted' or 'denied'",
    ),
    (
        "consent list",
        with_payload(consent={"ad_personalization": ["denied"]}),
        "payload.consent.ad_personalization must be 'granted' or 'denied'",
    ),
    (
        "denied still typed",
        with_payload(user={"email": 5}, consent={"ad_user_data": "denied"}),
        "payload.user.email must be a string or a list of strings, got int",
    ),
]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [pytest.param(changes, expected, id=name) for name, changes, expected in MALFORMED_CASES],
)
def test_malformed_rows_are_refused(changes: dict[str, object], expected: str) -> None:
    """Each malformed column or payload is refused with a reason naming the field, never a value."""
    result = refused(make_row(**changes))
    assert result.code == "malformed"
    assert result.row_id == 7
    assert expected in result.reason


def test_no_pixel_anywhere_is_refused() -> None:
    """Without a row pixel and without a default pixel the row is refused, naming the setting."""
    opts = BuildOptions("", "US", "granted", 7 * DAY, None)
    result = refused(make_row(pixel_code=None), opts)
    assert result.code == "malformed"
    assert result.reason == (
        "[malformed/missing] no pixel: set TIKTOK_PIXEL_CODE or the row's pixel_code"
    )


def test_malformed_wins_over_too_old() -> None:
    """A row both malformed and too old is reported as malformed, the problem to fix."""
    result = refused(make_row(event_time=int(NOW) - 30 * DAY, payload="[]"))
    assert result.code == "malformed"


# --- a whole row --------------------------------------------------------------------------


def test_realistic_row_builds_exact_event() -> None:
    """A typical web purchase row produces exactly the event TikTok expects (§2.5)."""
    payload = {
        "user": {
            "email": [RAW_EMAIL, "alice_abc@gmail.com"],
            "phone": "(213) 373-4253",
            "external_id": RAW_EXTERNAL_ID,
            "ttclid": "E.C.P.CqUBabc",
            "ttp": "2Qx3yZ",
            "ip": "203.0.113.9",
            "user_agent": "Mozilla/5.0 (Macintosh)",
        },
        "page": {
            "url": "https://shop.example/checkout/thanks",
            "referrer": "https://shop.example/",
        },
        "properties": {
            "currency": "USD",
            "value": 46.0,
            "content_type": "product",
            "contents": [{"content_id": "1077218", "price": 8, "quantity": 2}],
        },
        "consent": {"ad_user_data": "granted", "ad_personalization": "granted"},
    }
    row = make_row(
        event_id="order-123",
        event="Purchase",
        event_time=1_759_999_000,
        payload=dumps(payload).encode(),
        pixel_code="C4ABCDEF",
        event_source="web",
    )
    assert built(row) == Built(
        row_id=7,
        route=Route(event_source="web", pixel="C4ABCDEF", test_event_code=None),
        event={
            "event": "Purchase",
            "event_time": 1_759_999_000,
            "event_id": "order-123",
            "user": {
                "email": [EMAIL_HASH],
                "phone": [PHONE_HASH],
                "external_id": [EXTERNAL_ID_HASH],
                "ttclid": "E.C.P.CqUBabc",
                "ttp": "2Qx3yZ",
                "ip": "203.0.113.9",
                "user_agent": "Mozilla/5.0 (Macintosh)",
            },
            "properties": {
                "currency": "USD",
                "value": 46.0,
                "content_type": "product",
                "contents": [{"content_id": "1077218", "price": 8, "quantity": 2}],
            },
            "page": {
                "url": "https://shop.example/checkout/thanks",
                "referrer": "https://shop.example/",
            },
        },
        match_keys=frozenset(
            {"email", "phone", "external_id", "ttclid", "ttp", "ip", "user_agent"}
        ),
        warnings=(),
        created_at=NOW - 30,
    )


def test_event_keys_are_in_tiktok_order() -> None:
    """The event's keys come out in a fixed order whatever order the payload used."""
    payload = {
        "limited_data_use": True,
        "lead": {"lead_id": "1"},
        "ad": {"callback": "x"},
        "app": {"app_id": "1"},
        "page": {"url": "https://a.example/"},
        "properties": {"value": 1},
        "user": {"ip": "203.0.113.9"},
    }
    event = built(make_row(payload=dumps(payload), event_source="app")).event
    assert list(event) == [
        "event",
        "event_time",
        "event_id",
        "user",
        "properties",
        "page",
        "app",
        "ad",
        "lead",
        "limited_data_use",
    ]


def test_too_old_reason_for_short_max_age() -> None:
    """A maximum age under a day is still shown as a readable fraction of a day."""
    opts = BuildOptions("P", "US", "granted", 3600.0, None)
    result = refused(make_row(event_time=int(NOW) - 2 * 3600), opts)
    assert result.reason.startswith(
        "[too_old/age] event_time is 0.083 days old, older than FORWARDER_MAX_EVENT_AGE "
        "(0.042 days)"
    )


def test_north_american_fast_path_agrees_with_libphonenumber() -> None:
    """The fast path for US and Canadian national numbers gives libphonenumber's E.164."""
    rng = random.Random(5)
    numbers = ["(213) 555-0101", "1 213 555 0101", "1-800-555-0199", "555-0101", "(013) 555-0101"]
    numbers += [
        f"({rng.randint(100, 999)}) {rng.randint(100, 999)}-{rng.randint(0, 9999):04d}"
        for _ in range(500)
    ]
    for number in numbers:
        for region in ("US", "CA"):
            try:
                parsed = phonenumbers.parse(number, region)
                expected = (
                    phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
                    if phonenumbers.is_possible_number(parsed)
                    else None
                )
            except phonenumbers.NumberParseException:
                expected = None
            assert normalize_phone(number, region) == expected, (number, region)
