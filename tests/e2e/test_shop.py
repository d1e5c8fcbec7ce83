"""The example shop in examples/shop: browser Pixel and server event share one event_id."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from forwarder.fake_tiktok import FakeTikTok
from tests.support.daemon import daemon_env, finish, forwarder, migrated
from tests.support.harness import PIXEL
from tests.support.repo import ROOT
from tests.support.rows import query

SHOP = ROOT / "examples" / "shop" / "shop.py"
TTCLID = "E.C.P.shop-click-42"
TTP = "2XwShopBrowser42"
TRACK = re.compile(r"ttq\.track\('Purchase', (\{.*?\}), (\{\"event_id\": .*?\})\);")
HIDDEN_CART = re.compile(r'name="cart_id" value="([0-9a-f]+)"')
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=10)


def load_shop() -> ModuleType:
    """Import examples/shop/shop.py, which is a script, not a package."""
    spec = importlib.util.spec_from_file_location("example_shop", SHOP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
async def shop(db_path: Path, fake: FakeTikTok) -> AsyncIterator[str]:
    """The shop on a migrated outbox file, served on a free loopback port; yields its URL."""
    await migrated(db_path, daemon_env(db_path, fake))
    runner = web.AppRunner(load_shop().make_app(str(db_path), PIXEL))
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def visit_and_buy(
    base: str, consent: str = "granted", quantity: int = 2, from_ad: bool = True
) -> tuple[str, dict[str, object], dict[str, object]]:
    """Land (from an ad: with ttclid, and the Pixel's _ttp), answer the banner, buy twice.

    Returns the thank-you page and the two arguments of its ttq.track call.
    """
    jar = aiohttp.CookieJar(unsafe=True)  # keep cookies for 127.0.0.1
    headers = {"User-Agent": "ShopTest/1.0"}
    async with aiohttp.ClientSession(cookie_jar=jar, timeout=HTTP_TIMEOUT, headers=headers) as http:
        async with http.get(f"{base}/?ttclid={TTCLID}" if from_ad else base) as response:
            assert response.status == 200
            landing = await response.text()
        assert 'action="/consent"' in landing
        if from_ad:
            jar.update_cookies({"_ttp": TTP}, URL(base))  # what the Pixel's script sets
        async with http.post(f"{base}/consent", data={"choice": consent}) as response:
            assert response.status == 200  # after the redirect to the landing page
            landing = await response.text()
        assert 'action="/consent"' not in landing
        match = HIDDEN_CART.search(landing)
        assert match is not None, landing
        form = {
            "cart_id": match.group(1),
            "email": " Buyer@Example.com",
            "phone": "+1 213 373 4253",
            "quantity": str(quantity),
        }
        pages = []
        for _ in range(2):
            async with http.post(f"{base}/checkout", data=form) as response:
                assert response.status == 200
                pages.append(await response.text())
    assert pages[0] == pages[1]
    page = pages[0]
    found = TRACK.search(page)
    if found is None:
        return page, {}, {}
    return page, json.loads(found.group(1)), json.loads(found.group(2))


async def test_browser_and_server_share_event_id(
    db_path: Path, fake: FakeTikTok, shop: str
) -> None:
    """The delivered Purchase has the page's ttq.track event_id, the ad's ttclid and the ttp."""
    page, properties, options = await visit_and_buy(shop)
    assert json.dumps(PIXEL) in page
    event_id = options["event_id"]
    assert isinstance(event_id, str) and event_id.startswith("order-")
    assert query(db_path, "SELECT count(*), ttclid, ttp, total FROM orders") == [
        (1, TTCLID, TTP, 46.0)
    ]
    assert query(db_path, "SELECT event_id, status FROM tiktok_outbox") == [(event_id, "pending")]

    code, _, err = await finish(await forwarder(daemon_env(db_path, fake), "run", "--once"))
    assert code == 0, err
    assert len(fake.accepted) == 1
    event = fake.accepted[0]
    assert (event["event"], event["event_id"], event["event_source_id"]) == (
        "Purchase",
        event_id,
        PIXEL,
    )
    user = event["user"]
    assert (user["ttclid"], user["ttp"]) == (TTCLID, TTP)
    assert (user["ip"], user["user_agent"]) == ("127.0.0.1", "ShopTest/1.0")
    email = user["email"] if isinstance(user["email"], list) else [user["email"]]
    assert email == [hashlib.sha256(b"buyer@example.com").hexdigest()]
    assert event["properties"] == properties  # what the Pixel sends too
    assert properties["value"] == 46.0
    assert event.get("limited_data_use") is not True


async def test_refused_consent_keeps_the_pixel_off_and_strips_identifiers(
    db_path: Path, fake: FakeTikTok, shop: str
) -> None:
    """With consent refused the page loads no Pixel and the event leaves without hashed ids."""
    page, _, options = await visit_and_buy(shop, consent="denied", quantity=1, from_ad=False)
    assert options == {}
    assert "const PIXEL_CODE = null;" in page
    assert query(db_path, "SELECT count(*), ttclid, ttp, total FROM orders") == [
        (1, None, None, 23.0)
    ]
    code, _, err = await finish(await forwarder(daemon_env(db_path, fake), "run", "--once"))
    assert code == 0, err
    [event] = fake.accepted
    assert "email" not in event["user"] and "phone" not in event["user"]
    assert event["limited_data_use"] is True
