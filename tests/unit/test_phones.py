"""Tests for forwarder.tiktok.phones: phonenumbers' E.164, decided faster, as the builder sends."""

from __future__ import annotations

import functools
import hashlib
import random
import re
from collections.abc import Iterator

import orjson
import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from phonenumbers import PhoneNumberFormat

from forwarder.events import OutboxRow
from forwarder.tiktok import build, phones
from forwarder.tiktok.normalise import normalize_phone
from forwarder.tiktok.phones import normalise_phone_strict

#: The corpus' regions: national formats are parsed with these; international ones without any.
REGIONS = ("US", "CA", "GB", "DE", "FR", "IN", "BR", "AU", "JP", "IT", "MX", "ES")
VALID_PER_REGION = 75  # valid numbers: example numbers of each type with random last digits
RANDOM_PER_REGION = 35  # random digit strings of a possible length: possible, rarely valid
SHOP_VARIANTS_PER_NUMBER = 5  # picked at random from shop_variants, besides the four formats
CORPUS_SEED = 21


def reference(raw: str, region: str | None) -> str | None:
    """Return phonenumbers' answer: parse, is_possible_number, format_number E164."""
    try:
        number = phonenumbers.parse(raw, region.upper() if region else None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    e164: str = phonenumbers.format_number(number, PhoneNumberFormat.E164)
    return e164


def phone_number(country_code: int, nsn: str) -> phonenumbers.PhoneNumber:
    """Build a PhoneNumber from its national significant number, leading zeros included."""
    number = phonenumbers.PhoneNumber(country_code=country_code, national_number=int(nsn))
    zeros = len(nsn) - len(nsn.lstrip("0"))
    if zeros:
        number.italian_leading_zero = True
        number.number_of_leading_zeros = min(zeros, len(nsn) - 1)
    return number


def valid_numbers(region: str, rng: random.Random) -> list[phonenumbers.PhoneNumber]:
    """Return valid numbers of every type *region* has, from its example numbers."""
    types = sorted(phonenumbers.supported_types_for_region(region))
    examples = [phonenumbers.example_number_for_type(region, kind) for kind in types]
    examples = [example for example in examples if example is not None]
    found: list[phonenumbers.PhoneNumber] = []
    for _ in range(100 * VALID_PER_REGION):
        example = rng.choice(examples)
        nsn = phonenumbers.national_significant_number(example)
        tail = rng.randint(1, max(1, min(5, len(nsn) - 3)))
        nsn = nsn[:-tail] + "".join(rng.choice("0123456789") for _ in range(tail))
        number = phone_number(example.country_code, nsn)
        if phonenumbers.is_valid_number(number):
            found.append(number)
            if len(found) == VALID_PER_REGION:
                break
    return found


def random_numbers(region: str, rng: random.Random) -> list[phonenumbers.PhoneNumber]:
    """Return random national numbers of a possible length for *region*."""
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    found = []
    for _ in range(RANDOM_PER_REGION):
        size = rng.choice(metadata.general_desc.possible_length)
        nsn = rng.choice("123456789") + "".join(rng.choice("0123456789") for _ in range(size - 1))
        found.append(phone_number(metadata.country_code, nsn))
    return found


def dialled_prefix(region: str) -> str:
    """Return the digits dialled from *region* before a country code ("00", "011", "0011")."""
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    prefix: str = metadata.preferred_international_prefix or metadata.international_prefix
    if re.fullmatch(r"[0-9]+", prefix):
        return prefix
    return {"BR": "0021", "AU": "0011"}.get(region, "00")


def shop_variants(region: str, number: phonenumbers.PhoneNumber) -> list[str]:
    """Return the ways shops write *number*: punctuation, brackets, prefixes, stray spaces."""
    country = str(number.country_code)
    nsn = phonenumbers.national_significant_number(number)
    national = phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL)
    international = phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL)
    groups = international.split(" ")[1:] or [nsn]
    trunk = phonenumbers.PhoneMetadata.metadata_for_region(region).national_prefix or ""
    variants = [
        f"+{country} {'-'.join(groups)}",
        f"+{country}.{'.'.join(groups)}",
        f"(+{country}){nsn}",
        f"(+{country}) {' '.join(groups)}",
        f"{dialled_prefix(region)} {country} {' '.join(groups)}",
        f"00{country}{nsn}",
        f"{country}{nsn}",
        f" {national} ",
        f"\t{international}\n",
        national.replace(" ", "-"),
        national.replace(" ", "."),
        f"({groups[0]}) {' '.join(groups[1:])}",
        f"{trunk}{nsn}",
    ]
    if trunk == "0":
        variants.append(f"+{country} (0){' '.join(groups)}")
        variants.append(f"(0{groups[0]}) {' '.join(groups[1:])}")
    return variants


