"""The edge: a NUL, or bytes that aren't UTF-8, in a path segment, a query parameter, a form
field (urlencoded or multipart), a cookie or a header get the shop's 400 page on every route,
before anything reads them, on SQLite and PostgreSQL alike; text that is UTF-8 passes, and the
Stripe webhook's JSON body is its own business."""

from __future__ import annotations

import html
import http.client
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import urlencode

import pytest
import requests
from flask import Flask
from sqlalchemy import select

from devtools.fake_stripe.webhooks import sign
from elysium.errors import NOT_TYPED
from elysium.extensions import db
from elysium.models import (
    Address,
    CartLine,
    Inventory,
    ProcessedPaymentEvent,
    Product,
    User,
    WishlistItem,
)
from elysium.models.engagement import BespokeLead
from elysium.models.types import utcnow
from elysium.services import staff as staff_accounts
from elysium.services import wishlist
from elysium.staff.access import LAST_SEEN
from tests.conftest import PASSWORD, WEBHOOK_SECRET, ShopClient, create_user, link_in, sent_emails
from tests.html import Page, csrf_token, text_of
from tests.support.checkout import ADDRESS, CHAIN, METAL, Shop, add_chain
from tests.support.shop_process import ShopProcess
from tests.support.staff import staff_client
from tests.test_get_is_pure import snapshot

REFUSED = "This request could not be understood"
NOT_SENT = "Your form was not sent"
UNREADABLE = "It held characters we can't read. Please go back and try again."

# What each bad value is as bytes, once the server has percent-decoded it.
BAD = {
    "NUL": b"\x00",
    "a byte that is never UTF-8": b"\xff",
    "an overlong NUL": b"\xc0\x80",
}
# A cookie's NUL as Werkzeug reads it out of a quoted value (browsers send such text as is).
QUOTED_NUL = b'"\\000"'

GET_PLACES = ("query", "cookie", "path")
POST_PLACES = ("query", "urlencoded form", "multipart form", "cookie", "path")


@dataclass
class Call:
    """One route and method as a visitor would use it: the URL and, for a POST, the body."""

    visitor: str
    path: str
    form: dict[str, str] = field(default_factory=dict)
    variable_segment: int | None = None  # which segment holds the rule's first variable
    query: dict[str, str] = field(default_factory=lambda: {"q": "rings"})

    def query_string(self, bad: bytes = b"") -> bytes:
        """The call's query, percent-encoded as a browser sends it, ``bad`` in every value."""
        return b"&".join(
            quote(name.encode()) + b"=" + quote(value.encode() + bad)
            for name, value in self.query.items()
        )


@dataclass
class Visit:
    app: Flask
    clients: dict[str, ShopClient]
    webhook_body: bytes

    def cookie_header(self, visitor: str, extra: bytes = b"") -> str:
        """The visitor's own cookies (their session, bag and CSRF token), plus ``extra``."""
        client = self.clients[visitor]
        names = (self.app.config["SESSION_COOKIE_NAME"], self.app.config["CART_COOKIE_NAME"])
        pairs = [
            f"{name}={cookie.value}".encode("latin-1")
            for name in names
            if (cookie := client.get_cookie(name)) is not None
        ]
        return b"; ".join([*pairs, *([extra] if extra else [])]).decode("latin-1")

    def send(
        self,
        method: str,
        call: Call,
        *,
        path: bytes | None = None,
        query: bytes = b"",
        bad_fields: bytes | None = None,
        multipart: bool = False,
        cookie: bytes = b"",
        htmx: bool = False,
        body: tuple[bytes, str] | None = None,
    ):
        """The request exactly as these bytes: the test client would re-encode a str path.
        ``body``: these bytes of this content type instead of the call's form."""
        headers = {"Cookie": self.cookie_header(call.visitor, cookie)}
        if htmx:
            headers["HX-Request"] = "true"
        kwargs: dict = {}
        if body is not None:
            token = self.clients[call.visitor].csrf_token or ""
            kwargs = {"data": body[0], "content_type": body[1], "headers": {"X-CSRFToken": token}}
        elif method == "POST":
            kwargs = self._body(call, bad_fields, multipart)
        raw_path = path if path is not None else call.path.encode()
        raw = self.app.test_client(use_cookies=False)
        return raw.open(
            "/",
            method=method,
            buffered=True,
            headers={**headers, **kwargs.pop("headers", {})},
            environ_overrides={
                "PATH_INFO": raw_path.decode("latin-1"),
                "QUERY_STRING": query.decode("latin-1"),
            },
            **kwargs,
        )

    def _body(self, call: Call, bad: bytes | None, multipart: bool) -> dict:
        """The call's form with its CSRF token (``bad`` at the end of every other field), or
        the webhook's signed event."""
        if call.path == "/webhooks/stripe" and bad is None:
            signature = sign(self.webhook_body, WEBHOOK_SECRET)
            return {
                "data": self.webhook_body,
                "content_type": "application/json",
                "headers": {"Stripe-Signature": signature},
            }
        token = (self.clients[call.visitor].csrf_token or "").encode()
        encoded = {name: value.encode() for name, value in (call.form or {"note": ""}).items()}
        if bad is not None:
            encoded = {name: value + bad for name, value in encoded.items()}
        encoded["csrf_token"] = token
        if multipart:
            boundary = uuid.uuid4().hex
            parts = [
                b'--%s\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n'
                % (boundary.encode(), name.encode(), value)
                for name, value in encoded.items()
            ]
            body = b"".join(parts) + b"--%s--\r\n" % boundary.encode()
            return {"data": body, "content_type": f"multipart/form-data; boundary={boundary}"}
        body = b"&".join(
            name.encode() + b"=" + b"".join(b"%%%02X" % byte for byte in value)
            for name, value in encoded.items()
        )
        return {"data": body, "content_type": "application/x-www-form-urlencoded"}


