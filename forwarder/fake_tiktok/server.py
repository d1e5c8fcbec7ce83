"""A fake TikTok Events API 2.0 server for tests, benchmarks and ``make demo``.

It answers ``POST /open_api/v1.3/event/track/`` the way tiktok-events-api.md describes TikTok's
endpoint (§1 authentication, §2 request schema, §3.1 batch limit, §4 response envelope, §5 codes),
records what it accepts, and can be scripted to misbehave (error codes, HTTP errors, garbage
bodies, delays, dropped connections). It runs in-process (``async with FakeTikTok() as fake``) or
as a separate process (``python -m forwarder.fake_tiktok``), driven then through ``/_fake/*``
control endpoints. It only ever listens on loopback.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import ipaddress
import itertools
import re
import time
import uuid
from dataclasses import dataclass
from http import HTTPStatus
from types import TracebackType
from typing import Any, Final, TypeGuard

import orjson
from aiohttp import web

from forwarder.tiktok.spec import (
    CONTENT_TYPES,
    CURRENCIES,
    EVENT_SOURCES,
    MAX_EVENTS,
    OFFLINE_EVENTS,
    TRACK_PATH,
)
from forwarder.tiktok.spec import HASHED_LIST_KEYS as HASHED_USER_FIELDS

#: tiktok-events-api.md §2.3: user fields sent raw, which must still be strings.
PLAIN_USER_FIELDS: Final = ("ttclid", "ttp", "ip", "user_agent")
#: Body code under which dropped connections and raw (non-JSON-envelope) answers are counted.
NO_CODE: Final = -1

# tiktok-events-api.md §5.1 return codes used by the validator.
_OK: Final = 0
_PERMISSION_ERROR: Final = 40001
_PARAM_ERROR: Final = 40002
_INVALID_BATCH_SIZE: Final = 40061
_PII_NOT_HASHED: Final = 40062
_EMPTY_ACCESS_TOKEN: Final = 40104
_INVALID_ACCESS_TOKEN: Final = 40105

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_MAX_BODY_BYTES: Final = (
    64 * 1024 * 1024
)  # §3.2: TikTok's limit is unknown; never be the bottleneck
_SHUTDOWN_TIMEOUT_S: Final = 2.0
_LOOPBACK_NAMES: Final = {"localhost": "127.0.0.1"}


@dataclass
class Scripted:
    """One scripted answer, consumed by the next ``times`` track requests."""

    code: int | None = None  # body code to answer (with message); None = behave normally
    message: str = ""
    http_status: int = 200
    body: bytes | None = None  # raw body instead of the JSON envelope
    delay_s: float = 0.0  # wait before answering (to provoke client timeouts)
    drop: bool = False  # close the connection without answering
    retry_after: str | None = None  # value of the Retry-After header
    location: str | None = None  # a redirect: Location header, with a 3xx http_status
    times: int = 1  # how many requests this answer applies to
    forever: bool = False  # answer every request so, ignoring times, until clear_script()


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
        self.poison_code = _PARAM_ERROR  # the code a request carrying a poisoned event gets
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
        app.router.add_post("/_fake/script", self._handle_script)
        app.router.add_post("/_fake/script/clear", self._handle_clear_script)
        app.router.add_post("/_fake/poison", self._handle_poison)
        app.router.add_post("/_fake/refuse", self._handle_refuse)
        app.router.add_post("/_fake/token", self._handle_token)
        app.router.add_post("/_fake/latency", self._handle_latency)
        app.router.add_post("/_fake/reset", self._handle_reset)
        app.router.add_get("/_fake/stats", self._handle_stats)
        app.router.add_get("/_fake/accepted", self._handle_accepted)
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
        self.poison_code = _PARAM_ERROR
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
        if answer.location is not None:
            # A redirect, as a proxy or a moved endpoint would answer: nothing reaches TikTok.
            self.answers[NO_CODE] += 1
            headers["Location"] = answer.location
            return web.Response(status=answer.http_status, headers=headers)
        if answer.body is not None:
            self.answers[NO_CODE] += 1
            content_type = "text/html" if answer.body.lstrip()[:1] == b"<" else "application/json"
            headers["Content-Type"] = content_type
            return web.Response(status=answer.http_status, body=answer.body, headers=headers)
        if answer.code is not None:
            self.answers[answer.code] += 1
            return _envelope(
                answer.http_status, answer.code, answer.message, self._next_id(), headers
            )
        if answer.http_status != HTTPStatus.OK:
            # A gateway error (§1: these still surface as HTTP 5xx): nothing reaches TikTok.
            self.answers[NO_CODE] += 1
            phrase = _reason(answer.http_status)
            page = f"<html><body><h1>{answer.http_status} {phrase}</h1></body></html>"
            headers["Content-Type"] = "text/html"
            return web.Response(status=answer.http_status, body=page.encode(), headers=headers)
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
        # §1: the token goes bare in Access-Token; `Bearer <token>` is simply a wrong token.
        if not access_token:
            return _EMPTY_ACCESS_TOKEN, "Access token is null"
        if access_token != self.token or access_token.startswith("Bearer "):
            return _INVALID_ACCESS_TOKEN, "Access token is incorrect or has been revoked."
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return _PARAM_ERROR, "Invalid request body: not valid JSON."
        if not isinstance(payload, dict):
            return _PARAM_ERROR, "Invalid request body: must be a JSON object."
        error = self._refusal(payload) or _validate(
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
        return _OK, "OK"

    def _refusal(self, payload: dict[str, Any]) -> tuple[int, str] | None:
        """The answer for a pixel the token may not operate, or an unknown test code."""
        pixel = payload.get("event_source_id")
        if isinstance(pixel, str) and pixel in self.refused_pixels:
            # §5.1: the observed 40001 message (S4 mock).
            return _PERMISSION_ERROR, (
                f"No permission to operate pixel code: {pixel}. "
                "You must be an admin or operator of this advertiser account."
            )
        code = payload.get("test_event_code")
        if isinstance(code, str) and code in self.refused_test_codes:
            return _PARAM_ERROR, "Invalid value for test_event_code: not a valid test event code."
        return None

    async def _sleep(self, seconds: float) -> bool:
        """Sleep *seconds*; return False at once if the server is stopping."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
        return not self._stopping.is_set()

    def _next_id(self) -> str:
        return f"{self._request_id_prefix}{next(self._request_ids):08d}"

    # -- control endpoints (for a fake in another process) -------------------------------------

    async def _handle_script(self, request: web.Request) -> web.Response:
        items = await _control_body(request)
        if not isinstance(items, list):
            raise _bad("body must be a list of Scripted objects")
        try:
            answers = [_scripted_from_json(item) for item in items]
            self.script(*answers)
        except ValueError as error:
            raise _bad(str(error)) from None
        return _json({"queued": len(self._script)})

    async def _handle_clear_script(self, request: web.Request) -> web.Response:
        _check_loopback(request)
        self.clear_script()
        return _json({"queued": 0})

    async def _handle_poison(self, request: web.Request) -> web.Response:
        body = await _control_body(request)
        if not isinstance(body, dict) or set(body) - {"event_ids", "names_index", "code"}:
            raise _bad('body must be {"event_ids": [...], "names_index": bool, "code": int}')
        event_ids = body.get("event_ids", [])
        if not isinstance(event_ids, list) or not all(isinstance(e, str) for e in event_ids):
            raise _bad("event_ids must be a list of strings")
        names_index = body.get("names_index", self.poison_names_index)
        if not isinstance(names_index, bool):
            raise _bad("names_index must be a boolean")
        code = body.get("code", self.poison_code)
        if not isinstance(code, int) or isinstance(code, bool):
            raise _bad("code must be an integer")
        self.poison.update(event_ids)
        self.poison_names_index = names_index
        self.poison_code = code
        return _json(
            {"poison": len(self.poison), "names_index": names_index, "code": self.poison_code}
        )

    async def _handle_refuse(self, request: web.Request) -> web.Response:
        body = await _control_body(request)
        if not isinstance(body, dict) or set(body) - {"pixels", "test_event_codes"}:
            raise _bad('body must be {"pixels": [...], "test_event_codes": [...]}')
        for key, refused in (
            ("pixels", self.refused_pixels),
            ("test_event_codes", self.refused_test_codes),
        ):
            values = body.get(key)
            if values is None:
                continue
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise _bad(f"{key} must be a list of strings")
            refused.clear()
            refused.update(values)
        pixels, codes = sorted(self.refused_pixels), sorted(self.refused_test_codes)
        return _json({"pixels": pixels, "test_event_codes": codes})

    async def _handle_token(self, request: web.Request) -> web.Response:
        body = await _control_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("token"), str):
            raise _bad('body must be {"token": "..."}')
        self.token = body["token"]
        return _json({"ok": True})

    async def _handle_latency(self, request: web.Request) -> web.Response:
        body = await _control_body(request)
        latency = body.get("latency_s") if isinstance(body, dict) else None
        if not _is_number(latency) or latency < 0:
            raise _bad('body must be {"latency_s": <number >= 0>}')
        self.latency_s = float(latency)
        return _json({"latency_s": self.latency_s})

    async def _handle_reset(self, request: web.Request) -> web.Response:
        _check_loopback(request)
        self.reset()
        return _json({"ok": True})

    async def _handle_stats(self, request: web.Request) -> web.Response:
        _check_loopback(request)
        return _json(self.stats())

    async def _handle_accepted(self, request: web.Request) -> web.Response:
        _check_loopback(request)
        return _json(self.accepted)


