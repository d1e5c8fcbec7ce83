"""Packing events into requests: one route each, capped by count and bytes."""

from __future__ import annotations

import orjson

from forwarder.destination import Batch, Built, Item, Route
from forwarder.tiktok.batching import (
    FIT_SPARE,
    body,
    envelope_size,
    fitting,
    make_batches,
    serialise,
)

WEB = Route("web", "PIXEL1", None)


def _built(i: int, dest: Route = WEB, pad: int = 0) -> Item:
    event = {"event": "Purchase", "event_time": 1, "event_id": f"e{i}", "x": "p" * pad}
    built = Built(
        row_id=i,
        route=dest,
        event=event,
        match_keys=frozenset(),
        warnings=(),
        created_at=0.0,
    )
    return serialise(built)


def test_count_cap() -> None:
    """2,500 events to one pixel make requests of 1,000, 1,000 and 500."""
    batches, oversize = make_batches([_built(i) for i in range(2500)], 1000, 10_000_000)
    assert [len(b.items) for b in batches] == [1000, 1000, 500]
    assert oversize == []


def test_count_cap_never_exceeds_tiktok_limit() -> None:
    """A configured maximum above 1,000 is still held to TikTok's 1,000."""
    batches, _ = make_batches([_built(i) for i in range(1500)], 5000, 10_000_000)
    assert max(len(b.items) for b in batches) == 1000


def test_byte_cap_is_exact() -> None:
    """No request body exceeds the byte cap, and each is as full as the cap allows."""
    built = [_built(i, pad=900) for i in range(100)]
    batches, _ = make_batches(built, 1000, 10_000)
    assert sum(len(b.items) for b in batches) == 100
    for batch in batches:
        assert len(body(batch)) <= 10_000
    first = batches[0]
    grown = Batch(first.route, first.items + batches[1].items[:1])
    assert len(body(grown)) > 10_000


def _room(max_bytes: int) -> float:
    return (max_bytes - envelope_size(WEB)) * (1 - FIT_SPARE)


def test_fitting_fills_a_request_by_bytes_with_room_to_spare() -> None:
    """Events of a known size: as many as fill the byte cap less the spare, one request's worth."""
    built = [_built(i, pad=900) for i in range(10, 100)]  # ids of one width: one size
    size = len(built[0].data) + 1  # with its comma
    assert fitting(built, 1000, 10_000) == int(_room(10_000) / size)
    fitted = built[: fitting(built, 1000, 10_000)]
    assert [len(b.items) for b in make_batches(fitted, 1000, 10_000)[0]] == [len(fitted)]


def test_fitting_leaves_out_events_no_request_carries() -> None:
    """An event too large for any request does not shrink the next claim; it counts as a row."""
    built = [_built(i, pad=900) for i in range(10, 100)]
    size = len(built[0].data) + 1
    assert fitting([*built, _built(7, pad=50_000)], 1000, 10_000) == int(
        _room(10_000) * 91 / 90 / size
    )


def test_fitting_fills_the_busiest_route() -> None:
    """Events split over two pixels: the claim grows until the larger share fills a request."""
    other = Route("web", "PIXEL2", None)
    mixed = [_built(i, WEB if i % 3 else other, pad=900) for i in range(10, 100)]
    size = len(mixed[0].data) + 1
    assert fitting(mixed, 1000, 10_000) == int(_room(10_000) * 90 / (60 * size))


def test_fitting_is_held_to_the_count_cap_and_at_least_one() -> None:
    """Small events fit the count cap; one that fits the cap but not its spare claims one row."""
    assert fitting([_built(i) for i in range(50)], 1000, 10_000_000) == 1000
    assert fitting([_built(1, pad=9_800)], 1000, 10_000) == 1
    assert fitting([], 700, 10_000) == 700


def test_groups_by_destination_and_never_mixes_test_events() -> None:
    """Events to other pixels, sources or test codes go in separate requests."""
    dests = [
        WEB,
        Route("web", "PIXEL2", None),
        Route("app", "PIXEL1", None),
        Route("web", "PIXEL1", "TEST1"),
    ]
    built = [_built(i, dests[i % 4]) for i in range(40)]
    batches, _ = make_batches(built, 1000, 10_000_000)
    assert len(batches) == 4
    for batch in batches:
        assert {item.built.route for item in batch.items} == {batch.route}
        assert len(batch.items) == 10


def test_oversize_event_is_set_aside() -> None:
    """An event larger than a whole request is returned apart, the rest still batched."""
    built = [_built(0), _built(1, pad=20_000), _built(2)]
    batches, oversize = make_batches(built, 1000, 10_000)
    assert [item.built.row_id for item in oversize] == [1]
    assert batches[0].row_ids() == [0, 2]


def test_body_layout() -> None:
    """The body has TikTok's top-level fields and the events in claim order (§2.1)."""
    test_dest = Route("web", "PIXEL1", "TEST9")
    batches, _ = make_batches([_built(1, test_dest), _built(2, test_dest)], 1000, 1_000_000)
    sent = orjson.loads(body(batches[0]))
    assert sent["event_source"] == "web"
    assert sent["event_source_id"] == "PIXEL1"
    assert sent["test_event_code"] == "TEST9"
    assert [e["event_id"] for e in sent["data"]] == ["e1", "e2"]
    assert (
        len(body(batches[0]))
        == envelope_size(test_dest) + sum(len(i.data) for i in batches[0].items) + 1
    )


def test_no_test_code_key_for_real_traffic() -> None:
    """Real traffic carries no test_event_code key at all."""
    batches, _ = make_batches([_built(1)], 1000, 1_000_000)
    assert "test_event_code" not in orjson.loads(body(batches[0]))