def with_bad_segment(call: Call, bad: bytes) -> bytes:
    """The call's path with ``bad`` inside one segment: the rule's variable, else the last."""
    segments = call.path.encode().split(b"/")
    index = call.variable_segment if call.variable_segment is not None else len(segments) - 1
    segments[index] = segments[index] + bad
    return b"/".join(segments)


def edge_page(response, form: dict[str, str] | None = None) -> bool:
    """The shop's 400 page (htmx: its message in #messages) saying the text can't be read;
    or, for a ``form`` sent with something typed, the page showing back what it sent."""
    if response.status_code != 400:
        return False
    typed = typed_values(form or {})
    if typed or NOT_SENT in response.get_data(as_text=True):
        return shown_back(response, typed)
    if response.request.headers.get("HX-Request") == "true":
        return response.headers.get("HX-Retarget") == "#messages" and text_of(response) == (
            f"{REFUSED}. {UNREADABLE}"
        )
    page = Page(response)
    return [text_of(h1) for h1 in page.select("h1")] == [REFUSED] and [
        text_of(hint) for hint in page.select("p.lede")
    ] == [UNREADABLE]


def typed_values(form: dict[str, str]) -> list[str]:
    """What of a form someone typed: the values a page showing it back must hold."""
    return [
        value
        for name, value in form.items()
        if name not in NOT_TYPED and "password" not in name and value.strip()
    ]


def shown_back(response, typed: list[str]) -> bool:
    """The 400 page that holds what a form sent, to copy (htmx: the whole page swapped in)."""
    htmx = response.request.headers.get("HX-Request") == "true"
    if htmx and response.headers.get("HX-Retarget") != "body":
        return False
    page = Page(response)
    kept = [text_of(area) for area in page.select("textarea[readonly]")]
    return [text_of(h1) for h1 in page.select("h1")] == [NOT_SENT] and all(
        any(value in text for text in kept) for value in typed
    )


def _ids(app: Flask) -> dict[str, str]:
    with app.app_context():
        address = db.session.scalars(select(Address.id)).one()
        lines = db.session.scalars(select(CartLine).order_by(CartLine.id)).all()
        guest_line = next(line.id for line in lines if line.cart.user_id is None)
        saved = db.session.scalars(select(WishlistItem.id)).one()
        stock_row = db.session.scalars(select(Inventory.id).order_by(Inventory.id)).first()
        welcome = staff_accounts.create_staff(db.session, "newcomer@elysium.example").link
        lead = BespokeLead(name="Grace Hopper", email="grace@example.com", message="A ring")
        db.session.add(lead)
        db.session.commit()
        lead_id = lead.id
        db.session.remove()
    return {
        "address": str(address),
        "guest_line": str(guest_line),
        "saved": str(saved),
        "stock": str(stock_row),
        "welcome": "/auth/welcome/" + welcome.rsplit("/auth/welcome/", 1)[1],
        "lead": str(lead_id),
    }


@pytest.fixture
def visit(shop: Shop, app: Flask) -> Visit:
    """Ada, signed in, with a saved address, a saved piece and a piece in her bag; a guest with
    a bag; the links a new account and a forgotten password get by email."""
    with app.app_context():
        user_id = create_user("ada@example.com")
        db.session.add(
            Address(
                user_id=user_id,
                full_name="Ada Lovelace",
                line1="12 St James's Square",
                city="London",
                postcode="SW1Y 4JH",
                country="GB",
            )
        )
        piece = db.session.scalars(select(Product).where(Product.slug == CHAIN)).one()
        wishlist.toggle_piece(db.session, user_id, piece)
        db.session.commit()
        db.session.remove()
    ada = shop.client()
    ada.submit("/auth/login", {"email": "ada@example.com", "password": PASSWORD})
    add_chain(ada)
    guest = shop.client()
    add_chain(guest)
    guest.get("/auth/login")
    body = json.dumps(
        {
            "id": "evt_test_edge",
            "object": "event",
            "type": "customer.created",
            "created": int(time.time()),
            "data": {"object": {"id": "cus_test_edge", "object": "customer"}},
            "livemode": False,
        }
    ).encode()
    staff = staff_client(shop.app)
    return Visit(shop.app, {"ada": ada, "guest": guest, "staff": staff}, body)


