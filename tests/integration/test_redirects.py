"""The client never follows a redirect: the token and the events never reach another origin."""

from __future__ import annotations

import aiohttp
import pytest

from forwarder.fake_tiktok import FakeTikTok, Scripted
from forwarder.outcome import Verdict
from forwarder.tiktok.classify import classify
from forwarder.tiktok.client import TikTokClient
from forwarder.tiktok.spec import TRACK_PATH
from tests.support.harness import TOKEN
from tests.support.recorder import Recorder


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
