"""The fake's ``/_fake/*`` control endpoints: a fake in another process (``python -m
forwarder.fake_tiktok``: ``make try``, ``make demo``, the benchmarks) is scripted, poisoned, reset
and read through them, from loopback only.
"""

from __future__ import annotations

import ipaddress
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from forwarder.fake_tiktok.script import scripted_from_json
from forwarder.fake_tiktok.validate import is_number

if TYPE_CHECKING:
    from forwarder.fake_tiktok.server import FakeTikTok


class Controls:
    """The control endpoints of one FakeTikTok."""

    def __init__(self, fake: FakeTikTok) -> None:
        self._fake = fake

    def add_routes(self, app: web.Application) -> None:
        """Serve the control endpoints on *app*."""
        app.router.add_post("/_fake/script", self._handle_script)
        app.router.add_post("/_fake/script/clear", self._handle_clear_script)
        app.router.add_post("/_fake/poison", self._handle_poison)
        app.router.add_post("/_fake/refuse", self._handle_refuse)
        app.router.add_post("/_fake/token", self._handle_token)
        app.router.add_post("/_fake/latency", self._handle_latency)
        app.router.add_post("/_fake/reset", self._handle_reset)
        app.router.add_get("/_fake/stats", self._handle_stats)
        app.router.add_get("/_fake/accepted", self._handle_accepted)

    async def _handle_script(self, request: web.Request) -> web.Response:
        items = await _control_body(request)
        if not isinstance(items, list):
            raise _bad("body must be a list of Scripted objects")
        try:
            answers = [scripted_from_json(item) for item in items]
            self._fake.script(*answers)
        except ValueError as error:
            raise _bad(str(error)) from None
        return _json({"queued": self._fake.queued})

    async def _handle_clear_script(self, request: web.Request) -> web.Response:
        _check_loopback(request)
        self._fake.clear_script()
        return _json({"queued": 0})

    async def _handle_poison(self, request: web.Request) -> web.Response:
        fake = self._fake
        body = await _control_body(request)
        if not isinstance(body, dict) or set(body) - {"event_ids", "names_index", "code"}:
            raise _bad('body must be {"event_ids": [...], "names_index": bool, "code": int}')
        event_ids = body.get("event_ids", [])
        if not isinstance(event_ids, list) or not all(isinstance(e, str) for e in event_ids):
            raise _bad("event_ids must be a list of strings")
        names_index = body.get("names_index", fake.poison_names_index)
        if not isinstance(names_index, bool):
            raise _bad("names_index must be a boolean")
        code = body.get("code", fake.poison_code)
        if not isinstance(code, int) or isinstance(code, bool):
            raise _bad("code must be an integer")
        fake.poison.update(event_ids)
        fake.poison_names_index = names_index
        fake.poison_code = code
        return _json({"poison": len(fake.poison), "names_index": names_index, "code": code})

    async def _handle_refuse(self, request: web.Request) -> web.Response:
        fake = self._fake
        body = await _control_body(request)
        if not isinstance(body, dict) or set(body) - {"pixels", "test_event_codes"}:
            raise _bad('body must be {"pixels": [...], "test_event_codes": [...]}')
        for key, refused in (
            ("pixels", fake.refused_pixels),
            ("test_event_codes", fake.refused_test_codes),
        ):
            values = body.get(key)
            if values is None:
                continue
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise _bad(f"{key} must be a list of strings")
            refused.clear()
            refused.update(values)
        pixels, codes = sorted(fake.refused_pixels), sorted(fake.refused_test_codes)
        return _json({"pixels": pixels, "test_event_codes": codes})

    async def _handle_token(self, request: web.Request) -> web.Response:
        body = await _control_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("token"), str):
            raise _bad('body must be {"token": "..."}')
        self._fake.token = body["token"]
        return _json({"ok": True})

    async def _handle_latency(self, request: web.Request) -> web.Response:
        body = await _control_body(request)
        latency = body.get("latency_s") if isinstance(body, dict) else None
        if not is_number(latency) or latency < 0:
            raise _bad('body must be {"latency_s": <number >= 0>}')
        self._fake.latency_s = float(latency)
        return _json({"latency_s": self._fake.latency_s})

    async def _handle_reset(self, request: web.Request) -> web.Response:
        _check_loopback(request)
        self._fake.reset()
        return _json({"ok": True})

    async def _handle_stats(self, request: web.Request) -> web.Response:
        _check_loopback(request)
        return _json(self._fake.stats())

    async def _handle_accepted(self, request: web.Request) -> web.Response:
        _check_loopback(request)
        return _json(self._fake.accepted)


def _json(value: Any, status: int = HTTPStatus.OK) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(value), content_type="application/json")


def _bad(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(
        text=orjson.dumps({"error": message}).decode(), content_type="application/json"
    )


def _check_loopback(request: web.Request) -> None:
    """Control endpoints answer loopback peers only (the server binds loopback anyway)."""
    remote = request.remote
    try:
        allowed = remote is not None and ipaddress.ip_address(remote).is_loopback
    except ValueError:
        allowed = False
    if not allowed:
        raise web.HTTPForbidden(text="control endpoints are loopback-only")


async def _control_body(request: web.Request) -> Any:
    _check_loopback(request)
    raw = await request.read()
    if not raw:
        return {}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _bad("body is not valid JSON") from None