def _calls(visit: Visit) -> dict[tuple[str, str], Call]:
    """Every route and method, with what a visitor would send to it (a form that would change
    something, where the route changes something)."""
    ids = _ids(visit.app)
    newcomer = visit.app.test_client()
    newcomer.submit(
        "/auth/register", {"email": "grace@example.com", "password": "a fine long password"}
    )
    newcomer.submit("/auth/forgot", {"email": "ada@example.com"})
    [confirm] = sent_emails(visit.app, "grace@example.com")
    [*_, reset] = sent_emails(visit.app, "ada@example.com")
    confirm_path = link_in(confirm, "/auth/confirm/")
    reset_path = link_in(reset, "/auth/reset/")
    with visit.app.app_context():
        create_user("charles@example.com")
    charles = visit.app.test_client()
    charles.submit("/auth/login", {"email": "charles@example.com", "password": PASSWORD})
    charles.submit(
        "/account/profile",
        {"email": "babbage@example.com", "current_password": PASSWORD},
        action="/account/email",
    )
    [email_change] = sent_emails(visit.app, "babbage@example.com")
    email_change_path = link_in(email_change, "/account/email/confirm/")
    address = {
        "full_name": "Ada Lovelace",
        "line1": "1 Piccadilly",
        "city": "London",
        "postcode": "W1J 0BD",
        "country": "GB",
    }
    new_password = "another fine long password"
    ring = "aurelia-solitaire-ring"
    return {
        ("shop.home", "GET"): Call("guest", "/"),
        ("shop.listing", "GET"): Call(
            "guest", "/shop", query={"category": "ring", "sort": "price-asc", "q": "gold"}
        ),
        ("shop.product", "GET"): Call(
            "guest", f"/shop/{ring}", variable_segment=2, query={"metal": "platinum", "size": "6"}
        ),
        ("shop.price", "GET"): Call(
            "guest",
            f"/shop/{ring}/price",
            variable_segment=2,
            query={"metal": "white-gold", "diamond": "0.50ct", "engraving": "Always"},
        ),
        ("shop.collection", "GET"): Call("guest", "/collections/aurelia", variable_segment=2),
        ("static", "GET"): Call("guest", "/static/css/elysium.css", variable_segment=3),
        ("site.healthz", "GET"): Call("guest", "/healthz"),
        ("site.robots", "GET"): Call("guest", "/robots.txt"),
        ("site.sitemap", "GET"): Call("guest", "/sitemap.xml"),
        ("site.favicon", "GET"): Call("guest", "/favicon.ico"),
        ("shop.recently_viewed", "GET"): Call("guest", "/recently-viewed", query={"exclude": ring}),
        ("art.drawing", "GET"): Call(
            "guest", f"/art/{ring}/platinum/0.50ct.svg", variable_segment=2, query={"v": "1"}
        ),
        ("art.raster", "GET"): Call(
            "guest", f"/art/{ring}/platinum/0.50ct.png", variable_segment=2, query={"v": "1"}
        ),
        ("cart.show", "GET"): Call("guest", "/cart"),
        ("cart.add_item", "POST"): Call(
            "guest",
            "/cart/items",
            {
                "product": ring,
                "quantity": "1",
                "metal": "yellow-gold",
                "diamond": "0.30ct",
                "size": "6",
                "engraving": "Always",
            },
        ),
        ("cart.update_line", "POST"): Call(
            "guest", f"/cart/items/{ids['guest_line']}", {"quantity": "2"}, variable_segment=3
        ),
        ("cart.remove_line", "POST"): Call(
            "guest", f"/cart/items/{ids['guest_line']}/delete", variable_segment=3
        ),
        ("cart.empty_bag", "POST"): Call("guest", "/cart/empty"),
        ("checkout.show", "GET"): Call("ada", "/checkout"),
        ("checkout.start", "POST"): Call(
            "ada",
            "/checkout",
            {"email": "ada@example.com", "shipping_choice": "new", "billing_same": "y", **ADDRESS},
        ),
        ("checkout.resume", "POST"): Call("ada", "/checkout/resume"),
        ("checkout.cancel", "POST"): Call("ada", "/checkout/cancel"),
        ("checkout.success", "GET"): Call(
            "ada", "/checkout/success", query={"session_id": "cs_test_edge"}
        ),
        ("orders.detail", "GET"): Call(
            "guest", "/orders/ELY-AAAAAAAA", variable_segment=2, query={"token": "x"}
        ),
        ("account.overview", "GET"): Call("ada", "/account"),
        ("account.profile", "GET"): Call("ada", "/account/profile"),
        ("account.update_profile", "POST"): Call(
            "ada", "/account/profile", {"first_name": "Augusta", "last_name": "King"}
        ),
        ("account.change_email", "POST"): Call(
            "ada", "/account/email", {"email": "augusta@example.com", "current_password": PASSWORD}
        ),
        ("account.change_password", "POST"): Call(
            "ada", "/account/password", {"current_password": PASSWORD, "password": new_password}
        ),
        ("account.address_book", "GET"): Call("ada", "/account/addresses"),
        ("account.add_address", "POST"): Call("ada", "/account/addresses", address),
        ("account.address", "GET"): Call(
            "ada", f"/account/addresses/{ids['address']}", variable_segment=3
        ),
        ("account.update_address", "POST"): Call(
            "ada", f"/account/addresses/{ids['address']}", address, variable_segment=3
        ),
        ("account.edit_address", "GET"): Call(
            "ada", f"/account/addresses/{ids['address']}/edit", variable_segment=3
        ),
        ("account.delete_address", "POST"): Call(
            "ada", f"/account/addresses/{ids['address']}/delete", variable_segment=3
        ),
        ("account.make_default", "POST"): Call(
            "ada", f"/account/addresses/{ids['address']}/default/billing", variable_segment=3
        ),
        ("account.orders_list", "GET"): Call("ada", "/account/orders"),
        ("account.order_detail", "GET"): Call(
            "ada", "/account/orders/ELY-AAAAAAAA", variable_segment=3
        ),
        ("account.export", "GET"): Call("ada", "/account/export"),
        ("account.close_account", "GET"): Call("ada", "/account/delete"),
        ("account.close_account", "POST"): Call(
            "ada", "/account/delete", {"password": PASSWORD, "confirm_email": "ada@example.com"}
        ),
        ("account.goodbye", "GET"): Call("ada", "/account/goodbye"),
        ("account.confirm_new_email", "GET"): Call("guest", email_change_path, variable_segment=4),
        ("account.confirm_new_email", "POST"): Call("guest", email_change_path, variable_segment=4),
        ("wishlist.show", "GET"): Call("ada", "/wishlist"),
        ("wishlist.heart", "GET"): Call(
            "ada", f"/wishlist/heart/{ring}", variable_segment=3, query={"metal": "rose-gold"}
        ),
        ("wishlist.toggle", "POST"): Call(
            "ada", "/wishlist/toggle", {"slug": ring, "scope": "piece", "next": "/shop"}
        ),
        ("wishlist.remove", "POST"): Call(
            "ada", f"/wishlist/{ids['saved']}/remove", variable_segment=2
        ),
        ("wishlist.move_to_cart", "POST"): Call(
            "ada", f"/wishlist/{ids['saved']}/move", variable_segment=2
        ),
        ("auth.login", "GET"): Call("guest", "/auth/login", query={"next": "/account"}),
        ("auth.login", "POST"): Call(
            "guest", "/auth/login", {"email": "ada@example.com", "password": PASSWORD}
        ),
        ("auth.logout", "POST"): Call("ada", "/auth/logout"),
        ("auth.register", "GET"): Call("guest", "/auth/register"),
        ("auth.register", "POST"): Call(
            "guest", "/auth/register", {"email": "alan@example.com", "password": new_password}
        ),
        ("auth.check_inbox", "GET"): Call("guest", "/auth/check-inbox"),
        ("auth.confirm_email", "GET"): Call("guest", confirm_path, variable_segment=3),
        ("auth.confirm_email", "POST"): Call("guest", confirm_path, variable_segment=3),
        ("auth.forgot_password", "GET"): Call("guest", "/auth/forgot"),
        # Not Ada: a new reset link for her would end the one the next two calls use.
        ("auth.forgot_password", "POST"): Call(
            "guest", "/auth/forgot", {"email": "grace@example.com"}
        ),
        ("auth.reset_password", "GET"): Call("guest", reset_path, variable_segment=3),
        ("auth.reset_password", "POST"): Call(
            "guest", reset_path, {"password": new_password}, variable_segment=3
        ),
        ("auth.google_login", "POST"): Call("guest", "/auth/google", {"next": "/account"}),
        ("auth.google_callback", "GET"): Call(
            "guest", "/auth/google/callback", query={"code": "x", "state": "y"}
        ),
        ("auth.google_link", "GET"): Call("guest", "/auth/google/link"),
        ("auth.google_link", "POST"): Call("guest", "/auth/google/link", {"password": PASSWORD}),
        ("webhooks.stripe_event", "POST"): Call("guest", "/webhooks/stripe"),
        ("webhooks.sanity_event", "POST"): Call("guest", "/webhooks/sanity"),
        ("bespoke.form", "GET"): Call(
            "guest", "/bespoke", query={"from": ring, "metal": "platinum", "diamond": "0.50ct"}
        ),
        ("bespoke.submit", "POST"): Call(
            "guest",
            "/bespoke",
            {
                "name": "Grace Hopper",
                "email": "grace@example.com",
                "piece_type": "ring",
                "metal": "platinum",
                "budget": "5000-10000",
                "message": "A ring like a compass rose",
                "consent": "y",
            },
        ),
        ("bespoke.check", "POST"): Call(
            "guest", "/bespoke/check", {"name": "Grace"}, query={"field": "name"}
        ),
        ("bespoke.thanks", "GET"): Call("guest", "/bespoke/thanks"),
        ("account.commissions", "GET"): Call("ada", "/account/commissions"),
        ("quotes.show", "GET"): Call("guest", "/bespoke/quote/nothing", variable_segment=3),
        ("quotes.pay", "POST"): Call("guest", "/bespoke/quote/nothing/deposit", variable_segment=3),
        ("auth.welcome", "GET"): Call("guest", ids["welcome"], variable_segment=3),
        ("auth.welcome", "POST"): Call(
            "guest", ids["welcome"], {"password": new_password}, variable_segment=3
        ),
        **_staff_calls(ids, order="ELY-EDGE0001"),
    }


