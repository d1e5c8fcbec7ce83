"""Outbox rows shaped like a real shop's (issue 21), for the drain and build benchmarks.

A few thousand visitors, picked with a skewed (Zipf-like) distribution so that most events belong
to a visitor seen before; each visit views products, sometimes adds some to the cart, and
sometimes buys (ViewContent → AddToCart → Purchase). Every event carries what a shop's
server-side integration sends: e-mail (mixed case, stray spaces), phone, external_id, first and
last name, zip_code, city, country, ip, user_agent, the TikTok cookie, and one to three contents.
Phones are written as shops write them, in the issue's proportions 1/2 : 1/3 : 1/5 (15 : 10 : 6):
``+1 213-373-4253``, ``(+1)2133734253`` and the national ``020 7946 0958``, which needs
FORWARDER_PHONE_REGION=GB (``REGION``).

``shop_rows(n)`` returns (event_id, event, payload JSON) tuples; ``plain_rows(n)`` the older,
kinder rows every benchmark used before (``realistic``: one Purchase, a new visitor each, three
phone shapes that need no region or region US), which the other benchmarks still use.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

import orjson

REGION = "GB"  # the phone region the shop's national numbers need
VISITORS = 3000
ZIPF_S = 0.7  # visits per visitor fall as 1/rank^0.7: a tenth of the visitors make half the events
PHONE_SHAPES = ("intl_dashes", "intl_bracketed", "national_gb")
PHONE_WEIGHTS = (15, 10, 6)  # 1/2, 1/3 and 1/5, scaled to whole numbers
AREA_CODES = ("213", "310", "312", "415", "646", "702", "818", "917")
FIRST_NAMES = ("Alice", "bob", "CHARLOTTE", "Dev", "Émile", "Fatima", "george", "Hana", "Ivan")
LAST_NAMES = ("Smith", "o'brien", "GARCÍA", "Nguyen", "Müller", "Kowalski", "Patel", "ito")
GB_PLACES = (("SW1A 1AA", "London"), ("M1 1AE", "Manchester"), ("EH1 1YZ", "Edinburgh"))
US_PLACES = (("90012", "Los Angeles"), ("10001-1234", "New York"), ("60601", "Chicago"))
USER_AGENT = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)
PRODUCTS = 500


def phone(shape: str, rng: random.Random) -> str:
    """One phone number written in *shape*, with random valid digits."""
    if shape == "national_gb":
        return f"020 {rng.choice('37')}{rng.randrange(1000):03d} {rng.randrange(10000):04d}"
    area = rng.choice(AREA_CODES)
    exchange = f"{rng.randint(2, 9)}{rng.randrange(100):02d}"
    line = f"{rng.randrange(10000):04d}"
    if shape == "intl_dashes":
        return f"+1 {area}-{exchange}-{line}"
    return f"(+1){area}{exchange}{line}"


def visitor(k: int, rng: random.Random) -> dict[str, Any]:
    """The identifiers a shop holds for visitor *k*, written as shops write them."""
    shape = rng.choices(PHONE_SHAPES, PHONE_WEIGHTS)[0]
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    zip_code, city = rng.choice(GB_PLACES if shape == "national_gb" else US_PLACES)
    email = f"{first}.{last}{k}@Example.COM"
    return {
        "email": rng.choice((email, f" {email}", f"{email.lower()}  ", email.upper())),
        "phone": phone(shape, rng),
        "external_id": f"cust-{k:06d}",
        "first_name": rng.choice((first, f" {first} ")),
        "last_name": last,
        "zip_code": zip_code,
        "city": city,
        "country": "GB" if shape == "national_gb" else "US",
        "ip": f"198.51.100.{k % 250 + 1}",
        "user_agent": USER_AGENT,
        "ttp": f"2Xw{k:08x}Qp7ttp",
    }


def contents(rng: random.Random, count: int) -> list[dict[str, Any]]:
    """*count* products with their quantity and price."""
    return [
        {
            "content_id": f"sku-{rng.randrange(PRODUCTS):04d}",
            "content_name": "Linen shirt",
            "quantity": rng.randint(1, 2),
            "price": round(rng.uniform(8, 120), 2),
        }
        for _ in range(count)
    ]


Step = tuple[str, dict[str, Any], list[dict[str, Any]]]


def visit(k: int, number: int, user: dict[str, Any], rng: random.Random) -> list[Step]:
    """One visit of visitor *k*: views, then perhaps a cart, then perhaps a purchase."""
    steps = [("ViewContent", contents(rng, 1)) for _ in range(rng.randint(1, 4))]
    if rng.random() < 0.45:
        steps.append(("AddToCart", contents(rng, rng.randint(1, 2))))
        if rng.random() < 0.5:
            steps.append(("Purchase", contents(rng, rng.randint(1, 3))))
    user = {**user, "ttclid": f"E.C.P.{k:x}{number:x}clickid"}  # one click id per visit
    return [(event, user, items) for event, items in steps]


def shop_rows(n: int, seed: int = 21, visitors: int = VISITORS) -> list[tuple[str, str, str]]:
    """*n* rows of a shop's visits: (event_id, event, payload JSON)."""
    rng = random.Random(seed)
    people = [visitor(k, rng) for k in range(visitors)]
    weights = list(itertools.accumulate(1 / (k + 1) ** ZIPF_S for k in range(visitors)))
    rows: list[tuple[str, str, str]] = []
    for number in itertools.count():
        k = rng.choices(range(visitors), cum_weights=weights)[0]
        for event, user, items in visit(k, number, people[k], rng):
            if len(rows) == n:
                return rows
            payload = {
                "user": user,
                "properties": {
                    "currency": "GBP" if user["country"] == "GB" else "USD",
                    "value": round(sum(c["price"] * c["quantity"] for c in items), 2),
                    "content_type": "product",
                    "contents": items,
                },
                "page": {"url": f"https://shop.example/p/{items[0]['content_id']}?v={number}"},
            }
            rows.append((f"{event[:2].lower()}-{len(rows)}", event, orjson.dumps(payload).decode()))
    raise AssertionError("unreachable")


