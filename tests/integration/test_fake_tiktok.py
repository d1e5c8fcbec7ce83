"""Tests of the fake TikTok Events API server, over real loopback HTTP."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp
import orjson
import pytest

from forwarder.fake_tiktok import FakeTikTok, Scripted
from forwarder.tiktok.spec import TRACK_PATH
from tests.support.harness import TOKEN
from tests.support.track import HASHED, body, event, post
from tests.support.waiting import wait_until

# -- validation --------------------------------------------------------------------------------


async def test_valid_request_is_accepted_and_recorded(
    fake: FakeTikTok, session: aiohttp.ClientSession
) -> None:
    """A valid request answers code 0 "OK" and records each event with the top-level fields."""
    status, answer = await post(
        session, fake.url, body(event("a"), event("b"), test_event_code="TEST1")
    )
    assert status == 200
    assert answer["code"] == 0
    assert answer["message"] == "OK"
    assert answer["data"] == {}
    assert answer["request_id"]
    assert fake.requests == 1
    assert fake.answers[0] == 1
    assert fake.accepted_ids() == [("PIXEL1", "Purchase", "a"), ("PIXEL1", "Purchase", "b")]
    recorded = fake.accepted[0]
    assert recorded["event_source"] == "web"
    assert recorded["event_source_id"] == "PIXEL1"
    assert recorded["test_event_code"] == "TEST1"
    assert recorded["user"]["email"] == [HASHED]


async def test_request_ids_are_unique(fake: FakeTikTok, session: aiohttp.ClientSession) -> None:
    """Every answer carries a different request_id."""
    ids = {(await post(session, fake.url, body(event(str(n)))))[1]["request_id"] for n in range(5)}
    assert len(ids) == 5


async def test_missing_token_is_40104(fake: FakeTikTok, session: aiohttp.ClientSession) -> None:
    """A request without an Access-Token header is answered 40104 with HTTP 200."""
    status, answer = await post(session, fake.url, body(event()), token=None)
    assert (status, answer["code"], answer["message"]) == (200, 40104, "Access token is null")
    status, answer = await post(session, fake.url, body(event()), token="")
    assert answer["code"] == 40104
    assert fake.accepted == []


async def test_wrong_token_is_40105(fake: FakeTikTok, session: aiohttp.ClientSession) -> None:
    """A token different from the expected one is answered 40105 and nothing is accepted."""
    status, answer = await post(session, fake.url, body(event()), token="other")
    assert status == 200
    assert answer["code"] == 40105
    assert answer["message"] == "Access token is incorrect or has been revoked."
    assert fake.accepted == []


async def test_bearer_prefix_is_40105(fake: FakeTikTok, session: aiohttp.ClientSession) -> None:
    """The token with a Bearer prefix is a wrong token (40105)."""
    _, answer = await post(session, fake.url, body(event()), token=f"Bearer {TOKEN}")
    assert answer["code"] == 40105


async def test_token_change_at_runtime(fake: FakeTikTok, session: aiohttp.ClientSession) -> None:
    """Changing fake.token revokes the old token until the client uses the new one."""
    fake.token = "rotated"
    assert (await post(session, fake.url, body(event())))[1]["code"] == 40105
    assert (await post(session, fake.url, body(event()), token="rotated"))[1]["code"] == 0


async def test_unhashed_email_is_40062_with_index(
    fake: FakeTikTok, session: aiohttp.ClientSession
) -> None:
    """A plain-text email in event 1 is answered 40062 naming data.1.user.email."""
    bad = event("b", user={"email": ["alice@example.com"]})
    _, answer = await post(session, fake.url, body(event("a"), bad))
    assert answer["code"] == 40062
    assert answer["message"] == "data.1.user.email: PII not hashed"
    assert fake.accepted == []


async def test_hashed_pii_must_be_lowercase_hex(
    fake: FakeTikTok, session: aiohttp.ClientSession
) -> None:
    """Upper-case hex is rejected, a single hashed string is accepted (§2.3)."""
    upper = event("a", user={"phone": [HASHED.upper()]})
    _, answer = await post(session, fake.url, body(upper))
    assert (answer["code"], answer["message"]) == (40062, "data.0.user.phone: PII not hashed")
    single = event("b", user={"external_id": HASHED})
    assert (await post(session, fake.url, body(single)))[1]["code"] == 0


async def test_numeric_content_id_is_40002_with_index(
    fake: FakeTikTok, session: aiohttp.ClientSession
) -> None:
    """A numeric content_id is answered 40002 with its full path, as TikTok does (§4)."""
    bad = event("c", properties={"contents": [{"content_id": "x"}, {"content_id": 1077218}]})
    _, answer = await post(session, fake.url, body(event("a"), event("b"), bad))
    assert answer["code"] == 40002
    assert answer["message"] == "data.2.properties.contents.1.content_id: Not a valid string"
    assert fake.accepted == []


@pytest.mark.parametrize(
    ("bad_event", "message"),
    [
        ({"event": ""}, "data.0.event: Not a valid string"),
        ({"event_time": "1760000000"}, "data.0.event_time: Not a valid integer"),
        ({"event_time": 1.5}, "data.0.event_time: Not a valid integer"),
        ({"event_id": 5}, "data.0.event_id: Not a valid string"),
        ({"user": []}, "data.0.user: Not a valid object"),
        ({"user": {"ttclid": 1}}, "data.0.user.ttclid: Not a valid string"),
        ({"user": {"email": [1]}}, "data.0.user.email: Not a valid string"),
        ({"properties": {"value": "46"}}, "data.0.properties.value: Not a valid number"),
        ({"page": {"url": 3}}, "data.0.page.url: Not a valid string"),
        ({"limited_data_use": "no"}, "data.0.limited_data_use: Not a valid boolean"),
        ({"properties": {"currency": "usd"}}, "data.0.properties.currency: Unsupported currency."),
        (
            {"properties": {"content_type": "products"}},
            "data.0.properties.content_type: Not a valid choice",
        ),
        (
            {"properties": {"contents": [{"price": "8"}]}},
            "data.0.properties.contents.0.price: Not a valid number",
        ),
        (
            {"properties": {"contents": [{"quantity": 1.5}]}},
            "data.0.properties.contents.0.quantity: Not a valid integer",
        ),
        ({"properties": {"order_id": 7}}, "data.0.properties.order_id: Not a valid string"),
        ({"app": {"app_id": 343200656}}, "data.0.app.app_id: Not a valid string"),
        ({"lead": {"lead_id": 7131234567890123458}}, "data.0.lead.lead_id: Not a valid string"),
    ],
)
async def test_per_event_errors_name_the_index(
    fake: FakeTikTok, session: aiohttp.ClientSession, bad_event: dict[str, Any], message: str
) -> None:
    """Each per-event schema error is 40002 with a message starting with data.<i>."""
    _, answer = await post(session, fake.url, body(event(**bad_event)))
    assert (answer["code"], answer["message"]) == (40002, message)


async def test_bad_event_source_and_id_messages(
    fake: FakeTikTok, session: aiohttp.ClientSession
) -> None:
    """A bad event_source or event_source_id gets TikTok's observed 40002 messages (§4)."""
    _, answer = await post(session, fake.url, body(event(), event_source="pixel"))
    assert answer["code"] == 40002
    assert answer["message"] == "Invalid value for event_source: must be web, app or offline."
    no_id = body(event())
    del no_id["event_source_id"]
    no_id["pixel_code"] = "PIXEL1"
    _, answer = await post(session, fake.url, no_id)
    assert answer["code"] == 40002
    assert answer["message"] == "Invalid value for event_source_id: not a valid string."
    _, answer = await post(session, fake.url, body(event(), event_source_id=""))
    assert answer["message"] == "Invalid value for event_source_id: not a valid string."
    crm = event(lead={"lead_id": "7131234567890123458"})
    _, answer = await post(session, fake.url, body(crm, event_source="crm"))
    assert answer["code"] == 0


