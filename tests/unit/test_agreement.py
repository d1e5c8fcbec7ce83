"""Property test: check --payload and the daemon agree on every row, and what is sent is typed.

Rows are generated field by field from forwarder.schema's table, each field right, fixable or
wrong. For every row, the lint reports an error exactly when the daemon's builder refuses the row,
its first error has the builder's reason code and field, and a row the builder accepts is sent
with every field of the type TikTok documents, for the event_source TikTok documents it for. The
last check reads the table's declared types, not the builder's code, and the fake TikTok's own
validator must accept the event too. `make soak` (FORWARDER_SOAK=1) runs ten times the examples.
"""

from __future__ import annotations

import os
from typing import Any

import orjson
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from forwarder.destination import Built
from forwarder.events import OutboxRow
from forwarder.fake_tiktok.validate import validate as _validate
from forwarder.tiktok import checks, schema
from forwarder.tiktok.build import BuildOptions, build
from forwarder.tiktok.lint import ERROR, lint
from forwarder.tiktok.normalise import sha256_hex
from forwarder.tiktok.spec import USER_KEYS
from tests.support.typed import typed_problems

NOW = 1_760_000_000.0
MAX_AGE = 7 * 86400.0
REGION = "US"
OPTIONS = BuildOptions("PIXEL", REGION, "granted", MAX_AGE, None)
SOAK = bool(os.environ.get("FORWARDER_SOAK"))
CODES = {f"malformed/{rule}" for rule in checks.RULES} | {"too_old/age"}

# --- strategies: for each field, right values, values the builder fixes, and wrong ones -------

text = st.text(max_size=12)
# Documents are read from JSON, whose integers orjson holds in 64 bits.
integers = st.integers(-(2**63), 2**63 - 1)
numbers = st.one_of(st.integers(-(10**6), 10**6), st.floats(-1e6, 1e6, allow_nan=False))
wrong = st.one_of(st.none(), st.booleans(), st.lists(integers, max_size=2), st.just({}), integers)


def field(
    right: st.SearchStrategy[Any],
    fixable: st.SearchStrategy[Any] | None = None,
    bad: st.SearchStrategy[Any] = wrong,
) -> st.SearchStrategy[Any]:
    """Mostly *right* values, some the builder fixes, a few wrong ones."""
    fixed = right if fixable is None else fixable
    return st.integers(0, 19).flatmap(lambda n: right if n < 15 else fixed if n < 19 else bad)


def rarely(strategy: st.SearchStrategy[dict[str, Any]], key: str, value: object) -> Any:
    """*strategy*'s objects, one in twenty with *key* set to *value*."""
    return st.tuples(strategy, st.integers(0, 19)).map(
        lambda pair: {**pair[0], key: value} if pair[1] == 7 else pair[0]
    )


