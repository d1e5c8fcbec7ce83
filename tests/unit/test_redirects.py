"""A redirect's target is named by its origin only: never its path, query, userinfo or the token."""

from __future__ import annotations

import pytest

from forwarder.outcome import ApiResponse, Verdict
from forwarder.tiktok.classify import classify
from forwarder.tiktok.client import TikTokClient
from tests.support.harness import TOKEN


@pytest.mark.parametrize(
    "location, named",
    [
        ("/elsewhere?a=b", "FAKE"),
        ("https://user:pw@[::1]:8443/p", "https://[::1]:8443"),
        (f"http://{TOKEN}.evil.example/", "http://***.evil.example"),
        (None, "no Location header"),
        ("http://[::1/", "an unreadable Location header"),
    ],
)
def test_redirect_target_is_named_by_its_origin_only(location: str | None, named: str) -> None:
    """A relative target is the API's own origin; userinfo, path, query and the token never show."""
    client = TikTokClient(None, "http://127.0.0.1:9", TOKEN, 1.0)  # type: ignore[arg-type]
    expected = "http://127.0.0.1:9" if named == "FAKE" else named
    assert client.origin(location) == expected
    outcome = classify(ApiResponse(307, b"", None, client.origin(location)), 0.0)
    assert outcome.verdict is Verdict.PAUSE and TOKEN not in outcome.message
