"""A token is rotated without a restart: the client sends the new token from the next request.

SIGHUP reading the token file again, with the daemon as a process, is in tests/e2e/test_reload.py.
"""

from __future__ import annotations

import aiohttp

from forwarder.fake_tiktok import FakeTikTok
from forwarder.tiktok.client import TikTokClient
from tests.support.harness import TOKEN


async def test_set_token_changes_the_header_of_the_next_request(fake: FakeTikTok) -> None:
    """set_token says whether the token changed; the next request carries the new one."""
    async with aiohttp.ClientSession() as session:
        client = TikTokClient(session, fake.url, "old", 2.0)
        body = b'{"event_source":"web","event_source_id":"P","data":[{"event":"x","event_time":1}]}'
        assert (await client.send(body)).body.startswith(b'{"code":40105')
        assert client.set_token(TOKEN) is True
        assert client.set_token(TOKEN) is False
        assert (await client.send(body)).body.startswith(b'{"code":0')