def _staff_calls(ids: dict[str, str], order: str) -> dict[tuple[str, str], Call]:
    """The back office's routes, as a member of staff past the second factor uses them."""
    stock = f"/staff/inventory/{ids['stock']}"
    on_order = f"/staff/orders/{order}"
    on_lead = f"/staff/leads/{ids['lead']}"
    ship = {"carrier": "dhl", "tracking_number": "JD0146", "notify": "y"}
    calls = {
        ("staff.dashboard", "GET"): Call("staff", "/staff"),
        ("staff.inventory.list", "GET"): Call("staff", "/staff/inventory"),
        ("staff.inventory.variant", "GET"): Call("staff", stock, variable_segment=3),
        ("staff.inventory.edit", "POST"): Call(
            "staff", stock, {"stock_level": "9", "reason": "received"}, variable_segment=3
        ),
        ("staff.orders.list", "GET"): Call("staff", "/staff/orders"),
        ("staff.orders.csv", "GET"): Call("staff", "/staff/orders.csv"),
        ("staff.orders.counts", "GET"): Call("staff", "/staff/orders/counts"),
        ("staff.orders.detail", "GET"): Call("staff", on_order, variable_segment=3),
        ("staff.orders.packing_slip", "GET"): Call(
            "staff", f"{on_order}/packing-slip", variable_segment=3
        ),
        ("staff.orders.add_note", "POST"): Call(
            "staff", f"{on_order}/notes", {"note": "x"}, variable_segment=3
        ),
        ("staff.fulfilment.bulk", "POST"): Call(
            "staff", "/staff/orders/bulk", {"action": "fulfil", "orders": order}
        ),
        ("staff.leads.list", "GET"): Call("staff", "/staff/leads"),
        ("staff.leads.detail", "GET"): Call("staff", on_lead, variable_segment=3),
        ("staff.leads.move", "POST"): Call(
            "staff", f"{on_lead}/status", {"to": "contacted", "seen": "new"}, variable_segment=3
        ),
        ("staff.leads.assign", "POST"): Call(
            "staff", f"{on_lead}/assignee", {"assignee": ""}, variable_segment=3
        ),
        ("staff.leads.add_note", "POST"): Call(
            "staff", f"{on_lead}/notes", {"note": "x"}, variable_segment=3
        ),
        ("staff.quotes.show", "GET"): Call("staff", f"{on_lead}/quotes", variable_segment=3),
        ("staff.quotes.create", "POST"): Call(
            "staff", f"{on_lead}/quotes", {"description": "x"}, variable_segment=3
        ),
        ("staff.security.second_factor", "GET"): Call("staff", "/staff/security/second-factor"),
        ("staff.security.second_factor", "POST"): Call(
            "staff", "/staff/security/second-factor", {"code": "123456"}
        ),
        ("staff.security.new_key", "POST"): Call("staff", "/staff/security/new-key"),
        ("staff.security.recovery_codes", "GET"): Call("staff", "/staff/security/recovery-codes"),
        ("staff.security.new_recovery_codes", "POST"): Call(
            "staff", "/staff/security/recovery-codes"
        ),
    }
    for action, form in {
        "fulfil": {},
        "ship": ship,
        "deliver": {"notify": "y"},
        "cancel": {"reason": "x", "request_key": "k"},
        "refund": {"amount": "1", "request_key": "k"},
    }.items():
        calls[(f"staff.fulfilment.{action}", "POST")] = Call(
            "staff", f"{on_order}/{action}", form, variable_segment=3
        )
    calls[("staff.fulfilment.give_back", "POST")] = Call(
        "staff", f"{on_order}/give-back", {"reason": "x"}, variable_segment=3
    )
    calls[("staff.fulfilment.retry_refund", "POST")] = Call(
        "staff", f"{on_order}/refunds/1/retry", variable_segment=5
    )
    return calls


