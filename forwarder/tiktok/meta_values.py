"""The forms a Meta user value comes in, for ``forwarder.tiktok.meta_capi``; pure.

Meta takes each user value as a string or a list of strings, raw or already hashed: SHA-256, or
MD5 (which Meta's SDKs pass through), and capi-param-builder appends ``.<appendix>`` to the
hashes it makes (facebook/capi-param-builder ``appendixUtil.js``).
"""

from __future__ import annotations

import re

_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_MD5 = re.compile(r"[0-9a-fA-F]{32}")
# capi-param-builder appends ".<appendix>" to its hashes: a token or 8 base64url characters.
_APPENDIX = re.compile(r"^([0-9a-fA-F]{32}|[0-9a-fA-F]{64})\.(?:A[Qgw]|B[AQg]|[A-Za-z0-9_-]{8})$")


def values(value: object) -> list[str]:
    """The strings of a user value given as a string or a list of strings."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []


def strings(value: object) -> bool:
    """Whether *value* is a string, or a non-empty list of strings only."""
    if isinstance(value, str):
        return True
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)


def unsuffixed(value: str) -> str:
    """A capi-param-builder hash without its appendix; anything else unchanged."""
    match = _APPENDIX.match(value.strip())
    return match.group(1) if match else value


def sha256(value: str) -> bool:
    """Whether *value* is a SHA-256 in hex (surrounding spaces aside)."""
    return _SHA256.fullmatch(value.strip()) is not None


def md5(value: str) -> bool:
    """Whether *value* is an MD5 in hex (surrounding spaces aside), which TikTok cannot use."""
    return _MD5.fullmatch(value.strip()) is not None