@pytest.mark.parametrize(
    ("source", "bad_event", "message"),
    [
        ("app", {}, "data.0.app: Not a valid object"),
        (
            "app",
            {"app": {"app_name": "Shop"}},
            "data.0.app.app_id: Missing data for required field.",
        ),
        ("crm", {"lead": {}}, "data.0.lead.lead_id: Missing data for required field."),
        (
            "offline",
            {"event": "GiftCardRedeemed"},
            "data.0.event: offline events must be standard events",
        ),
    ],
)
async def test_per_source_requirements_are_40002(
    fake: FakeTikTok,
    session: aiohttp.ClientSession,
    source: str,
    bad_event: dict[str, Any],
    message: str,
) -> None:
    """An app event needs app.app_id, a crm one lead.lead_id, an offline one a standard name."""
    _, answer = await post(session, fake.url, body(event(**bad_event), event_source=source))
    assert (answer["code"], answer["message"]) == (40002, message)


async def test_bad_top_level_shapes_are_40002(
    fake: FakeTikTok, session: aiohttp.ClientSession
) -> None:
    """Non-JSON, non-object, bad test_event_code, non-list or empty data all answer 40002."""
    for raw in (b"{not json", b"[1, 2]"):
        status, answer = await post(session, fake.url, None, raw=raw)
        assert (status, answer["code"]) == (200, 40002)
    for payload in (
        body(event(), test_event_code=123),
        body(event(), test_event_code=None),
        {**body(), "data": {"event": "Purchase"}},
        body(),
    ):
        assert (await post(session, fake.url, payload))[1]["code"] == 40002
    assert fake.accepted == []
    assert fake.answers[40002] == 6