def _placed(visit: Visit, method: str, call: Call, place: str, bad: bytes):
    if place == "query":
        return visit.send(method, call, query=call.query_string(bad))
    if place == "path":
        return visit.send(method, call, path=with_bad_segment(call, bad))
    if place == "cookie":
        return visit.send(method, call, cookie=b"note=" + (QUOTED_NUL if bad == b"\x00" else bad))
    return visit.send(method, call, bad_fields=bad, multipart=place == "multipart form")


def quote(raw: bytes) -> bytes:
    return b"".join(b"%%%02X" % byte for byte in raw)


def test_every_route_refuses_nul_and_bytes_that_arent_utf8_wherever_they_are_and_writes_nothing(
    visit: Visit, app: Flask
) -> None:
    calls = _calls(visit)
    routes = {
        (rule.endpoint, method)
        for rule in visit.app.url_map.iter_rules()
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert routes == set(calls), "every route and method of the URL map is called"
    before = snapshot(app)

    not_refused = []
    kinds = list(BAD.items())
    for number, ((endpoint, method), call) in enumerate(calls.items()):
        places = POST_PLACES if method == "POST" else GET_PLACES
        # Each route gets each place once, with a kind of bad text that turns from route to
        # route and place to place: every kind meets every place on a third of the routes (the
        # check is the same for every route; each kind decodes its own way).
        for at, place in enumerate(places):
            name, bad = kinds[(number + at) % len(kinds)]
            response = _placed(visit, method, call, place, bad)
            if not edge_page(response, call.form if place.endswith("form") else None):
                not_refused.append((endpoint, method, place, name, response.status_code))

    assert not_refused == []
    assert snapshot(app) == before


def test_the_same_requests_without_the_bad_bytes_get_past_the_edge(visit: Visit) -> None:
    """So the refusals above are the bad bytes', not a missing CSRF token or a wrong URL."""
    calls = _calls(visit)
    stopped = []
    for (endpoint, method), call in calls.items():
        if endpoint in {"auth.logout", "account.close_account", "account.change_password"}:
            continue  # they would end the session the other calls use
        response = visit.send(method, call, query=call.query_string(), cookie=b"note=ok")
        if response.status_code == 400 or response.status_code >= 500:
            stopped.append((endpoint, method, response.status_code))
    assert stopped == []


def test_a_change_whose_body_isnt_a_browsers_form_is_the_415_page(visit: Visit, app: Flask):
    """A JSON body (which Flask-WTF read as the form: numbers, lists and objects reached
    fields that expect text, unchecked by the edge) and a form with a file in it (the shop
    takes none) answered 500 on the forms. Every form now answers with the 415 page and
    writes nothing; the webhooks still read their JSON."""
    calls = _calls(visit)
    before = snapshot(app)
    boundary = uuid.uuid4().hex
    answers = {}
    for (endpoint, method), call in calls.items():
        if method != "POST" or endpoint.startswith("webhooks."):
            continue
        token = visit.clients[call.visitor].csrf_token or ""
        fields = {**(call.form or {"note": ""}), "csrf_token": token}
        as_json = json.dumps({name: [1, {"a": 2}] for name in fields}).encode()
        [first, *_] = call.form or {"note": ""}
        with_file = (
            b'--%s\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n%s\r\n'
            b'--%s\r\nContent-Disposition: form-data; name="%s"; filename="a.txt"\r\n'
            b"Content-Type: text/plain\r\n\r\nhello\r\n--%s--\r\n"
        ) % (
            boundary.encode(),
            token.encode(),
            boundary.encode(),
            first.encode(),
            boundary.encode(),
        )
        for kind, body in (
            ("json", (as_json, "application/json")),
            ("file", (with_file, f"multipart/form-data; boundary={boundary}")),
        ):
            response = visit.send("POST", call, query=call.query_string(), body=body)
            page = Page(response)
            refused = response.status_code == 415 and "a form as a browser sends it" in text_of(
                page
            )
            answers[(endpoint, kind)] = refused or response.status_code

    assert {key: status for key, status in answers.items() if status is not True} == {}
    assert snapshot(app) == before


def test_an_id_too_large_for_the_database_is_a_404_on_every_route_that_takes_one(
    visit: Visit, app: Flask
) -> None:
    """A number in the path past what an id column holds names nothing: the same 404 as any
    id that doesn't exist, never the database's overflow error (a 500)."""
    calls = _calls(visit)
    with_ids = {rule.endpoint for rule in app.url_map.iter_rules() if "<int:" in rule.rule}
    before = snapshot(app)
    answers = {}
    for (endpoint, method), call in calls.items():
        if endpoint not in with_ids:
            continue
        assert call.variable_segment is not None
        for number in (str(2**31 - 1), str(2**31), "9" * 30):
            segments = call.path.split("/")
            segments[call.variable_segment] = number
            response = visit.send(method, call, path="/".join(segments).encode())
            answers[(endpoint, method, number)] = response.status_code
    assert len({endpoint for endpoint, _, _ in answers}) >= 10
    assert {key: status for key, status in answers.items() if status != 404} == {}
    assert snapshot(app) == before


def test_a_form_in_utf8_gets_through_urlencoded_and_multipart(visit: Visit, app: Flask) -> None:
    profile = Call("ada", "/account/profile", {"first_name": "Zoë", "last_name": "Łukasiewicz"})
    assert visit.send("POST", profile).status_code == 303
    profile.form = {"first_name": "Zoë", "last_name": "Ōtsuka 大塚"}
    assert visit.send("POST", profile, multipart=True).status_code == 303
    with app.app_context():
        ada = db.session.scalars(select(User).where(User.email == "ada@example.com")).one()
        assert (ada.first_name, ada.last_name) == ("Zoë", "Ōtsuka 大塚")
        db.session.remove()


@pytest.mark.parametrize("place", GET_PLACES)
def test_htmx_is_refused_with_the_message_fragment(visit: Visit, place: str) -> None:
    call = Call("guest", "/shop/aurelia-solitaire-ring/price", variable_segment=2)
    if place == "query":
        response = visit.send("GET", call, query=b"metal=%00", htmx=True)
    elif place == "cookie":
        response = visit.send("GET", call, cookie=b"note=\xff", htmx=True)
    else:
        response = visit.send("GET", call, path=with_bad_segment(call, b"\xc0\x80"), htmx=True)
    assert edge_page(response)
    assert "<html" not in response.get_data(as_text=True)


def test_utf8_text_anywhere_is_welcome(visit: Visit) -> None:
    listing = Call("guest", "/shop")
    assert visit.send("GET", listing, query=b"q=%C3%A9t%C3%A9").status_code == 200
    assert visit.send("GET", listing, cookie="note=été".encode()).status_code == 200
    unknown_piece = Call("guest", "/shop/été")
    assert visit.send("GET", unknown_piece, path="/shop/été".encode()).status_code == 404


def test_raw_bytes_that_arent_utf8_in_a_query_or_form_are_a_400_not_a_crash(
    visit: Visit,
) -> None:
    """Werkzeug decodes a query string and an urlencoded body as UTF-8 before splitting
    them, and raises on bytes that aren't: the edge answers first."""
    assert edge_page(visit.send("GET", Call("guest", "/shop"), query=b"q=caf\xe9"))
    token = (visit.clients["guest"].csrf_token or "").encode()
    form = b"csrf_token=%s&product=%s&quantity=1&metal=%s" % (token, CHAIN.encode(), METAL.encode())
    raw = visit.app.test_client(use_cookies=False)

    def add_to_bag(note: bytes):
        return raw.post(
            "/cart/items",
            data=form + b"&note=" + note,
            content_type="application/x-www-form-urlencoded",
            headers={"Cookie": visit.cookie_header("guest")},
        )

    assert edge_page(add_to_bag(b"caf\xe9"), {"quantity": "1", "metal": METAL, "note": "caf"})
    assert add_to_bag(b"caf\xc3\xa9").status_code == 303  # the same in UTF-8


@pytest.mark.parametrize("header", ["Referer", "User-Agent", "X-CSRFToken"])
def test_a_nul_in_any_header_is_refused(visit: Visit, header: str, app: Flask) -> None:
    before = snapshot(app)
    response = visit.app.test_client(use_cookies=False).post(
        "/cart/items",
        data={
            "csrf_token": visit.clients["guest"].csrf_token,
            "product": CHAIN,
            "quantity": "1",
            "metal": METAL,
        },
        headers={"Cookie": visit.cookie_header("guest"), header: "https://x.example/\x00"},
    )
    assert edge_page(response)
    assert snapshot(app) == before


def test_a_nul_escaped_inside_the_webhooks_json_is_the_webhooks_business(
    visit: Visit, app: Flask
) -> None:
    body = visit.webhook_body.replace(b'"object": "customer"', b'"object": "customer\\u0000"')
    assert b"\\u0000" in body
    visit.webhook_body = body
    response = visit.send("POST", Call("guest", "/webhooks/stripe"))
    assert response.status_code == 200
    assert response.json["received"] is True
    with app.app_context():
        assert db.session.scalars(select(ProcessedPaymentEvent.event_id)).all() == ["evt_test_edge"]
        db.session.remove()


def test_through_gunicorn_percent_encoded_nul_and_bad_utf8_are_the_400_page(
    app: Flask, catalogue: dict
) -> None:
    """The server percent-decodes the path before the app sees it: what a client really
    sends, and what the test client can't (it re-encodes what isn't UTF-8)."""
    settings = {
        "ELYSIUM_ENV": "testing",
        "SECRET_KEY": app.config["SECRET_KEY"],
        "DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
        "EMAIL_BACKEND": "console",
    }
    targets = [
        "/checkout/success?session_id=%00",
        "/shop?q=%FF",
        "/shop?q=%C0%80",
        "/shop/%C0%80",
        "/shop/aurelia%FF-solitaire-ring",
        "/collections/%00",
        "/%ED%A0%80",
    ]
    with ShopProcess(settings) as server:
        answers = {}
        for target in targets:
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            connection.request("GET", target)
            response = connection.getresponse()
            answers[target] = (response.status, REFUSED in response.read().decode())
            connection.close()
    assert answers == dict.fromkeys(targets, (400, True))


def test_through_gunicorn_a_chunked_body_over_the_limit_is_the_413_page(
    app: Flask, catalogue: dict
) -> None:
    """A body sent in chunks has no length to refuse it by: Werkzeug read it up to the limit
    and quietly cut it off, so a form whose fields came first went through (a piece added to
    the bag from a 2 MB body)."""
    settings = {
        "ELYSIUM_ENV": "testing",
        "SECRET_KEY": app.config["SECRET_KEY"],
        "DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
        "EMAIL_BACKEND": "console",
    }
    limit = app.config["MAX_CONTENT_LENGTH"]
    with ShopProcess(settings) as server:
        base = f"http://127.0.0.1:{server.port}"
        browser = requests.Session()
        token = csrf_token(browser.get(f"{base}/shop/{CHAIN}").text)
        form = urlencode(
            {"csrf_token": token, "product": CHAIN, "quantity": "1", "metal": METAL}
        ).encode()

        def in_chunks(padding: int) -> Iterator[bytes]:
            yield form + b"&note="
            for start in range(0, padding, 65536):
                yield b"x" * min(65536, padding - start)

        def add(padding: int) -> requests.Response:
            return browser.post(
                f"{base}/cart/items",
                data=in_chunks(padding),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
                allow_redirects=False,
            )

        too_large = add(2 * limit)
        assert too_large.status_code == 413
        assert "That was too large" in html.unescape(too_large.text)
        assert "0 items" in text_of(Page(browser.get(f"{base}/cart").text))

        within = add(limit // 2)
        assert within.status_code == 303
        assert "1 item" in text_of(Page(browser.get(f"{base}/cart").text))


def test_an_unknown_host_with_unreadable_bytes_in_the_query_gets_the_400_page(client) -> None:
    raw_query = b"q=\xff\xfe".decode("latin-1")  # as a WSGI server hands over raw bytes

    response = client.get(
        "/shop", environ_overrides={"QUERY_STRING": raw_query, "HTTP_HOST": "evil.example"}
    )

    assert response.status_code == 400
    assert Page(response).one("h1")


BROKEN_REFERER = "http://[oops/account"  # an unclosed bracket in the host: it doesn't parse


def test_a_referer_that_doesnt_parse_is_no_referer(app: Flask, client: ShopClient) -> None:
    """A guest's form sent to a page that needs signing in, and a staff form sent after the
    back office's 30 idle minutes, go to sign in, then back to where they were sent from,
    read from the ``Referer``. One that doesn't parse is none (before: a 500)."""
    client.get("/auth/login")
    guest = client.post(
        "/auth/logout", data={"csrf_token": client.csrf_token}, headers={"Referer": BROKEN_REFERER}
    )
    assert guest.status_code == 303
    assert guest.headers["Location"] == "/auth/login?next=/"

    staff = staff_client(app)
    staff.get("/staff")
    with staff.session_transaction() as session:
        session[LAST_SEEN] = (utcnow() - timedelta(hours=1)).timestamp()
    idle = staff.post(
        "/staff/orders/ELY-ANYTHING/fulfil",
        data={"csrf_token": staff.csrf_token},
        headers={"Referer": BROKEN_REFERER},
    )
    assert idle.status_code == 303
    assert idle.headers["Location"] == "/auth/login?next=/staff"


def test_a_page_number_past_a_floats_range_is_ignored_on_every_list(app, client, catalogue):
    """A number of 309 digits or more in a list's page (or the listing's prices) failed
    WTForms' range check, which compares it as a float: a 500 on the shop's listing for anyone,
    and on the staff's lists. It is a number like any other that can't be used: ignored."""
    huge = "9" * 309
    for url in (f"/shop?page={huge}", f"/shop?min_price={huge}&max_price={huge}"):
        assert client.get(url).status_code == 200
        assert client.htmx("GET", url).status_code == 200
    staff = staff_client(app)
    for url in ("/staff/orders", "/staff/orders.csv", "/staff/leads"):
        assert staff.get(f"{url}?page={huge}").status_code == 200, url
    assert staff.htmx("GET", f"/staff/orders/counts?page={huge}").status_code == 200


@pytest.mark.parametrize("held", ["\xff" * 32, "é" * 32, 'W/"' + "é" * 32 + '"'])
def test_an_etag_outside_ascii_is_an_etag_that_matches_nothing(client, catalogue, held):
    """``If-None-Match`` is anyone's to send; compared with compare_digest, which refuses text
    outside ASCII, such a value was a 500 on every page of the shop window."""
    value = held if held.startswith("W/") else f'"{held}"'
    for url in ("/", "/shop", f"/shop/{CHAIN}"):
        response = client.get(url, headers={"If-None-Match": value})
        assert response.status_code == 200, url
        assert response.headers["ETag"]


def test_a_multipart_part_without_a_name_is_the_400_page(app, client, catalogue):
    """Werkzeug reads a part with no ``name`` as a field named None: the edge's check for NULs
    in names failed on it (a 500 on every URL, before any view), and Flask-WTF's look for the
    CSRF token among the names would have next. No browser sends one: the edge's 400 page."""
    body = b"--x\r\nContent-Disposition: form-data\r\n\r\nv\r\n--x--\r\n"
    kind = "multipart/form-data; boundary=x"
    client.get(f"/shop/{CHAIN}")
    for method, url in (("GET", "/"), ("POST", "/cart/items")):
        response = client.open(
            url,
            method=method,
            data=body,
            content_type=kind,
            headers={"X-CSRFToken": client.csrf_token},
        )
        assert response.status_code == 400, url
        assert "<html" in response.get_data(as_text=True)


def test_a_form_holding_a_character_we_cant_read_is_shown_back_not_lost(
    app: Flask, client: ShopClient
) -> None:
    """A NUL pasted into a long idea on the commission form got the bare 400 page: nothing
    typed came back, and the form's page (never kept by the browser) reloaded empty (found by
    review). What it sent is shown back to copy, without the NUL, and a password never is."""
    from tests.test_bespoke import IDEA_KEPT, send

    sent = send(client, app, message=IDEA_KEPT.replace("tenth", "ten\x00th"))
    assert sent.status_code == 400
    page = Page(sent)
    assert [text_of(h1) for h1 in page.select("h1")] == [NOT_SENT]
    kept = {area.get_text() for area in page.select("textarea[readonly]")}
    assert IDEA_KEPT in kept
    assert "Ada Lovelace" in kept
    assert not any("\x00" in text for text in kept)
    assert sent.headers["Cache-Control"] == "no-store"
    with app.app_context():
        assert db.session.scalars(select(BespokeLead)).all() == []

    signing_in = client.submit(
        "/auth/login", {"email": "ada@example.com", "password": "battery\x00staple"}
    )
    assert signing_in.status_code == 400
    shown = signing_in.get_data(as_text=True)
    assert "ada@example.com" in shown
    assert "battery" not in shown


def test_a_field_checked_as_it_is_left_keeps_the_rest_of_the_form(client: ShopClient) -> None:
    """With JavaScript, leaving the idea field posts that field alone (hx-params); a NUL in
    it swapped the whole page for a show-back of that one field, and the name, email and
    choices typed on the page were gone (found by review). htmx gets the message alone, on
    the page that stays."""
    client.get("/bespoke")
    response = client.post(
        "/bespoke/check?field=message",
        data={"message": "My idea\x00 took ten minutes", "csrf_token": client.csrf_token},
        headers={"HX-Request": "true", "HX-Target": "error-bespoke-message"},
    )
    assert response.status_code == 400
    assert response.headers["HX-Retarget"] == "#messages"
    assert "<html" not in response.get_data(as_text=True)


@pytest.mark.parametrize("held", ['""', 'W/""', '"", W/"x"'])
def test_an_empty_etag_is_an_etag_that_matches_nothing(client, catalogue, held):
    """An empty entity-tag (``""``) is a valid one (RFC 9110); Werkzeug reads it as None, whose
    ``len()`` was a 500 on every page of the shop window (found by review)."""
    for url in ("/", "/shop", "/shop/aurelia-fine-chain"):
        response = client.get(url, headers={"If-None-Match": held})
        assert response.status_code == 200, url
        assert response.headers["ETag"]


@pytest.mark.parametrize("boundary", ["*=UTF-8''%E2%82%AC", "*=utf-8''%FF"])
def test_a_multipart_boundary_outside_ascii_is_no_form_not_a_500(
    client: ShopClient, boundary: str
) -> None:
    """``boundary*=UTF-8''%E2%82%AC`` (RFC 2231) is read by Werkzeug as "€"; the edge encoded
    it as latin-1, which raised on every request, a GET's too (found by review). Werkzeug
    reads no form from such a body: it is refused as any form without its token is."""
    content_type = f"multipart/form-data; boundary{boundary}"
    assert client.get("/", headers={"Content-Type": content_type}).status_code == 200
    client.get("/auth/login")
    body = (
        b'--X\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n%s\r\n--X--\r\n'
        % (client.csrf_token or "").encode()
    )
    for path in ("/auth/login", "/cart/items", "/account/profile"):
        response = client.post(path, data=body, content_type=content_type)
        assert response.status_code == 400, (path, response.status_code)
