"""A fake TikTok Events API 2.0 server for tests, benchmarks and ``make demo``.

It answers ``POST /open_api/v1.3/event/track/`` the way tiktok-events-api.md describes TikTok's
endpoint (§1 authentication, §2 request schema, §3.1 batch limit, §4 response envelope, §5 codes),
records what it accepts, and can be scripted to misbehave (error codes, HTTP errors, garbage
bodies, delays, dropped connections). It runs in-process (``async with FakeTikTok() as fake``) or
as a separate process (``python -m forwarder.fake_tiktok``), driven then through ``/_fake/*``
control endpoints (``control.py``). It validates requests as TikTok does (``validate.py``) and
only ever listens on loopback.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import ipaddress
import itertools
import time
import uuid
from http import HTTPStatus
from types import TracebackType
from typing import Any, Final

import orjson
from aiohttp import web

from forwarder.fake_tiktok.control import Controls
from forwarder.fake_tiktok.script import Scripted
from forwarder.fake_tiktok.validate import OK, PARAM_ERROR, check_token, refusal, validate
from forwarder.tiktok.spec import TRACK_PATH

#: Body code under which dropped connections and raw (non-JSON-envelope) answers are counted.
NO_CODE: Final = -1
_MAX_BODY_BYTES: Final = (
    64 * 1024 * 1024
)  # §3.2: TikTok's limit is unknown; never be the bottleneck
_SHUTDOWN_TIMEOUT_S: Final = 2.0
_LOOPBACK_NAMES: Final = {"localhost": "127.0.0.1"}


def loopback_host(host: str) -> str:
    """Return *host* as a loopback IP literal, or raise ValueError if it is not loopback."""
    host = _LOOPBACK_NAMES.get(host.strip().lower(), host.strip())
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        address = None
    if address is None or not address.is_loopback:
        raise ValueError(
            f"fake-tiktok only listens on loopback; refusing host {host!r} "
            "(use 127.0.0.1, ::1 or localhost)"
        )
    return str(address)


class FakeTikTok:
    """An in-process fake of TikTok's ``/event/track/`` endpoint over real loopback HTTP."""

    def __init__(
        self,
        *,
        token: str = "test-token",
        latency_s: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
        print_events: bool = False,
    ) -> None:
        self.host = loopback_host(host)
        #: Print one line per accepted request to stdout (for `make try` and `make demo`).
        self.print_events = print_events
        self.port = port
        self.token = token
        self.latency_s = latency_s
        # Accepted request bodies are kept raw and decoded on first read of `accepted`: bytes are
        # invisible to the cyclic GC, whereas millions of live event dicts made every collection
        # crawl and cut throughput several-fold during long benchmark runs.
        self._accepted: list[dict[str, Any]] = []
        self._pending: list[bytes] = []
        self._accepted_count = 0
        self._unique: set[tuple[str, str, str]] = set()
        self._without_id = 0
        self.requests = 0
        self.answers: collections.Counter[int] = collections.Counter()
        self.poison: set[str] = set()
        self.poison_names_index = True
        self.poison_code = PARAM_ERROR  # the code a request carrying a poisoned event gets
        #: Pixels the token may not operate (40001), and test codes TikTok does not know (40002).
        self.refused_pixels: set[str] = set()
        self.refused_test_codes: set[str] = set()
        self._script: collections.deque[Scripted] = collections.deque()
        self._runner: web.AppRunner | None = None
        self._bound_port: int | None = None
        self._stopping = asyncio.Event()
        self._request_ids = itertools.count(1)
        self._request_id_prefix = (
            time.strftime("%Y%m%d%H%M%S", time.gmtime()) + uuid.uuid4().hex[:8]
        )

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind and start serving; port 0 picks a free port."""
        if self._runner is not None:
            raise RuntimeError("FakeTikTok is already started")
        app = web.Application(client_max_size=_MAX_BODY_BYTES)
        app.router.add_post(TRACK_PATH, self._handle_track)
        Controls(self).add_routes(app)
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=_SHUTDOWN_TIMEOUT_S
        )
        await runner.setup()
        self._stopping = asyncio.Event()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._bound_port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        """Stop serving; pending delays end at once. Safe to call twice."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._stopping.set()
        await runner.cleanup()
        self._bound_port = None

    async def __aenter__(self) -> FakeTikTok:
        """Start the server."""
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server."""
        await self.stop()

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:PORT``; clients append TRACK_PATH."""
        if self._bound_port is None:
            raise RuntimeError("FakeTikTok is not started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._bound_port}"

    # -- test controls -------------------------------------------------------------------------

    def script(self, *answers: Scripted) -> None:
        """Append scripted answers to the FIFO queue consumed by the next track requests."""
        for answer in answers:
            if answer.times < 1:
                raise ValueError(f"Scripted.times must be >= 1, got {answer.times}")
            if answer.location is not None and not 300 <= answer.http_status <= 399:
                raise ValueError("Scripted.location needs a 3xx http_status")
        self._script.extend(dataclasses.replace(answer) for answer in answers)

    def clear_script(self) -> None:
        """Drop every scripted answer, a ``forever`` one included: normal behaviour resumes."""
        self._script.clear()

    @property
    def queued(self) -> int:
        """How many scripted answers wait for the next track requests."""
        return len(self._script)

    @property
    def accepted(self) -> list[dict[str, Any]]:
        """Every accepted event as sent plus the request's event_source(_id), test_event_code."""
        if self._pending:
            pending, self._pending = self._pending, []
            for raw in pending:
                self._accepted.extend(_records(orjson.loads(raw)))
        return self._accepted

    def reset(self) -> None:
        """Clear accepted events, counters, scripted answers, poison and refusals."""
        self._accepted = []
        self._pending = []
        self._accepted_count = 0
        self._unique = set()
        self._without_id = 0
        self.requests = 0
        self.answers.clear()
        self._script.clear()
        self.poison.clear()
        self.poison_names_index = True
        self.poison_code = PARAM_ERROR
        self.refused_pixels.clear()
        self.refused_test_codes.clear()

    def accepted_ids(self) -> list[tuple[str, str, str]]:
        """(event_source_id, event, event_id) per accepted event, duplicates kept ("" if no id)."""
        return [
            (event["event_source_id"], event["event"], event.get("event_id") or "")
            for event in self.accepted
        ]

    def stats(self) -> dict[str, Any]:
        """Counters since the last reset(), as served by ``GET /_fake/stats``."""
        # §7.1: TikTok deduplicates on (event_source_id, event, event_id); events without an
        # event_id cannot be deduplicated, so each counts as unique.
        unique = len(self._unique) + self._without_id
        return {
            "requests": self.requests,
            "accepted": self._accepted_count,
            "unique_accepted": unique,
            "duplicates": self._accepted_count - unique,
            "answers": {str(code): count for code, count in sorted(self.answers.items())},
        }

    # -- the track endpoint --------------------------------------------------------------------

    async def _handle_track(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        raw = await request.read()
        if self.latency_s > 0 and not await self._sleep(self.latency_s):
            return _drop(request)
        if self._script:
            answer = self._script[0]
            answer.times -= 1
            if answer.times <= 0 and not answer.forever:
                self._script.popleft()
            return await self._answer_scripted(request, raw, answer)
        return self._answer_normally(request, raw, HTTPStatus.OK, None)

    async def _answer_scripted(
        self, request: web.Request, raw: bytes, answer: Scripted
    ) -> web.StreamResponse:
        if answer.delay_s > 0 and not await self._sleep(answer.delay_s):
            return _drop(request)
        headers = {"Retry-After": answer.retry_after} if answer.retry_after is not None else {}
        if answer.drop:
            self.answers[NO_CODE] += 1
            return _drop(request)
        response = _not_from_tiktok(answer, headers)
        if response is not None:
            self.answers[NO_CODE] += 1
            return response
        if answer.code is not None:
            self.answers[answer.code] += 1
            return _envelope(
                answer.http_status, answer.code, answer.message, self._next_id(), headers
            )
        return self._answer_normally(request, raw, answer.http_status, answer.retry_after)

    def _answer_normally(
        self, request: web.Request, raw: bytes, http_status: int, retry_after: str | None
    ) -> web.Response:
        code, message = self._process(request.headers.get("Access-Token"), raw)
        self.answers[code] += 1
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        return _envelope(http_status, code, message, self._next_id(), headers)

    def _process(self, access_token: str | None, raw: bytes) -> tuple[int, str]:
        """Validate like TikTok and record the events if valid; return (code, message)."""
        error = check_token(access_token, self.token)
        if error is not None:
            return error
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return PARAM_ERROR, "Invalid request body: not valid JSON."
        if not isinstance(payload, dict):
            return PARAM_ERROR, "Invalid request body: must be a JSON object."
        error = refusal(payload, self.refused_pixels, self.refused_test_codes) or validate(
            payload, self.poison, self.poison_names_index, self.poison_code
        )
        if error is not None:
            return error  # §4: failure is whole-request, nothing of it is kept
        self._pending.append(raw)
        source_id = payload["event_source_id"]
        data = payload["data"]
        if self.print_events:
            print(_describe_request(payload), flush=True)
        self._accepted_count += len(data)
        for event in data:
            event_id = event.get("event_id")
            if event_id is None:
                self._without_id += 1
            else:
                self._unique.add((source_id, event["event"], event_id))
        return OK, "OK"

    async def _sleep(self, seconds: float) -> bool:
        """Sleep *seconds*; return False at once if the server is stopping."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
        return not self._stopping.is_set()

    def _next_id(self) -> str:
        return f"{self._request_id_prefix}{next(self._request_ids):08d}"


def _records(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The events of a valid request body, each with the top-level fields copied in."""
    source = payload["event_source"]
    source_id = payload["event_source_id"]
    test_code = payload.get("test_event_code")
    return [
        {
            **event,
            "event_source": source,
            "event_source_id": source_id,
            "test_event_code": test_code,
        }
        for event in payload["data"]
    ]


def _describe_request(payload: dict[str, Any]) -> str:
    """One line saying what a valid request carried: events by name, pixel, match keys."""
    data = payload["data"]
    names = collections.Counter(str(event["event"]) for event in data)
    keys = sorted({key for event in data for key in (event.get("user") or {})})
    what = ", ".join(f"{name} x{count}" for name, count in names.most_common(5))
    if len(data) == 1:
        what = f"{data[0]['event']} {data[0].get('event_id', '')!r}"
    test = f" (test code {payload['test_event_code']})" if payload.get("test_event_code") else ""
    return (
        f"fake-tiktok: accepted {len(data)} event(s) for {payload['event_source']} pixel "
        f"{payload['event_source_id']}{test}: {what}; user fields: {', '.join(keys) or 'none'}"
    )


# -- HTTP helpers -------------------------------------------------------------------------------


def _envelope(
    http_status: int, code: int, message: str, request_id: str, headers: dict[str, str]
) -> web.Response:
    """§4: the response envelope ``{"code", "message", "request_id", "data"}``."""
    body = orjson.dumps({"code": code, "message": message, "request_id": request_id, "data": {}})
    return web.Response(
        status=http_status, body=body, headers=headers, content_type="application/json"
    )


def _not_from_tiktok(answer: Scripted, headers: dict[str, str]) -> web.Response | None:
    """What a proxy or a gateway answers in TikTok's place, or None for TikTok's own answer."""
    if answer.location is not None:
        # A redirect, as a proxy or a moved endpoint would answer: nothing reaches TikTok.
        headers["Location"] = answer.location
        return web.Response(status=answer.http_status, headers=headers)
    if answer.body is not None:
        content_type = "text/html" if answer.body.lstrip()[:1] == b"<" else "application/json"
        headers["Content-Type"] = content_type
        return web.Response(status=answer.http_status, body=answer.body, headers=headers)
    if answer.code is None and answer.http_status != HTTPStatus.OK:
        # A gateway error (§1: these still surface as HTTP 5xx): nothing reaches TikTok.
        phrase = _reason(answer.http_status)
        page = f"<html><body><h1>{answer.http_status} {phrase}</h1></body></html>"
        headers["Content-Type"] = "text/html"
        return web.Response(status=answer.http_status, body=page.encode(), headers=headers)
    return None


def _drop(request: web.Request) -> web.Response:
    """Close the connection unanswered; aiohttp sees a reset client and writes nothing."""
    transport = request.transport
    if transport is not None:
        transport.close()
    # Writing this to the closed transport raises ConnectionError inside aiohttp, which it
    # treats as a client disconnect: no error log, no bytes on the wire.
    return web.Response(status=HTTPStatus.NO_CONTENT)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
