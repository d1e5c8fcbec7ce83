"""The TikTok client at its HTTP edge, with aioresponses standing in for the network.

The request's shape over real loopback HTTP is in tests/integration/test_tiktok.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aioresponses import aioresponses

from forwarder.errors import TransportError
from forwarder.tiktok.client import TikTokClient
from forwarder.tiktok.spec import TRACK_PATH

API = "https://business-api.tiktok.com"
TOKEN = "secret-token-value"


@pytest.fixture
async def client() -> AsyncIterator[TikTokClient]:
    """A client on a real aiohttp session."""
    async with aiohttp.ClientSession() as session:
        yield TikTokClient(session, API + "/", TOKEN, timeout_s=2.0)


async def test_timeout_is_a_transport_error(client: TikTokClient) -> None:
    """A timeout becomes TransportError(kind='timeout') whose message names no secret."""
    with aioresponses() as mocked:
        mocked.post(API + TRACK_PATH, exception=TimeoutError())
        with pytest.raises(TransportError) as caught:
            await client.send(b"{}")
    assert caught.value.kind == "timeout"
    assert TOKEN not in str(caught.value)


async def test_connection_error_is_a_transport_error(client: TikTokClient) -> None:
    """A refused or reset connection becomes TransportError(kind='connection')."""
    with aioresponses() as mocked:
        mocked.post(API + TRACK_PATH, exception=aiohttp.ClientConnectionError("reset by peer"))
        with pytest.raises(TransportError) as caught:
            await client.send(b"{}")
    assert caught.value.kind == "connection"
    assert TOKEN not in str(caught.value) and TOKEN not in repr(caught.value)