@functools.cache
def corpus() -> tuple[tuple[str, str], ...]:
    """Return the seeded corpus: (text, region) in the four formats and shop variants."""
    rng = random.Random(CORPUS_SEED)
    formats = (
        PhoneNumberFormat.NATIONAL,
        PhoneNumberFormat.INTERNATIONAL,
        PhoneNumberFormat.E164,
        PhoneNumberFormat.RFC3966,
    )
    items: dict[tuple[str, str], None] = {}
    for region in REGIONS:
        for number in valid_numbers(region, rng) + random_numbers(region, rng):
            texts = [phonenumbers.format_number(number, fmt) for fmt in formats]
            texts += rng.sample(shop_variants(region, number), SHOP_VARIANTS_PER_NUMBER)
            items.update(((text, region), None) for text in texts)
    return tuple(items)


def is_international(text: str) -> bool:
    return text.lstrip(" \t(").startswith(("+", "tel:+", "00", "011"))


def test_corpus_is_large_and_mixed() -> None:
    """The corpus holds 10,000+ distinct numbers of 8+ regions, national and international."""
    items = corpus()
    assert len(items) >= 10_000
    assert len({region for _, region in items}) >= 8
    international = sum(is_international(text) for text, _ in items)
    assert 0.3 < international / len(items) < 0.8
    assert any("(0)" in text for text, _ in items)
    assert any(text.startswith("tel:") for text, _ in items)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def built_phone(text: str, region: str | None) -> list[str] | None:
    """Return the phone the builder sends for *text* with FORWARDER_PHONE_REGION *region*."""
    options = build.BuildOptions(
        default_pixel="PIXEL",
        phone_region=region,
        consent_default="granted",
        max_age_s=1e9,
        test_event_code=None,
    )
    payload = orjson.dumps({"user": {"phone": text, "external_id": "x"}}).decode()
    row = OutboxRow(1, "e-1", "Purchase", 1_700_000_000, payload, "", "web", "", 0, 1_700_000_000.0)
    built = build.build(row, options, 1_700_000_100.0)
    assert isinstance(built, build.Built)
    phone: list[str] | None = built.event["user"].get("phone")
    return phone


def test_builder_sends_phonenumbers_answer_for_the_corpus() -> None:
    """For every corpus number, with its region and without, the builder hashes phonenumbers'
    E.164, or drops the phone where phonenumbers finds no possible number."""
    wrong = []
    for text, region in corpus():
        for given_region in (region, None):
            expected = reference(text, given_region)
            sent = built_phone(text, given_region)
            found = normalize_phone(text, given_region)
            if found != expected or sent != (None if expected is None else [sha(expected)]):
                wrong.append((text, given_region, expected, found))
    assert wrong == []


def test_corpus_is_decided_from_metadata(monkeypatch: pytest.MonkeyPatch) -> None:
    """At least 99% of the corpus, with its region, is decided without phonenumbers.parse."""
    parsed = []
    parse = phonenumbers.parse

    def counting(raw: str, region: str | None = None) -> phonenumbers.PhoneNumber:
        parsed.append(raw)
        return parse(raw, region)

    monkeypatch.setattr(phonenumbers, "parse", counting)
    items = corpus()
    for text, region in items:
        normalise_phone_strict(text, region)
    assert len(parsed) <= 0.01 * len(items)