ids = field(st.sampled_from(["1077218", "sku-1"]), st.integers(0, 2**63 - 1), st.floats(0, 1e20))
items = field(
    st.fixed_dictionaries(
        {},
        optional={
            "content_id": ids,
            "price": field(numbers, st.sampled_from(["8.50", " 12 "]), st.just("$8")),
            "quantity": field(st.integers(0, 5), st.sampled_from([2.0, "2"]), st.just(1.5)),
            "content_name": field(text),
            "coupon": text,
        },
    ),
    bad=st.one_of(text, wrong),
)
properties = st.fixed_dictionaries(
    {},
    optional={
        "value": field(numbers, st.sampled_from(["23.00", " 46 "]), st.sampled_from(["12,50", ""])),
        "currency": field(st.just("USD"), st.sampled_from(["usd", " eur "]), st.just("XXX")),
        "content_type": field(st.just("product"), st.just(" Product "), st.just("products")),
        "contents": field(st.lists(items, max_size=3)),
        "content_ids": field(st.lists(ids, max_size=2), bad=text),
        "num_items": field(st.just(3), st.sampled_from([3.0, "3"]), st.just(2.5)),
        "order_id": ids,
        "description": field(text),
        "custom": st.one_of(text, numbers, wrong),
    },
)
users = rarely(
    st.fixed_dictionaries(
        {},
        optional={
            "email": field(
                st.sampled_from([" Alice@Example.com ", sha256_hex("a@b.co"), "not-an-address"]),
                st.lists(st.sampled_from(["b@example.com", "", "x"]), max_size=2),
            ),
            "phone": field(st.sampled_from(["+1 213 555 0101", "(213) 555-0101", "12"])),
            "external_id": field(st.one_of(text, st.lists(text, max_size=2))),
            "ttclid": field(text),
            "ttp": field(text),
            "ip": field(
                st.sampled_from(["203.0.113.9", "2001:db8::1"]),
                st.sampled_from([" 203.0.113.69 ", "unknown", ""]),
            ),
            "user_agent": field(text),
            "idfa": field(st.sampled_from(["6d92078a-8246-4ba4-ae5b-76104861e7dc", "AB" * 32])),
            "gaid": field(st.just("38400000-8CF0-11BD-B23E-10B96E40000D"), st.just(" ")),
            "att_status": field(st.just("AUTHORIZED"), st.just("denied"), st.just("DENY")),
            "city": field(text),
        },
    ),
    "full_name",
    "Alice",
)
payloads = rarely(
    st.fixed_dictionaries(
        {},
        optional={
            "user": field(users),
            "properties": field(properties),
            "page": field(
                st.fixed_dictionaries({}, optional={"url": field(text, bad=st.just(42))})
            ),
            "app": st.fixed_dictionaries({"app_id": ids}, optional={"app_name": field(text)}),
            "ad": st.fixed_dictionaries(
                {}, optional={"callback": text, "is_retargeting": field(st.booleans(), bad=text)}
            ),
            "lead": st.fixed_dictionaries({"lead_id": ids}),
            "limited_data_use": field(st.booleans(), bad=st.just("yes")),
            "consent": field(
                st.sampled_from([{"ad_user_data": "denied"}, {"ad_personalization": "denied"}]),
                bad=st.just({"other": "x"}),
            ),
        },
    ),
    "custom_data",
    {"a": 1},
)
rows = st.fixed_dictionaries(
    {
        "event_id": field(st.just("order-1"), st.just(" order-1 "), st.one_of(st.just(" "), wrong)),
        "event": field(
            st.sampled_from(["Purchase", "CompletePayment", "Lead"]),
            st.sampled_from(["purchase", "LaunchAPP", "GiftCardRedeemed"]),
            st.sampled_from(["", 1]),
        ),
        "payload": field(
            payloads,
            payloads.map(lambda body: orjson.dumps(body).decode()),
            st.sampled_from(["{broken", "[1]", ""]),
        ),
    },
    optional={
        "event_source": field(
            st.sampled_from(["web", "app", "offline", "crm"]),
            st.sampled_from(["", None]),
            st.sampled_from(["fax", 1]),
        ),
        "event_time": field(
            st.integers(int(NOW) - 6 * 86400, int(NOW)),
            st.one_of(
                st.floats(NOW - 86400, NOW, allow_nan=False),
                st.sampled_from([int(NOW) * 1000, int(NOW) + 3600, None]),
            ),
            st.one_of(st.sampled_from(["yesterday", True]), st.just(int(NOW) - 40 * 86400)),
        ),
        "pixel_code": field(st.just("C4ABC"), st.sampled_from(["", None]), st.just(7)),
        "test_event_code": field(st.just("TEST1"), st.sampled_from(["", None])),
    },
)


def daemon_row(document: dict[str, Any]) -> OutboxRow:
    """The row as `forwarder enqueue` writes it and the daemon claims it."""
    payload = document["payload"]
    return OutboxRow(
        id=1,
        event_id=document["event_id"],
        event=document["event"],
        event_time=document.get("event_time"),
        payload=payload if isinstance(payload, str) else orjson.dumps(payload).decode(),
        pixel_code=document.get("pixel_code", ""),
        event_source=document.get("event_source", "web"),
        test_event_code=document.get("test_event_code", ""),
        attempts=0,
        created_at=NOW - 5,
    )


def lint_name(field: str) -> str:
    """A builder field in the lint's naming (see lint._lint_field)."""
    name = field.removeprefix("payload.")
    if field.startswith("payload.") and "." not in name and name not in schema.BY_PATH:
        return field  # an unknown payload key keeps its "payload." prefix
    return name


# --- what TikTok documents, read from the table ------------------------------------------------


@settings(
    max_examples=3000 if SOAK else 300,
    deadline=None,
    derandomize=not SOAK,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(rows)
def test_lint_errors_exactly_when_the_daemon_refuses(document: dict[str, Any]) -> None:
    """An error from check --payload iff the builder refuses, same code; else typed fields."""
    errors = [
        f
        for f in lint(document, now=NOW, phone_region=REGION, max_age_s=MAX_AGE)
        if f.level == ERROR
    ]
    result = build(daemon_row(document), OPTIONS, NOW)
    assert {f.code for f in errors} <= CODES
    event("sent" if isinstance(result, Built) else f"refused: {result.reason_code}")
    if isinstance(result, Built):
        assert errors == []
        source = result.route.event_source
        assert typed_problems(result.event, source) == []
        assert type(result.event["event_time"]) is int
        body = {"event_source": source, "event_source_id": "PIXEL", "data": [result.event]}
        assert _validate(body, set(), names_index=True) is None
        assert set(result.event.get("user", {})) <= set(USER_KEYS)
    else:
        assert errors, result
        assert (errors[0].code, errors[0].field) == (result.reason_code, lint_name(result.field))
        assert result.reason.startswith(f"[{result.reason_code}] ")