# -- validation (tiktok-events-api.md §2, §3.1, §4) ---------------------------------------------


def _validate(
    payload: dict[str, Any], poison: set[str], names_index: bool, poison_code: int = _PARAM_ERROR
) -> tuple[int, str] | None:
    """Return the (code, message) TikTok would answer for a bad request body, else None."""
    source = payload.get("event_source")
    if source not in EVENT_SOURCES:
        # §2.1/§4 (S12): TikTok's wording omits crm although crm is accepted.
        return _PARAM_ERROR, "Invalid value for event_source: must be web, app or offline."
    source_id = payload.get("event_source_id")
    if not isinstance(source_id, str) or not source_id:
        return _PARAM_ERROR, "Invalid value for event_source_id: not a valid string."  # §4 (S13)
    if "test_event_code" in payload and not isinstance(payload["test_event_code"], str):
        return _PARAM_ERROR, "Invalid value for test_event_code: not a valid string."  # §7.2
    data = payload.get("data")
    if not isinstance(data, list):
        return _PARAM_ERROR, "Invalid value for data: not a valid list."
    if not data:
        return _PARAM_ERROR, "Invalid value for data: must contain at least 1 event."
    if len(data) > MAX_EVENTS:
        return (  # §3.1: the whole request is rejected; 40061 per the SDK enum (§5.1)
            _INVALID_BATCH_SIZE,
            f"Invalid value for data: at most {MAX_EVENTS} events per request, got {len(data)}.",
        )
    for index, event in enumerate(data):
        error = _validate_event(index, event, source)
        if error is not None:
            return error
        if poison and event.get("event_id") in poison:
            if names_index:
                return poison_code, f"data.{index}.event_id: rejected by the fake (poison)"
            return poison_code, "Invalid value: rejected by the fake (poison)"
    return None