COMMON = [
    ("020 7946 0958", "GB", "+442079460958"),
    ("+44 (0)20 7946 0958", None, "+442079460958"),
    ("+44 (0)20 7946 0958", "GB", "+442079460958"),
    ("0044 20 7946 0958", "GB", "+442079460958"),
    ("011 44 20 7946 0958", "US", "+442079460958"),
    ("0011 44 20 7946 0958", "AU", "+442079460958"),
    ("0021 44 20 7946 0958", "BR", "+442079460958"),  # Brazil dials a carrier code after 00
    ("(11) 91234-5678", "BR", "+5511912345678"),
    ("0 15 11 91234 5678", "BR", "+5511912345678"),  # national prefix and carrier code
    ("011 15-2345-6789", "AR", "+5491123456789"),  # Argentina's mobile "15" becomes "9"
    ("06 1234 5678", "IT", "+390612345678"),  # Italy keeps its leading zero
    ("+39 06 1234 5678", None, "+390612345678"),
    ("090-1234-5678", "JP", "+819012345678"),
    ("030/1234567", "DE", "+49301234567"),
    ("Tel: 020 7946 0958", "GB", "+442079460958"),
    ("tel:+44-20-7946-0958", None, "+442079460958"),
    ("44 20 7946 0958", "GB", "+442079460958"),  # the region's own country code without "+"
    ("91 98765 43210", "IN", "+919876543210"),
    ("8 (812) 123-45-67", "RU", "+78121234567"),
    ("020 7946 0958", "gb", "+442079460958"),
    ("+44 20 7946 0958", "FR", "+442079460958"),
    ("7946 0958", "GB", "+4479460958"),  # possible as a local number (is_possible_number)
    ("373-4253", "US", "+13734253"),
    ("020 7946 0958", None, None),  # national, and no region to read it with
    ("0044 20 7946 0958", None, None),  # 00 is an international prefix only within a region
    ("20 7946 09581", "GB", None),  # an impossible length
    ("213 373 42", "US", None),
]


@pytest.mark.parametrize(("raw", "region", "expected"), COMMON)
def test_common_shapes_skip_phonenumbers_parse(
    monkeypatch: pytest.MonkeyPatch, raw: str, region: str | None, expected: str | None
) -> None:
    """Punctuated, national and prefixed numbers are decided from metadata, correctly."""

    def refuse(raw: str, region: str | None = None) -> None:
        raise AssertionError("phonenumbers.parse called")

    assert reference(raw, region) == expected
    monkeypatch.setattr(phonenumbers, "parse", refuse)
    assert normalise_phone_strict(raw, region) == expected


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("22345", "TA", "+29022345"),  # 5 digits: impossible in TA, possible in SH
        ("12345", "KZ", None),  # 5 digits: local-only in KZ, too short in RU
        ("0 7700 900123", "JE", "+447700900123"),
        ("555-0123", "CA", "+15550123"),
    ],
)
def test_shared_country_codes_check_the_main_regions_lengths(
    monkeypatch: pytest.MonkeyPatch, raw: str, region: str, expected: str | None
) -> None:
    """As is_possible_number, a number is checked against its country code's main region."""

    def refuse(raw: str, region: str | None = None) -> None:
        raise AssertionError("phonenumbers.parse called")

    assert reference(raw, region) == expected
    monkeypatch.setattr(phonenumbers, "parse", refuse)
    assert normalise_phone_strict(raw, region) == expected


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("+1 213 373 4253 ext. 5", None, "+12133734253"),  # an extension
        ("1-800-FLOWERS", "US", "+18003569377"),  # letters of a vanity number
        ("tel:+1-213-373-4253;ext=5", None, "+12133734253"),  # RFC 3966 parameters
        (
            "\uff10\uff12\uff10 \uff17\uff19\uff14\uff16 \uff10\uff19\uff15\uff18",
            "GB",
            "+442079460958",
        ),  # full-width digits
        ("++44 20 7946 0958", None, "+442079460958"),
        ("+\uff0b44 20 7946 0958", None, "+442079460958"),
        ("020 7946 0958", "UK", None),  # a region phonenumbers does not know
        ("+44 20 7946 0958", "UK", "+442079460958"),
        ("020\t7946 0958", "GB", None),
        ("+44 20 7946 0958 1234 5678 9", None, None),  # too long
        ("+0123456789", None, None),
        ("12", "US", None),
        ("", None, None),
        ("  ", "GB", None),
        ("call me maybe", "US", None),
    ],
)
def test_unusual_shapes_fall_back(raw: str, region: str | None, expected: str | None) -> None:
    """Extensions, letters, other digits and unknown regions get phonenumbers' own answer."""
    assert normalize_phone(raw, region) == reference(raw, region) == expected


