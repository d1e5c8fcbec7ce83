"""Normalise phone numbers to E.164 (tiktok-events-api.md §6) without parsing the common shapes.

``normalise_phone_strict(raw, region)`` returns exactly what phonenumbers answers for every
input: its E.164 when ``is_possible_number`` holds, else None. A number written with ASCII
digits, spaces and ``( ) . - /`` is decided from phonenumbers' own metadata (country codes,
international and national prefixes, possible lengths, the general number pattern), replaying
the steps ``phonenumbers.parse`` takes. Anything else (letters, extensions, RFC 3966, non-ASCII
digits, a second "+", an unknown country code, a region phonenumbers does not know, an input it
would refuse as too short or too long) goes to phonenumbers itself.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import phonenumbers
from phonenumbers import PhoneMetadata

#: The shapes decided from metadata: what phonenumbers drops before the first "+" or digit
#: ("tel:", spaces, a bracket; no ";", which could start an RFC 3966 phone-context), an optional
#: "+", then ASCII digits and the punctuation it ignores, then trailing whitespace.
_SHAPE = re.compile(r"[^+\uff0b\d;]*(\+?)([0-9 ().\-/]*)\s*")
_MAX_INPUT = 250  # phonenumbers refuses longer strings (_MAX_INPUT_STRING_LENGTH)
_MIN_NSN = 2  # shorter national numbers are refused (_MIN_LENGTH_FOR_NSN)
_MAX_NSN = 17  # longer national numbers are refused (_MAX_LENGTH_FOR_NSN)
_UNDECIDED = ""  # never a result: E.164 is not empty

# phonenumbers' ValidationResult, as _test_number_length computes it for the general description.
_POSSIBLE = 0
_LOCAL_ONLY = 1
_TOO_SHORT = 2
_TOO_LONG = 3
_INVALID_LENGTH = 4

_REGIONS: frozenset[str] = frozenset(phonenumbers.SUPPORTED_REGIONS)
_COUNTRY_REGIONS: dict[int, tuple[str, ...]] = phonenumbers.COUNTRY_CODE_TO_REGION_CODE
_COUNTRY_CODES = {str(code): code for code in _COUNTRY_REGIONS}  # as written: "1", "44", "358"


class _Plan(NamedTuple):
    """What parse and is_possible_number read from one region's metadata, compiled once."""

    country_code: int
    prefix: str  # the country code as written
    idd: re.Pattern[str] | None  # the international prefix dialled from this region
    national_prefix: re.Pattern[str] | None  # national_prefix_for_parsing
    transform: str | None  # national_prefix_transform_rule
    general: re.Pattern[str] | None  # general_desc.national_number_pattern
    lengths: tuple[int, ...]  # general_desc.possible_length, as stored (sorted)
    local_lengths: tuple[int, ...]  # general_desc.possible_length_local_only
    accepted: frozenset[int]  # the lengths _length finds _POSSIBLE or _LOCAL_ONLY


def _plan(metadata: Any) -> _Plan | None:
    """Compile *metadata*; None when it holds something the fast path does not replay."""
    general = metadata.general_desc
    if general is None or not general.possible_length:
        return None
    national_prefix = metadata.national_prefix_for_parsing
    pattern = re.compile(national_prefix) if national_prefix else None
    transform = metadata.national_prefix_transform_rule or None
    if transform is not None and pattern is not None and pattern.groups == 0:
        return None  # phonenumbers would fail on it with an IndexError: leave that to it
    idd = metadata.international_prefix
    number_pattern = general.national_number_pattern
    return _Plan(
        metadata.country_code,
        str(metadata.country_code),
        re.compile(idd) if idd else None,
        pattern,
        transform,
        re.compile(number_pattern) if number_pattern else None,
        tuple(general.possible_length),
        tuple(general.possible_length_local_only),
        frozenset(general.possible_length) | frozenset(general.possible_length_local_only),
    )


# Bounded by the regions and country codes phonenumbers knows: only those are ever stored.
_REGION_PLANS: dict[str, _Plan | None] = {}
_COUNTRY_PLANS: dict[int, _Plan | None] = {}


def _region_plan(region: str) -> _Plan | None:
    """Return the plan of *region* (upper case), None when phonenumbers does not know it."""
    try:
        return _REGION_PLANS[region]
    except KeyError:
        pass
    if region not in _REGIONS:
        return None
    metadata = PhoneMetadata.metadata_for_region(region, None)
    plan = _REGION_PLANS[region] = None if metadata is None else _plan(metadata)
    return plan


def _country_plan(country_code: int) -> _Plan | None:
    """Return the plan of the main region of *country_code*, as parse and is_possible use it."""
    try:
        return _COUNTRY_PLANS[country_code]
    except KeyError:
        pass
    regions = _COUNTRY_REGIONS.get(country_code)
    if not regions:
        return None
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(country_code, regions[0])
    plan = _COUNTRY_PLANS[country_code] = None if metadata is None else _plan(metadata)
    return plan