def returning_share(rows: list[tuple[str, str, str]]) -> float:
    """The share of *rows* whose visitor (external_id) was seen in an earlier row."""
    seen: set[str] = set()
    returning = 0
    for _, _, body in rows:
        who = orjson.loads(body)["user"]["external_id"]
        returning += who in seen
        seen.add(who)
    return returning / len(rows)


def realistic(i: int, rng: random.Random) -> tuple[str, str, str]:
    """One Purchase row with raw identifiers in mixed formats."""
    phone = rng.choice(
        [
            f"+1 213 555 {i % 10000:04d}",
            f"(213) 555-{i % 10000:04d}",
            f"+44 20 7946 {i % 10000:04d}",
        ]
    )
    payload = {
        "user": {
            "email": f"  Customer.{i}@Example.COM ",
            "phone": phone,
            "external_id": f"crm-{i}",
            "ip": f"203.0.113.{i % 250}",
            "user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36",
            "ttclid": f"E.C.P.{i:x}abcdef",
            "ttp": f"2Xw{i:x}ttpcookie",
        },
        "properties": {
            "currency": "USD",
            "value": round(rng.uniform(5, 500), 2),
            "content_type": "product",
            "contents": [
                {
                    "content_id": f"sku-{rng.randrange(1000)}",
                    "quantity": rng.randint(1, 3),
                    "price": round(rng.uniform(5, 100), 2),
                }
                for _ in range(rng.randint(1, 3))
            ],
        },
        "page": {"url": f"https://shop.example/checkout/thanks?order={i}"},
    }
    return f"order-{i}", "Purchase", orjson.dumps(payload).decode()


def plain_rows(n: int) -> list[tuple[str, str, str]]:
    """*n* rows of ``realistic``, as the benchmarks made them before bench/rows.py."""
    rng = random.Random(42)
    return [realistic(i, rng) for i in range(n)]
