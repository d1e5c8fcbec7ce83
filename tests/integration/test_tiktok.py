"""The TikTok client's request over real loopback HTTP: its path, headers and body."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from forwarder.tiktok.client import TikTokClient
from forwarder.tiktok.spec import TRACK_PATH
from tests.support.harness import TOKEN


async def test_request_shape() -> None:
    """The body goes to /open_api/v1.3/event/track/ with Access-Token, no Bearer (§1)."""
    # Over real loopback HTTP: aioresponses 0.7.9 cannot build responses for aiohttp 3.14
    # (ClientResponse gained a required stream_writer), so it stands in only for failures.
    seen: list[web.Request] = []
    bodies: list[bytes] = []

    async def track(request: web.Request) -> web.Response:
        seen.append(request)
        bodies.append(await request.read())
        return web.Response(
            body=b"<html>Bad Gateway</html>", status=502, headers={"Retry-After": "3"}
        )

    application = web.Application()
    application.router.add_post(TRACK_PATH, track)
    runner = web.AppRunner(application)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session:
            client = TikTokClient(session, f"http://127.0.0.1:{port}/", TOKEN, timeout_s=2.0)
            answer = await client.send(b'{"data": []}')
    finally:
        await runner.cleanup()
    [request] = seen
    assert request.path == TRACK_PATH
    assert request.headers["Access-Token"] == TOKEN
    assert "Authorization" not in request.headers
    assert request.headers["Content-Type"] == "application/json"
    assert bodies == [b'{"data": []}']
    assert (answer.status, answer.body, answer.retry_after) == (
        502,
        b"<html>Bad Gateway</html>",
        "3",
    )