@pytest.mark.parametrize(
    ("raw", "region", "shortcut", "expected"),
    [
        ("+49 030 1234567", None, "+490301234567", "+49301234567"),  # a trunk 0 after "+49"
        ("+1 (1)201-555-0130", None, "+112015550130", "+12015550130"),  # a trunk 1 after "+1"
        ("+1 213 373 425", None, "+1213373425", None),  # an impossible length
        ("+999 1234567", None, "+9991234567", None),  # no such country code
        ("2\u0663\u06633734253", "US", "+12\u0663\u06633734253", "+12333734253"),  # Arabic-Indic
    ],
)
def test_former_shortcuts_now_give_phonenumbers_answer(
    raw: str, region: str | None, shortcut: str, expected: str | None
) -> None:
    """Where the builder's former shortcuts sent a number as written (*shortcut*), it now sends
    phonenumbers' E.164 or drops an impossible number (docs/contract.md, phone)."""
    assert normalize_phone(raw, region) == reference(raw, region) == expected != shortcut
    assert built_phone(raw, region) == (None if expected is None else [sha(expected)])


REGION_CHOICES = [None, "", "US", "us", "CA", "GB", "DE", "FR", "BR", "AU", "JP", "IT", "AR", "UK"]
PREFIXES = ["", "+", "(+", "00", "011", "0", "+1", "+44 ", "+49 0", "tel:+", "Tel: "]
ALPHABET = "0123456789" * 3 + " +()-./" + "xXAte#;,\t\uff0b\uff10\u0663"


@settings(max_examples=1500, deadline=None, derandomize=True, database=None)
@given(
    prefix=st.sampled_from(PREFIXES),
    body=st.text(alphabet=ALPHABET, max_size=20),
    region=st.sampled_from(REGION_CHOICES),
)
def test_arbitrary_strings_match_the_reference(prefix: str, body: str, region: str | None) -> None:
    """Any short string of digits, punctuation and letters gets the reference functions' answer."""
    raw = prefix + body
    assert normalise_phone_strict(raw, region) == reference(raw, region)


@pytest.fixture
def no_plans() -> Iterator[None]:
    """Forget the compiled metadata before and after the test."""
    phones._REGION_PLANS.clear()
    phones._COUNTRY_PLANS.clear()
    yield
    phones._REGION_PLANS.clear()
    phones._COUNTRY_PLANS.clear()


@pytest.mark.usefixtures("no_plans")
def test_plans_stay_bounded_by_known_regions() -> None:
    """Unknown regions are never stored, so the compiled metadata cannot grow without end."""
    for i in range(200):
        normalise_phone_strict("020 7946 0958", f"Q{i}")
    assert phones._REGION_PLANS == {}
    normalise_phone_strict("020 7946 0958", "GB")
    assert set(phones._REGION_PLANS) == {"GB"}