async def test_1001_events_is_40061(fake: FakeTikTok, session: aiohttp.ClientSession) -> None:
    """More than 1,000 events rejects the whole request with 40061 naming the limit (§3.1)."""
    _, answer = await post(session, fake.url, body(*(event(str(n)) for n in range(1001))))
    assert answer["code"] == 40061
    assert "1000" in answer["message"]
    assert fake.accepted == []
    _, answer = await post(session, fake.url, body(*(event(str(n)) for n in range(1000))))
    assert answer["code"] == 0
    assert len(fake.accepted) == 1000


async def test_poison_names_the_index_and_rejects_the_whole_request(
    fake: FakeTikTok, session: aiohttp.ClientSession
) -> None:
    """A poisoned event_id is 40002 naming its index, and no event of that request is kept."""
    fake.poison.add("bad")
    _, answer = await post(session, fake.url, body(event("ok-1"), event("ok-2"), event("bad")))
    assert answer["code"] == 40002
    assert answer["message"] == "data.2.event_id: rejected by the fake (poison)"
    assert fake.accepted == []


async def test_poison_without_index(fake: FakeTikTok, session: aiohttp.ClientSession) -> None:
    """With poison_names_index False the 40002 message carries no index at all."""
    fake.poison.add("bad")
    fake.poison_names_index = False
    _, answer = await post(session, fake.url, body(event("ok-1"), event("bad"), event("ok-2")))
    assert answer["code"] == 40002
    assert answer["message"] == "Invalid value: rejected by the fake (poison)"
    assert not any(ch.isdigit() for ch in answer["message"])
    assert fake.accepted == []
    _, answer = await post(session, fake.url, body(event("ok-1"), event("ok-2")))
    assert answer["code"] == 0
    assert fake.accepted_ids() == [("PIXEL1", "Purchase", "ok-1"), ("PIXEL1", "Purchase", "ok-2")]


async def test_duplicates_are_kept_and_counted(
    fake: FakeTikTok, session: aiohttp.ClientSession
) -> None:
    """Resending an event records it twice; stats count it as a duplicate (§4, §7.1)."""
    for _ in range(2):
        await post(session, fake.url, body(event("same")))
    assert fake.accepted_ids() == [("PIXEL1", "Purchase", "same")] * 2
    stats = fake.stats()
    assert (stats["accepted"], stats["unique_accepted"], stats["duplicates"]) == (2, 1, 1)


# -- scripted answers --------------------------------------------------------------------------


async def test_scripted_code(fake: FakeTikTok, session: aiohttp.ClientSession) -> None:
    """A scripted code is answered instead of validating, then normal behaviour resumes."""
    fake.script(Scripted(code=50000, message="System error"))
    status, answer = await post(session, fake.url, body(event()))
    assert (status, answer["code"], answer["message"]) == (200, 50000, "System error")
    assert answer["request_id"]
    assert fake.accepted == []
    assert (await post(session, fake.url, body(event())))[1]["code"] == 0
    assert fake.answers == {50000: 1, 0: 1}