def _validate_event(i: int, event: Any, source: str) -> tuple[int, str] | None:
    """Check one ``data[i]`` entry (§2.2-§2.4); messages name the path like §4's examples."""
    if not isinstance(event, dict):
        return _not_valid(f"data.{i}", "object")
    name = event.get("event")
    if not isinstance(name, str) or not name:
        return _not_valid(f"data.{i}.event", "string")
    if source == "offline" and name not in OFFLINE_EVENTS:
        # §2.2 (S1): an offline event set takes standard events only.
        return _PARAM_ERROR, f"data.{i}.event: offline events must be standard events"
    event_time = event.get("event_time")
    if not isinstance(event_time, int) or isinstance(event_time, bool):
        return _not_valid(f"data.{i}.event_time", "integer")  # §2.2: Unix seconds, an int
    if "event_id" in event and not isinstance(event["event_id"], str):
        return _not_valid(f"data.{i}.event_id", "string")
    if "user" in event:
        error = _validate_user(i, event["user"])
        if error is not None:
            return error
    if "properties" in event:
        error = _validate_properties(i, event["properties"])
        if error is not None:
            return error
    for key, required in (("page", None), ("app", "app_id"), ("lead", "lead_id")):
        error = _validate_strings(i, event, key, required if source in _NEEDS[key] else None)
        if error is not None:
            return error
    if "limited_data_use" in event and not isinstance(event["limited_data_use"], bool):
        return _not_valid(f"data.{i}.limited_data_use", "boolean")  # §7.3
    return None


#: §2.2 (S1): the objects an event_source requires, by the key each must hold.
_NEEDS: Final = {"page": frozenset[str](), "app": frozenset({"app"}), "lead": frozenset({"crm"})}
#: §2.2 (S1): the string fields of page, app and lead.
_STRING_FIELDS: Final = {
    "page": ("url", "referrer"),
    "app": ("app_id", "app_name", "app_version"),
    "lead": ("lead_id", "lead_event_source"),
}


def _validate_strings(
    i: int, event: dict[str, Any], key: str, required: str | None
) -> tuple[int, str] | None:
    """Check ``data[i].<key>``, an object of strings, holding *required* when it is not None."""
    obj = event.get(key)
    if obj is None and required is None:
        return None
    if not isinstance(obj, dict):
        return _not_valid(f"data.{i}.{key}", "object")
    for name in _STRING_FIELDS[key]:
        if name in obj and not isinstance(obj[name], str):
            return _not_valid(f"data.{i}.{key}.{name}", "string")
    if required is not None and not (isinstance(obj.get(required), str) and obj[required]):
        return _PARAM_ERROR, f"data.{i}.{key}.{required}: Missing data for required field."
    return None


