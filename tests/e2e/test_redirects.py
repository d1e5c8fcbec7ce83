"""A redirect is never followed: the token and the events never reach another origin."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from forwarder.fake_tiktok import FakeTikTok, Scripted
from forwarder.outcome import ApiResponse, Verdict
from forwarder.tiktok.classify import classify
from forwarder.tiktok.client import TikTokClient
from forwarder.tiktok.spec import TRACK_PATH

from .conftest import insert
from .helpers import purchase, query, statuses, wait_until
from .test_db_faults import events, spawn, stop
from .test_e2e import TOKEN, daemon_env, migrated
from .test_systemd import free_port


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


@pytest.fixture
async def fake() -> AsyncIterator[FakeTikTok]:
    """The fake TikTok on a free loopback port."""
    async with FakeTikTok(token=TOKEN) as server:
        yield server


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    """The other origin a redirect points to."""
    async with Recorder() as server:
        yield server


async def readyz(port: int) -> tuple[int, dict[str, Any]]:
    """GET /readyz from the daemon: its status and JSON body."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/readyz") as response,
    ):
        return response.status, orjson.loads(await response.read())


@pytest.mark.parametrize("status", [302, 307, 308])
async def test_client_never_follows_a_redirect(
    fake: FakeTikTok, recorder: Recorder, status: int
) -> None:
    """The client returns a 3xx as the answer, naming only the target's origin."""
    target = f"{recorder.url}{TRACK_PATH}?token={TOKEN}&x=1"
    fake.script(Scripted(http_status=status, location=target))
    async with aiohttp.ClientSession() as session:
        client = TikTokClient(session, fake.url, TOKEN, 2.0)
        answer = await client.send(b'{"event_source": "web"}')
    assert recorder.requests == []
    assert (answer.status, answer.location) == (status, recorder.url)
    outcome = classify(answer, 0.0)
    assert (outcome.verdict, outcome.code) == (Verdict.PAUSE, f"http_{status}")
    assert recorder.url in outcome.message
    assert TRACK_PATH not in outcome.message and TOKEN not in outcome.message


@pytest.mark.parametrize(
    "location, named",
    [
        ("/elsewhere?a=b", "FAKE"),
        ("https://user:pw@[::1]:8443/p", "https://[::1]:8443"),
        ("http://e2e-token.evil.example/", "http://***.evil.example"),
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


@pytest.mark.parametrize("status", [302, 307])
async def test_daemon_pauses_on_a_redirect_and_sends_nothing_elsewhere(
    db_path: Path, fake: FakeTikTok, recorder: Recorder, tmp_path: Path, status: int
) -> None:
    """A redirect pauses delivery (reason names the target's origin); nothing reaches it."""
    port = free_port()
    env = daemon_env(db_path, fake, FORWARDER_HTTP_ADDR=f"127.0.0.1:{port}")
    await migrated(db_path, env)
    insert(db_path, [purchase(i) for i in range(20)])
    target = f"{recorder.url}{TRACK_PATH}?token={TOKEN}"
    fake.script(Scripted(http_status=status, location=target, times=10_000))
    log = tmp_path / "daemon.log"
    daemon = spawn(env, log)
    try:
        await wait_until(
            lambda: fake.requests >= 3 or bool(recorder.requests), 30, "the daemon probing"
        )
        assert recorder.requests == [], "a request reached the redirect's target"
        ready, body = await readyz(port)
        assert ready == 503
        assert body["reason"].startswith(f"destination paused: http_{status}")
        assert recorder.url in body["reason"] and TRACK_PATH not in body["reason"]
        rows = query(db_path, "SELECT DISTINCT status, attempts, last_code FROM tiktok_outbox")
        assert rows == [("pending", 0, f"http_{status}")]
        # The redirect stops (the proxy is fixed): delivery resumes on the next probe.
        fake.reset()
        await wait_until(lambda: statuses(db_path) == {"sent": 20}, 30, "all 20 sent")
        assert (await readyz(port))[0] == 200
    finally:
        code = await stop(daemon)
    assert code == 0, log.read_text()[-2000:]
    assert recorder.requests == [], "a request reached the redirect's target"
    assert len(fake.accepted_ids()) == 20
    paused = events(log, "destination_paused")
    assert paused and all(recorder.url in str(line["message"]) for line in paused)
    assert TOKEN not in log.read_text()
