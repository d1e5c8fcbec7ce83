"""Tests for normalise.HashCache: returning visitors' identifiers hashed once, in bounded memory."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import orjson
import pytest

from forwarder.destination import Built
from forwarder.events import OutboxRow
from forwarder.tiktok import normalise
from forwarder.tiktok.build import BuildOptions, build
from forwarder.tiktok.normalise import HASH_CACHE, HashCache, hash_identifier, sha256_hex

NOW = 1_700_000_100.0
Normalizer = Callable[[str, str | None], str | None]
VISITOR = {
    "email": " Alice.Smith@Example.COM ",
    "phone": "020 7946 0958",
    "external_id": "cust-000042",
    "first_name": " Alice ",
    "last_name": "SMITH",
    "zip_code": "SW1A 1AA",
    "city": "London",
}


def options(region: str | None = "GB", consent: str = "granted") -> BuildOptions:
    return BuildOptions(
        default_pixel="PIXEL",
        phone_region=region,
        consent_default=consent,
        max_age_s=1e9,
        test_event_code=None,
    )


def built(user: dict[str, object], opts: BuildOptions | None = None) -> Built:
    """Build a Purchase for *user*; it must not be refused."""
    payload = orjson.dumps({"user": user}).decode()
    row = OutboxRow(1, "e-1", "Purchase", int(NOW) - 60, payload, "", "web", "", 0, NOW - 60)
    result = build(row, opts or options(), NOW)
    assert isinstance(result, Built)
    return result


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Count every identifier normalised, from an empty cache."""
    calls: list[str] = []
    for kind, normalizer in list(normalise.NORMALIZERS.items()):

        def counting(
            raw: str, region: str | None, kind: str = kind, normalizer: Normalizer = normalizer
        ) -> str | None:
            calls.append(kind)
            return normalizer(raw, region)

        monkeypatch.setitem(normalise.NORMALIZERS, kind, counting)
    HASH_CACHE.clear()
    yield calls
    HASH_CACHE.clear()


def test_returning_visitor_is_normalised_once(counted: list[str]) -> None:
    """A visitor's second event sends the same hashes without normalising anything again."""
    first = built(dict(VISITOR)).event["user"]
    assert sorted(counted) == sorted(VISITOR.keys() - {"city"})
    second = built(dict(VISITOR)).event["user"]
    assert second == first
    assert len(counted) == 6
    assert first["phone"] == [sha256_hex("+442079460958")]
    assert first["email"] == [sha256_hex("alice.smith@example.com")]
    assert first["zip_code"] == sha256_hex("sw1a1aa")


@pytest.mark.usefixtures("counted")
def test_cached_hashes_equal_uncached_ones() -> None:
    """What the cache answers is hash_identifier's answer, per kind and per phone region."""
    for region in ("GB", None, "US"):
        user = built(dict(VISITOR), options(region)).event["user"]
        for kind in ("first_name", "last_name", "zip_code"):
            assert user[kind] == hash_identifier(kind, VISITOR[kind], region)
        for kind in ("email", "external_id"):
            assert user[kind] == [hash_identifier(kind, VISITOR[kind], region)]
        phone = hash_identifier("phone", VISITOR["phone"], region)
        assert user.get("phone") == (None if phone is None else [phone])
    assert built(dict(VISITOR), options("GB")).event["user"]["phone"] == [
        sha256_hex("+442079460958")
    ]


@pytest.mark.usefixtures("counted")
def test_unreadable_identifier_warns_on_every_event() -> None:
    """A returning visitor's unreadable phone is dropped with its warning each time, cached."""
    user = {"phone": "call me maybe", "email": "nobody", "external_id": "x"}
    for _ in range(2):
        result = built(dict(user))
        assert "phone" not in result.event["user"]
        assert "email" not in result.event["user"]
        assert result.warnings == (
            "user.phone dropped: not a valid phone number for region GB",
            "user.email dropped: not an email address",
        )


def test_denied_consent_hashes_nothing(counted: list[str]) -> None:
    """Without ad_user_data consent no identifier is normalised, hashed or cached."""
    result = built(dict(VISITOR), options(consent="denied"))
    assert result.event["user"] == {"city": "London"}
    assert counted == []
    assert len(HASH_CACHE) == 0


def test_cache_is_bounded_least_recently_used_first() -> None:
    """The cache never holds more than its bound, and evicts the least recently used entry."""
    cache = HashCache(100)
    emails = [f"visitor{i}@example.com" for i in range(150)]
    for email in emails:
        assert cache.hashed("email", email, None) == sha256_hex(email)
    assert len(cache) == 100
    info = cache.hashed.cache_info()
    cache.hashed("email", emails[-1], None)
    assert cache.hashed.cache_info().hits == info.hits + 1
    cache.hashed("email", emails[0], None)  # evicted: the least recently used went first
    assert cache.hashed.cache_info().misses == info.misses + 1
    cache.clear()
    assert len(cache) == 0


def test_cache_refuses_a_bound_below_one() -> None:
    """A cache of no entries is a configuration mistake, refused with a clear error."""
    with pytest.raises(ValueError, match="max_entries must be at least 1"):
        HashCache(0)


def test_builder_cache_has_its_documented_bound() -> None:
    """The builder's cache holds at most HASH_CACHE_ENTRIES identifiers (docs/performance.md)."""
    assert HASH_CACHE.max_entries == normalise.HASH_CACHE_ENTRIES == 16_384
    assert HASH_CACHE.hashed.cache_info().maxsize == 16_384
