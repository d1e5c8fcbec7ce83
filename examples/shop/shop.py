"""A tiny shop whose browser Pixel and server events deduplicate (aiohttp, sqlite3).

The landing page keeps the ad click id (``?ttclid=...``) in a first-party cookie; the TikTok Pixel
sets the ``_ttp`` cookie. ``POST /checkout`` writes the order and its outbox row in one SQLite
transaction, and the thank-you page calls ``ttq.track('Purchase', ..., {event_id})`` with the
row's event_id: TikTok receives the purchase twice (browser and forwarder) and counts it once.

Run:  forwarder migrate && SHOP_DB=forwarder.db TIKTOK_PIXEL_CODE=... python shop.py
      (the shop on http://127.0.0.1:8080, and ``forwarder run`` beside it on the same file)
"""

import asyncio
import html
import json
import os
import sqlite3
import string
import uuid
from pathlib import Path

from aiohttp import web

PRODUCT = {"content_id": "sku-1077218", "name": "Ceramic mug", "price": 23.0}
TEMPLATE = string.Template((Path(__file__).parent / "page.html").read_text())
DB_PATH = web.AppKey("db_path", str)
PIXEL_CODE = web.AppKey("pixel_code", str)

SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    id       INTEGER PRIMARY KEY,
    cart_id  TEXT NOT NULL UNIQUE,  -- one order per checkout form, however often it is posted
    email    TEXT NOT NULL,
    phone    TEXT,
    quantity INTEGER NOT NULL,
    total    REAL NOT NULL,
    ttclid   TEXT,                  -- which TikTok ad click brought the buyer
    ttp      TEXT                   -- the Pixel's browser id
)
"""


def place_order(db_path: str, order: dict, user: dict, consent: str, url: str) -> str:
    """Write the order and its Purchase event in one transaction; return the event_id."""
    conn = sqlite3.connect(db_path, timeout=5)  # busy timeout: wait for the daemon's writes
    try:
        with conn:  # one transaction: both rows or neither
            conn.execute(
                "INSERT INTO orders (cart_id, email, phone, quantity, total, ttclid, ttp)"
                " VALUES (:cart_id, :email, :phone, :quantity, :total, :ttclid, :ttp)"
                " ON CONFLICT DO NOTHING",
                {**order, "ttclid": user.get("ttclid"), "ttp": user.get("ttp")},
            )
            (order_id,) = conn.execute(
                "SELECT id FROM orders WHERE cart_id = ?", (order["cart_id"],)
            ).fetchone()
            event_id = f"order-{order_id}"  # the order id: stable, and known to the page
            payload = {
                "user": user,  # raw: the daemon hashes email and phone
                "properties": properties(order),
                "page": {"url": url},
                "consent": {"ad_user_data": consent, "ad_personalization": consent},
            }
            conn.execute(
                "INSERT INTO tiktok_outbox (event_id, event, payload) VALUES (?, 'Purchase', ?)"
                " ON CONFLICT DO NOTHING",
                (event_id, json.dumps(payload)),
            )
        return event_id
    finally:
        conn.close()


def properties(order: dict) -> dict:
    """The Purchase properties, identical for the Pixel and the server event."""
    return {
        "currency": "USD",
        "value": order["total"],
        "content_type": "product",
        "contents": [
            {
                "content_id": PRODUCT["content_id"],
                "quantity": order["quantity"],
                "price": PRODUCT["price"],
            }
        ],
    }


def js(value: object) -> str:
    """A value as a JavaScript literal that is safe inside <script>."""
    return json.dumps(value).replace("</", "<\\/")


def page(request: web.Request, title: str, main: str, track: str = "") -> web.Response:
    """Render the template; the Pixel is loaded only with the visitor's consent."""
    pixel = request.app[PIXEL_CODE] if request.cookies.get("ads_consent") == "granted" else ""
    body = TEMPLATE.substitute(
        title=html.escape(title), main=main, pixel_code=js(pixel or None), track=track
    )
    return web.Response(text=body, content_type="text/html")