def _validate_user(i: int, user: Any) -> tuple[int, str] | None:
    """Check ``data[i].user`` (§2.3): hashed PII as 64 lower-case hex, raw fields as strings."""
    if not isinstance(user, dict):
        return _not_valid(f"data.{i}.user", "object")
    for field in HASHED_USER_FIELDS:
        if field not in user:
            continue
        values = user[field]
        if isinstance(values, str):
            values = (values,)  # §2.3: a single string is accepted too
        elif not isinstance(values, list):
            return _not_valid(f"data.{i}.user.{field}", "list")
        for value in values:
            if not isinstance(value, str):
                return _not_valid(f"data.{i}.user.{field}", "string")
            if _SHA256_HEX.fullmatch(value) is None:
                return _PII_NOT_HASHED, f"data.{i}.user.{field}: PII not hashed"  # §5.1, §6
    for field in PLAIN_USER_FIELDS:
        if field in user and not isinstance(user[field], str):
            return _not_valid(f"data.{i}.user.{field}", "string")
    return None


def _validate_properties(i: int, properties: Any) -> tuple[int, str] | None:
    """Check ``data[i].properties`` (§2.4): string content ids and a numeric value."""
    if not isinstance(properties, dict):
        return _not_valid(f"data.{i}.properties", "object")
    if "value" in properties and not _is_number(properties["value"]):
        return _not_valid(f"data.{i}.properties.value", "number")
    if "currency" in properties and properties["currency"] not in CURRENCIES:
        return _PARAM_ERROR, f"data.{i}.properties.currency: Unsupported currency."  # §2.4
    if "content_type" in properties and properties["content_type"] not in CONTENT_TYPES:
        return _not_valid(f"data.{i}.properties.content_type", "choice")  # §2.4
    for key in ("order_id", "shop_id", "search_string", "description"):
        if key in properties and not isinstance(properties[key], str):
            return _not_valid(f"data.{i}.properties.{key}", "string")
    if "num_items" in properties and not _is_integer(properties["num_items"]):
        return _not_valid(f"data.{i}.properties.num_items", "integer")
    ids = properties.get("content_ids", [])
    if not isinstance(ids, list) or not all(isinstance(item, str) for item in ids):
        return _not_valid(f"data.{i}.properties.content_ids", "list of strings")
    if "contents" in properties:
        contents = properties["contents"]
        if not isinstance(contents, list):
            return _not_valid(f"data.{i}.properties.contents", "list")
        for j, item in enumerate(contents):
            if not isinstance(item, dict):
                return _not_valid(f"data.{i}.properties.contents.{j}", "object")
            if "content_id" in item and not isinstance(item["content_id"], str):
                # §2.4/§4 (S4): "...contents.0.content_id: Not a valid string"
                return _not_valid(f"data.{i}.properties.contents.{j}.content_id", "string")
            if "price" in item and not _is_number(item["price"]):
                return _not_valid(f"data.{i}.properties.contents.{j}.price", "number")
            if "quantity" in item and not _is_integer(item["quantity"]):
                return _not_valid(f"data.{i}.properties.contents.{j}.quantity", "integer")
    return None


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


def _not_valid(path: str, kind: str) -> tuple[int, str]:
    return _PARAM_ERROR, f"{path}: Not a valid {kind}"


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_integer(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


# -- HTTP helpers -------------------------------------------------------------------------------


def _envelope(
    http_status: int, code: int, message: str, request_id: str, headers: dict[str, str]
) -> web.Response:
    """§4: the response envelope ``{"code", "message", "request_id", "data"}``."""
    body = orjson.dumps({"code": code, "message": message, "request_id": request_id, "data": {}})
    return web.Response(
        status=http_status, body=body, headers=headers, content_type="application/json"
    )


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


_SCRIPTED_TYPES: Final[dict[str, tuple[type, ...]]] = {
    "code": (int, type(None)),
    "message": (str,),
    "http_status": (int,),
    "body": (str, type(None)),
    "delay_s": (int, float),
    "drop": (bool,),
    "retry_after": (str, type(None)),
    "location": (str, type(None)),
    "times": (int,),
    "forever": (bool,),
}


def _scripted_from_json(item: Any) -> Scripted:
    """Build a Scripted from its JSON form; ``body`` is a string sent UTF-8 encoded."""
    if not isinstance(item, dict):
        raise ValueError("each scripted answer must be an object")
    unknown = set(item) - set(_SCRIPTED_TYPES)
    if unknown:
        raise ValueError(f"unknown Scripted fields: {sorted(unknown)}")
    for key, value in item.items():
        allowed = _SCRIPTED_TYPES[key]
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            raise ValueError(f"Scripted.{key} has the wrong type")
    fields = dict(item)
    if isinstance(fields.get("body"), str):
        fields["body"] = fields["body"].encode()
    return Scripted(**fields)
