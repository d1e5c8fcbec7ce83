"""Another origin on loopback, to prove that nothing the daemon sends reaches it."""

from __future__ import annotations

from typing import Any

from aiohttp import web


class Recorder:
    """Another origin on loopback (another port): it records every request that reaches it."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _record(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append(
            {"method": request.method, "path": request.path_qs, "headers": dict(request.headers)}
        )
        self.requests[-1]["body_bytes"] = len(body)
        # Answer as TikTok would: a client that followed the redirect would mark rows sent.
        return web.json_response({"code": 0, "message": "OK", "request_id": "r", "data": {}})

    async def __aenter__(self) -> Recorder:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._record)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()