def _length(size: int, plan: _Plan) -> int:
    """Classify a national number of *size* digits as phonenumbers' _test_number_length does."""
    if size in plan.local_lengths:
        return _LOCAL_ONLY
    lengths = plan.lengths
    if size == lengths[0]:
        return _POSSIBLE
    if size < lengths[0]:
        return _TOO_SHORT
    if size > lengths[-1]:
        return _TOO_LONG
    return _POSSIBLE if size in lengths else _INVALID_LENGTH


def _matches(pattern: re.Pattern[str] | None, number: str) -> bool:
    """Return whether *pattern* matches all of *number*, as _match_national_number does."""
    return pattern is not None and pattern.fullmatch(number) is not None


def _strip_national_prefix(number: str, plan: _Plan) -> str:
    """Remove a national prefix as _maybe_strip_national_prefix_carrier_code does."""
    pattern = plan.national_prefix
    if pattern is None or not number:
        return number
    match = pattern.match(number)
    if match is None:
        return number
    if plan.transform is None or match.group(pattern.groups) is None:
        stripped = number[match.end() :]
    else:
        stripped = pattern.sub(plan.transform, number, count=1)
    # A number that matched the region's pattern keeps its prefix if removing it breaks that.
    if _matches(plan.general, number) and not _matches(plan.general, stripped):
        return number
    return stripped


def _finish(country_code: int, national: str, plan: _Plan) -> str | None:
    """Strip a national prefix with *plan*, then check the length as is_possible_number does."""
    if len(national) < _MIN_NSN:
        return _UNDECIDED
    prefix = plan.national_prefix
    # Most numbers hold no national prefix: one match rules that out.
    if prefix is not None and prefix.match(national) is not None:
        stripped = _strip_national_prefix(national, plan)
        if _length(len(stripped), plan) in (_POSSIBLE, _TOO_LONG):
            national = stripped
    if len(national) > _MAX_NSN:
        return _UNDECIDED
    check = _country_plan(country_code)
    if check is None:
        return _UNDECIDED
    if len(national) in check.accepted:  # _length: _POSSIBLE or _LOCAL_ONLY
        return "+" + check.prefix + national
    return None


def _international(digits: str) -> str | None:
    """Decide *digits* written after a "+" or an international prefix."""
    if len(digits) <= _MIN_NSN or digits[0] == "0":
        return _UNDECIDED
    for size in (1, 2, 3):
        country_code = _COUNTRY_CODES.get(digits[:size])
        if country_code is not None:
            plan = _country_plan(country_code)
            return _UNDECIDED if plan is None else _finish(country_code, digits[size:], plan)
    return _UNDECIDED  # phonenumbers retries such a "+" number as a national one


def _national(digits: str, home: _Plan) -> str | None:
    """Decide *digits* written without a "+", dialled from the region of *home*."""
    idd = home.idd.match(digits) if home.idd is not None else None
    if idd is not None:
        end = idd.end()
        if end == 0 or end == len(digits):
            return _UNDECIDED
        if digits[end] != "0":  # country codes never start with 0
            return _international(digits[end:])
    if digits.startswith(home.prefix):
        # The region's own country code written without "+": phonenumbers takes it as one when
        # the rest is a better-formed national number, or the whole is too long.
        potential = _strip_national_prefix(digits[len(home.prefix) :], home)
        better = not _matches(home.general, digits) and _matches(home.general, potential)
        if better or _length(len(digits), home) == _TOO_LONG:
            plan = _country_plan(home.country_code)
            return _UNDECIDED if plan is None else _finish(home.country_code, potential, plan)
    return _finish(home.country_code, digits, home)


def _decide(raw: str, region: str | None) -> str | None:
    """Return the result from metadata, or _UNDECIDED when phonenumbers must parse *raw*."""
    if len(raw) > _MAX_INPUT:
        return _UNDECIDED
    shape = _SHAPE.fullmatch(raw)
    if shape is None:
        return _UNDECIDED
    plus, body = shape.groups()
    digits = (
        body.replace(" ", "")
        .replace("-", "")
        .replace("(", "")
        .replace(")", "")
        .replace(".", "")
        .replace("/", "")
    )
    if len(digits) < 3:
        return _UNDECIDED
    if region is None:
        # Without a region phonenumbers needs the "+"; with it, the region plays no part.
        return _international(digits) if plus else None
    home = _region_plan(region)
    if home is None:
        return _UNDECIDED
    return _international(digits) if plus else _national(digits, home)


def normalise_phone_strict(raw: str, region: str | None) -> str | None:
    """Return phonenumbers' E.164 for *raw* when it is a possible number, else None.

    *region* (either case) reads national numbers; without one only "+" numbers are possible.
    """
    upper = region.upper() if region else None
    decided = _decide(raw, upper)
    if decided != _UNDECIDED:
        return decided
    return _parse(raw, upper)


def _parse(raw: str, region: str | None) -> str | None:
    """Return phonenumbers' E.164 for *raw* when it is a possible number."""
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    e164: str = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return e164