async def test_scripted_http_status_with_html_body(
    fake: FakeTikTok, session: aiohttp.ClientSession
) -> None:
    """A scripted HTTP 502 with an HTML body is sent as is and counted under -1."""
    page = b"<html><body>502 Bad Gateway</body></html>"
    fake.script(Scripted(http_status=502, body=page))
    async with session.post(
        fake.url + TRACK_PATH, data=orjson.dumps(body(event())), headers={"Access-Token": TOKEN}
    ) as response:
        assert response.status == 502
        assert response.content_type == "text/html"
        assert await response.read() == page
    assert fake.answers == {-1: 1}
    assert fake.accepted == []


async def test_scripted_http_status_without_body_is_a_gateway_error(
    fake: FakeTikTok, session: aiohttp.ClientSession
) -> None:
    """A scripted non-200 status without code or body answers an HTML error and accepts nothing."""
    fake.script(Scripted(http_status=503))
    async with session.post(
        fake.url + TRACK_PATH, data=orjson.dumps(body(event())), headers={"Access-Token": TOKEN}
    ) as response:
        assert response.status == 503
        assert b"503" in await response.read()
    assert fake.accepted == []
    assert fake.answers == {-1: 1}


async def test_scripted_retry_after(fake: FakeTikTok, session: aiohttp.ClientSession) -> None:
    """A scripted Retry-After is sent as a header with the scripted status and code."""
    fake.script(
        Scripted(code=40100, message="Too many requests.", http_status=429, retry_after="3")
    )
    async with session.post(
        fake.url + TRACK_PATH, data=orjson.dumps(body(event())), headers={"Access-Token": TOKEN}
    ) as response:
        assert response.status == 429
        assert response.headers["Retry-After"] == "3"
        assert orjson.loads(await response.read())["code"] == 40100