async def landing(request: web.Request) -> web.Response:
    """The product page: keep ?ttclid= for the checkout, ask for consent, show the form."""
    banner = ""
    if "ads_consent" not in request.cookies:
        banner = (
            '<form method="post" action="/consent">May TikTok measure our ads on this site?'
            ' <button name="choice" value="granted">Allow</button>'
            ' <button name="choice" value="denied">Refuse</button></form>'
        )
    main = f"""{banner}
<h1>{html.escape(str(PRODUCT["name"]))}, ${PRODUCT["price"]:.2f}</h1>
<form method="post" action="/checkout">
  <input type="hidden" name="cart_id" value="{uuid.uuid4().hex}">
  <label>E-mail <input name="email" type="email" required></label>
  <label>Phone <input name="phone" type="tel"></label>
  <label>Quantity <input name="quantity" type="number" value="1" min="1" max="99"></label>
  <button>Buy</button>
</form>"""
    response = page(request, "Shop", main)
    if ttclid := request.query.get("ttclid"):
        response.set_cookie(
            "ttclid",
            ttclid,
            max_age=7 * 86400,
            httponly=True,
            samesite="Lax",
            secure=request.secure,
        )
    return response


async def consent(request: web.Request) -> web.Response:
    """Record the visitor's choice from the banner."""
    choice = (await request.post()).get("choice")
    response = web.Response(status=303, headers={"Location": "/"})
    if choice in {"granted", "denied"}:
        response.set_cookie(
            "ads_consent", str(choice), max_age=180 * 86400, samesite="Lax", secure=request.secure
        )
    return response


async def checkout(request: web.Request) -> web.Response:
    """Write the order and its event; the thank-you page tracks the same event_id."""
    form = await request.post()
    try:
        quantity = int(str(form.get("quantity", "1")))
        order = {
            "cart_id": str(form["cart_id"]),
            "email": str(form["email"]).strip(),
            "phone": str(form.get("phone", "")).strip(),
            "quantity": quantity,
            "total": round(quantity * float(PRODUCT["price"]), 2),
        }
    except (KeyError, ValueError):
        raise web.HTTPBadRequest(
            text="cart_id, email and a numeric quantity are required"
        ) from None
    if not (order["email"] and order["cart_id"] and 1 <= quantity <= 99):
        raise web.HTTPBadRequest(text="an e-mail address and a quantity from 1 to 99 are required")
    user = {
        "email": order["email"],
        "phone": order["phone"],
        "ip": request.remote or "",  # behind a reverse proxy: its X-Forwarded-For value
        "user_agent": request.headers.get("User-Agent", ""),
        "ttclid": request.cookies.get("ttclid", ""),
        "ttp": request.cookies.get("_ttp", ""),  # set by the Pixel on the landing page
    }
    user = {key: value for key, value in user.items() if value}
    granted = request.cookies.get("ads_consent") == "granted"
    event_id = await asyncio.to_thread(
        place_order,
        request.app[DB_PATH],
        order,
        user,
        "granted" if granted else "denied",
        str(request.url),
    )
    track = ""
    if granted:  # the browser's copy of the event, with the event_id of the server's
        track = f"ttq.track('Purchase', {js(properties(order))}, {js({'event_id': event_id})});"
    main = "<h1>Thank you!</h1><p>Your order is on its way.</p>"
    return page(request, "Thank you", main, track)


def make_app(db_path: str, pixel_code: str) -> web.Application:
    """The shop on the SQLite file *db_path* (already migrated by `forwarder migrate`)."""
    conn = sqlite3.connect(db_path, timeout=5)
    try:
        conn.execute(SCHEMA)
    finally:
        conn.close()
    app = web.Application()
    app[DB_PATH] = db_path
    app[PIXEL_CODE] = pixel_code
    app.router.add_get("/", landing)
    app.router.add_post("/consent", consent)
    app.router.add_post("/checkout", checkout)
    return app


if __name__ == "__main__":
    web.run_app(
        make_app(os.environ.get("SHOP_DB", "forwarder.db"), os.environ["TIKTOK_PIXEL_CODE"]),
        host="127.0.0.1",
        port=int(os.environ.get("SHOP_PORT", "8080")),
    )
