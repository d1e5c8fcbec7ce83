"""Identifiers in the form TikTok matches on, and their SHA-256 (tiktok-events-api.md §6).

The hashed identifiers (email, phone, external_id, first and last name, zip code) are
normalised, then hashed; a value that is already a SHA-256 passes through lower-cased. The
identifiers TikTok takes raw but in one form (ip, idfa, gaid) are normalised only. A None means
the value cannot be read and is dropped; ``forwarder.tiktok.build_user`` says why.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable
from socket import AF_INET, AF_INET6, inet_pton

from forwarder.tiktok.phones import normalise_phone_strict

#: A SHA-256 in hex, in either case.
HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_sha256 = hashlib.sha256


def sha256_hex(value: str) -> str:
    """Return the lower-case hex SHA-256 of *value* encoded as UTF-8."""
    return _sha256(value.encode("utf-8")).hexdigest()


def normalize_email(raw: str) -> str | None:
    """Trim and lower-case an email (§6); return None when it is not an address."""
    email = raw.strip().lower()
    local, at, domain = email.rpartition("@")
    if not (at and local and domain):
        return None
    return email


#: §6: a phone number in E.164 with its leading "+" (TikTok recommends libphonenumber): exactly
#: phonenumbers' E.164 when it holds a possible number, else None (forwarder.tiktok.phones).
normalize_phone = normalise_phone_strict


def _normalize_external_id(raw: str, region: str | None) -> str | None:
    # §6: hashed as given, no lowercasing or trimming; a blank id identifies nobody.
    return raw if raw.strip() else None


def _normalize_name(raw: str, region: str | None) -> str | None:
    # §6 (from S3/S4/S5): trim and lower-case.
    return raw.strip().lower() or None


def _normalize_zip(raw: str, region: str | None) -> str | None:
    # §6 (from S4): trim, lower-case, remove spaces and dashes.
    return raw.strip().lower().replace(" ", "").replace("-", "") or None


def _normalize_email(raw: str, region: str | None) -> str | None:
    # normalize_email, inlined: this runs for every event.
    email = raw.strip().lower()
    local, at, domain = email.rpartition("@")
    if not (at and local and domain):
        return None
    return email


NORMALIZERS: dict[str, Callable[[str, str | None], str | None]] = {
    "email": _normalize_email,
    "phone": normalize_phone,
    "external_id": _normalize_external_id,
    "first_name": _normalize_name,
    "last_name": _normalize_name,
    "zip_code": _normalize_zip,
}


def hash_identifier(kind: str, raw: str, region: str | None) -> str | None:
    """Normalise and hash one identifier as TikTok specifies (§6); return None to drop it."""
    normalizer = NORMALIZERS.get(kind)
    if normalizer is None:
        raise ValueError(
            f"unknown identifier kind {kind!r}; expected one of {', '.join(NORMALIZERS)}"
        )
    return hash_with(normalizer, raw, region)


def hash_with(
    normalizer: Callable[[str, str | None], str | None], raw: str, region: str | None
) -> str | None:
    """Hash *raw* normalised by *normalizer*, or pass a SHA-256 through; None to drop it."""
    # §6: 64 hex characters (after trimming) is already a SHA-256 hash, as Segment and Stape
    # detect it; it passes through lower-cased instead of being hashed twice.
    stripped = raw.strip()
    if len(stripped) == 64 and HEX64.fullmatch(stripped):
        return stripped.lower()
    normalized = normalizer(raw, region)
    return None if normalized is None else _sha256(normalized.encode()).hexdigest()


#: HASH_CACHE's bound: the identifiers of a few thousand returning visitors (docs/performance.md).
HASH_CACHE_ENTRIES = 16_384


class HashCache:
    """Remember the hashes of recently seen identifiers, as hash_identifier gives them.

    Keyed by (kind, raw, region); at most *max_entries* entries, the least recently used
    evicted first. The raw values are held in this process's memory only: never written,
    logged or kept past the process.
    """

    def __init__(self, max_entries: int = HASH_CACHE_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.max_entries = max_entries
        #: hash_identifier for a known kind: (kind, raw, region) -> hash or None.
        self.hashed = functools.lru_cache(maxsize=max_entries)(_hash_known)

    def __len__(self) -> int:
        """Return how many entries the cache holds."""
        return self.hashed.cache_info().currsize

    def clear(self) -> None:
        """Forget every entry."""
        self.hashed.cache_clear()


def _hash_known(kind: str, raw: str, region: str | None) -> str | None:
    # hash_with, inlined: the cache calls this for every identifier it has not seen.
    stripped = raw.strip()
    if len(stripped) == 64 and HEX64.fullmatch(stripped):
        return stripped.lower()
    normalized = NORMALIZERS[kind](raw, region)
    return None if normalized is None else _sha256(normalized.encode()).hexdigest()


#: The builder's cache: returning visitors' identifiers are normalised and hashed once.
HASH_CACHE = HashCache()


# --- user fields sent raw but normalised: None means dropped (with the reason the lint shows) ---


def normalize_ip(raw: str) -> str | None:
    """Return *raw* trimmed if it is an IPv4 or IPv6 address (§2.3), else None."""
    try:
        inet_pton(AF_INET6 if ":" in raw else AF_INET, raw)
        return raw
    except OSError:
        pass
    stripped = raw.strip()
    if stripped == raw or not stripped:
        return None
    return normalize_ip(stripped)


def normalize_idfa(raw: str) -> str | None:
    """Trim; a raw IDFA is upper-case, a SHA-256 of one lower-case (§2.3, §6)."""
    idfa = raw.strip()
    if not idfa:
        return None
    return idfa.lower() if len(idfa) == 64 and HEX64.fullmatch(idfa) else idfa.upper()


def normalize_gaid(raw: str) -> str | None:
    """Trim and lower-case, raw or hashed (§2.3, §6)."""
    return raw.strip().lower() or None