async def test_scripted_delay_beats_client_timeout_but_is_accepted(
    fake: FakeTikTok, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """A delay longer than the client timeout times the client out; the fake still accepts it."""
    caplog.set_level(logging.DEBUG, logger="aiohttp")
    fake.script(Scripted(delay_s=0.5))
    with pytest.raises(TimeoutError):
        await post(session, fake.url, body(event("late")), timeout_s=0.1)
    await wait_until(lambda: fake.accepted_ids() == [("PIXEL1", "Purchase", "late")], 5)
    assert fake.answers == {0: 1}
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_scripted_delay_within_client_timeout(
    fake: FakeTikTok, session: aiohttp.ClientSession
) -> None:
    """A delay shorter than the client timeout only slows the normal answer."""
    fake.script(Scripted(delay_s=0.05))
    started = time.monotonic()
    _, answer = await post(session, fake.url, body(event()))
    assert answer["code"] == 0
    assert time.monotonic() - started >= 0.05


async def test_latency_applies_to_every_answer(
    fake: FakeTikTok, session: aiohttp.ClientSession
) -> None:
    """latency_s delays each answer and can be changed at runtime."""
    fake.latency_s = 0.05
    started = time.monotonic()
    await post(session, fake.url, body(event()))
    assert time.monotonic() - started >= 0.05


async def test_scripted_drop_disconnects(
    fake: FakeTikTok, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """A dropped answer closes the connection: aiohttp raises a disconnect and logs nothing."""
    caplog.set_level(logging.DEBUG, logger="aiohttp")
    fake.script(Scripted(drop=True))
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await post(session, fake.url, body(event()))
    assert fake.accepted == []
    assert fake.answers == {-1: 1}
    assert fake.requests == 1
    assert (await post(session, fake.url, body(event())))[1]["code"] == 0
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_scripted_empty_body(fake: FakeTikTok, session: aiohttp.ClientSession) -> None:
    """A scripted empty body is answered as HTTP 200 with zero bytes."""
    fake.script(Scripted(body=b""))
    async with session.post(
        fake.url + TRACK_PATH, data=orjson.dumps(body(event())), headers={"Access-Token": TOKEN}
    ) as response:
        assert response.status == 200
        assert await response.read() == b""
    assert fake.accepted == []


async def test_scripted_times_two(fake: FakeTikTok, session: aiohttp.ClientSession) -> None:
    """times=2 answers the next two requests, then the queue moves on in FIFO order."""
    fake.script(Scripted(code=40100, times=2), Scripted(code=50002))
    codes = [(await post(session, fake.url, body(event())))[1]["code"] for _ in range(4)]
    assert codes == [40100, 40100, 50002, 0]
    assert fake.answers == {40100: 2, 50002: 1, 0: 1}


async def test_scripted_forever_until_cleared(
    fake: FakeTikTok, session: aiohttp.ClientSession
) -> None:
    """A forever answer is given to every request, whatever times says, until clear_script()."""
    fake.script(Scripted(code=49999, message="new", forever=True), Scripted(code=50000))
    codes = [(await post(session, fake.url, body(event())))[1]["code"] for _ in range(5)]
    assert codes == [49999] * 5
    fake.clear_script()
    assert (await post(session, fake.url, body(event())))[1]["code"] == 0
    assert fake.answers == {49999: 5, 0: 1}


async def test_poison_with_another_code(fake: FakeTikTok, session: aiohttp.ClientSession) -> None:
    """poison_code sets the code a request carrying a poisoned event gets; others pass."""
    fake.poison.add("bad")
    fake.poison_code = 47777
    _, answer = await post(session, fake.url, body(event("ok-1"), event("bad")))
    assert (answer["code"], answer["message"]) == (
        47777,
        "data.1.event_id: rejected by the fake (poison)",
    )
    assert (await post(session, fake.url, body(event("ok-1"))))[1]["code"] == 0
    fake.reset()
    assert fake.poison_code == 40002


async def test_scripted_times_must_be_positive(fake: FakeTikTok) -> None:
    """Scripting an answer for zero requests is refused."""
    with pytest.raises(ValueError, match="times"):
        fake.script(Scripted(times=0))


async def test_reset_clears_state(fake: FakeTikTok, session: aiohttp.ClientSession) -> None:
    """reset() clears accepted events, counters, scripts and poison."""
    await post(session, fake.url, body(event()))
    fake.script(Scripted(code=50000))
    fake.poison.add("e-1")
    fake.poison_names_index = False
    fake.reset()
    assert (fake.accepted, fake.requests, fake.answers, fake.poison) == ([], 0, {}, set())
    assert fake.poison_names_index is True
    assert (await post(session, fake.url, body(event())))[1]["code"] == 0


# -- control endpoints -------------------------------------------------------------------------


async def control(
    session: aiohttp.ClientSession, url: str, path: str, payload: Any = None
) -> tuple[int, Any]:
    """Call a /_fake/ control endpoint: POST with a JSON payload, or GET without one."""
    timeout = aiohttp.ClientTimeout(total=10)
    if payload is None and path in ("/_fake/stats", "/_fake/accepted"):
        request = session.get(url + path, timeout=timeout)
    else:
        request = session.post(url + path, data=orjson.dumps(payload), timeout=timeout)
    async with request as response:
        return response.status, orjson.loads(await response.read())


async def test_control_endpoints(fake: FakeTikTok, session: aiohttp.ClientSession) -> None:
    """The /_fake/ endpoints script, poison, rotate the token, set latency, report and reset."""
    url = fake.url
    status, _ = await control(
        session,
        url,
        "/_fake/script",
        [{"code": 40100, "message": "slow down", "retry_after": "1"}, {"body": "<html>x</html>"}],
    )
    assert status == 200
    async with session.post(
        url + TRACK_PATH, data=orjson.dumps(body(event())), headers={"Access-Token": TOKEN}
    ) as response:
        assert response.headers["Retry-After"] == "1"
        answer = orjson.loads(await response.read())
        assert (answer["code"], answer["message"]) == (40100, "slow down")
    async with session.post(url + TRACK_PATH, data=b"{}", headers={"Access-Token": TOKEN}) as r:
        assert await r.read() == b"<html>x</html>"

    poison = {"event_ids": ["p"], "names_index": False}
    assert (await control(session, url, "/_fake/poison", poison))[0] == 200
    assert fake.poison == {"p"}
    assert fake.poison_names_index is False
    _, answer = await post(session, url, body(event("p")))
    assert answer["message"] == "Invalid value: rejected by the fake (poison)"

    assert (await control(session, url, "/_fake/token", {"token": "T2"}))[0] == 200
    assert (await post(session, url, body(event("a"))))[1]["code"] == 40105
    assert (await post(session, url, body(event("a")), token="T2"))[1]["code"] == 0
    assert (await post(session, url, body(event("a")), token="T2"))[1]["code"] == 0

    assert (await control(session, url, "/_fake/latency", {"latency_s": 0.01}))[0] == 200
    assert fake.latency_s == 0.01

    _, stats = await control(session, url, "/_fake/stats")
    assert stats == {
        "requests": 6,
        "accepted": 2,
        "unique_accepted": 1,
        "duplicates": 1,
        "answers": {"-1": 1, "0": 2, "40002": 1, "40100": 1, "40105": 1},
    }
    _, accepted = await control(session, url, "/_fake/accepted")
    assert [e["event_id"] for e in accepted] == ["a", "a"]
    assert accepted[0]["event_source_id"] == "PIXEL1"

    status, reply = await control(session, url, "/_fake/poison", {"code": 47777})
    assert (status, reply["code"], fake.poison_code) == (200, 47777, 47777)
    assert (await control(session, url, "/_fake/poison", {"code": "x"}))[0] == 400
    status, _ = await control(session, url, "/_fake/script", [{"code": 49999, "forever": True}])
    assert status == 200
    for _ in range(2):
        assert (await post(session, url, body(event("q"))))[1]["code"] == 49999
    assert (await control(session, url, "/_fake/script/clear", {}))[0] == 200
    assert (await post(session, url, body(event("q")), token="T2"))[1]["code"] == 0

    assert (await control(session, url, "/_fake/reset", {}))[0] == 200
    _, stats = await control(session, url, "/_fake/stats")
    assert stats["requests"] == 0
    assert stats["answers"] == {}
    assert fake.poison == set()


async def test_control_endpoints_reject_bad_bodies(
    fake: FakeTikTok, session: aiohttp.ClientSession
) -> None:
    """Malformed control requests answer HTTP 400 and change nothing."""
    for path, payload in (
        ("/_fake/script", {"code": 1}),
        ("/_fake/script", [{"nope": 1}]),
        ("/_fake/script", [{"times": 0}]),
        ("/_fake/script", [{"drop": "yes"}]),
        ("/_fake/poison", {"event_ids": "p"}),
        ("/_fake/token", {"token": 5}),
        ("/_fake/latency", {"latency_s": -1}),
    ):
        status, answer = await control(session, fake.url, path, payload)
        assert status == 400, path
        assert "error" in answer
    assert fake.stats()["requests"] == 0
    assert (await post(session, fake.url, body(event())))[1]["code"] == 0


# -- lifecycle and command line ----------------------------------------------------------------


async def test_url_and_lifecycle() -> None:
    """url needs a started server; stop is idempotent and the port is picked when 0."""
    server = FakeTikTok()
    with pytest.raises(RuntimeError):
        _ = server.url
    await server.start()
    try:
        assert server.url.startswith("http://127.0.0.1:")
        assert not server.url.endswith(":0")
    finally:
        await server.stop()
        await server.stop()


async def test_stop_ends_pending_delays(session: aiohttp.ClientSession) -> None:
    """Stopping the fake cuts a pending scripted delay short and the client sees a disconnect."""
    server = FakeTikTok(token=TOKEN)
    await server.start()
    server.script(Scripted(delay_s=60))
    request = asyncio.create_task(post(session, server.url, body(event())))
    try:
        await wait_until(lambda: server.requests == 1, 5)
    finally:
        started = time.monotonic()
        await server.stop()
    assert time.monotonic() - started < 5
    with pytest.raises(aiohttp.ClientError):
        await asyncio.wait_for(request, timeout=5)
    assert server.accepted == []
