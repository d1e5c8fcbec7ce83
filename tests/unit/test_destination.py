"""The Destination protocol: TikTok's implementation, without a network.

The worker driving another platform through it is in tests/integration/test_destination.py.
"""

from __future__ import annotations

import orjson

from forwarder.destination import OVERSIZE, Item, Refused, Route
from forwarder.errors import TransportError
from forwarder.events import OutboxRow
from forwarder.outcome import ApiResponse, Verdict
from forwarder.tiktok.build import BuildOptions
from forwarder.tiktok.destination import TikTok

NOW = 1_760_000_000.0
OPTIONS = BuildOptions(
    default_pixel="PIXEL",
    phone_region=None,
    consent_default="granted",
    max_age_s=7 * 86400,
    test_event_code="TEST1",
)


class Answers:
    """A sender that records each body and answers from a list (or raises what it holds)."""

    def __init__(self, *answers: ApiResponse | Exception) -> None:
        self.answers = list(answers)
        self.bodies: list[bytes] = []

    async def send(self, body: bytes) -> ApiResponse:
        """Record *body*; answer with the next answer."""
        self.bodies.append(body)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def row(i: int, payload: str = '{"user": {"email": "A@B.example"}}') -> OutboxRow:
    """A claimed row as the store gives it."""
    return OutboxRow(i, f"e{i}", "Purchase", int(NOW) - 60, payload, None, None, None, 0, NOW)


def test_tiktok_builds_an_item_whose_bytes_are_its_event() -> None:
    """build() serialises the event once: the bytes sent are exactly the built event."""
    tiktok = TikTok(Answers(), OPTIONS)
    item = tiktok.build(row(1), NOW)
    assert isinstance(item, Item)
    assert orjson.loads(item.data) == item.built.event
    assert item.built.route == Route("web", "PIXEL", "TEST1")


def test_tiktok_refuses_a_broken_row_with_its_reason() -> None:
    """A row TikTok would refuse comes back as Refused naming the field, not as an item."""
    refused = TikTok(Answers(), OPTIONS).build(row(2, payload="[1, 2]"), NOW)
    assert isinstance(refused, Refused)
    assert refused.reason.startswith("[malformed/")


def test_tiktok_refuses_what_no_request_can_carry() -> None:
    """An event larger than FORWARDER_BATCH_MAX_BYTES is refused as oversize; the rest batch."""
    tiktok = TikTok(Answers(), OPTIONS, max_bytes=2_000)
    big = '{"properties": {"description": "' + "x" * 3_000 + '"}}'
    items = [tiktok.build(row(1), NOW), tiktok.build(row(2, big), NOW)]
    assert all(isinstance(item, Item) for item in items)
    batches, refused = tiktok.batches([i for i in items if isinstance(i, Item)])
    assert [b.row_ids() for b in batches] == [[1]]
    assert [(r.row_id, r.code) for r in refused] == [(2, OVERSIZE)]
    assert "FORWARDER_BATCH_MAX_BYTES=2000" in refused[0].reason


async def test_tiktok_send_reads_the_code_not_the_status() -> None:
    """An HTTP 200 carrying TikTok's rate-limit code is a throttle, sent as TikTok's envelope."""
    sender = Answers(ApiResponse(200, b'{"code": 40100, "message": "too many"}', None))
    tiktok = TikTok(sender, OPTIONS, clock=lambda: NOW)
    item = tiktok.build(row(1), NOW)
    assert isinstance(item, Item)
    batches, _ = tiktok.batches([item])
    outcome = await tiktok.send(batches[0])
    assert outcome.verdict is Verdict.THROTTLE
    sent = orjson.loads(sender.bodies[0])
    assert (sent["event_source_id"], sent["test_event_code"]) == ("PIXEL", "TEST1")
    assert [event["event_id"] for event in sent["data"]] == ["e1"]


async def test_tiktok_send_turns_no_answer_into_a_retry() -> None:
    """A timeout does not escape send(): it is an outcome the worker retries."""
    tiktok = TikTok(Answers(TransportError("timeout", "no answer in 5 s")), OPTIONS)
    item = tiktok.build(row(1), NOW)
    assert isinstance(item, Item)
    outcome = await tiktok.send(tiktok.batches([item])[0][0])
    assert (outcome.verdict, outcome.code) == (Verdict.RETRY, "timeout")
