"""The shop with payments through the fake Stripe, for tests that go through checkout.

``shop`` is an app whose ``stripe`` library talks to a fake Stripe on 127.0.0.1 and whose
webhooks the fake delivers straight into the app; the helpers add pieces, check out, and read
orders, stock and carts back from the database.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from devtools.fake_stripe import FakeStripeServer
from elysium.extensions import db
from elysium.integrations.stripe_gateway import close_client
from elysium.models import Cart, Inventory, Order, Product
from tests.conftest import WEBHOOK_SECRET, ShopClient, make_app, page_text

CHAIN = "aurelia-fine-chain"
METAL = "yellow-gold"
KEY = "sk_test_elysium"
ADDRESS = {
    "shipping-full_name": "Ada Lovelace",
    "shipping-line1": "12 St James's Square",
    "shipping-city": "London",
    "shipping-postcode": "sw1y 4jh",
    "shipping-country": "GB",
}
DETAILS = {"email": "ada@example.com", "billing_same": "y", **ADDRESS}


@dataclass
class Shop:
    app: Flask
    fake: FakeStripeServer

    def client(self) -> ShopClient:
        return self.app.test_client()  # type: ignore[return-value]


def _shop_app(app: Flask, **overrides: Any) -> Flask:
    return make_app(app.config["SQLALCHEMY_DATABASE_URI"], **overrides)


@pytest.fixture
def fake() -> Iterator[FakeStripeServer]:
    with FakeStripeServer(webhook_secret=WEBHOOK_SECRET) as server:
        yield server


@pytest.fixture
def shop(app: Flask, catalogue: dict, fake: FakeStripeServer) -> Iterator[Shop]:
    """The shop with payments through the fake; its webhooks go straight into the app."""
    shop_app = _shop_app(app, STRIPE_SECRET_KEY=KEY, STRIPE_API_BASE=fake.base_url)
    stripe_side = shop_app.test_client()

    def transport(url: str, payload: bytes, headers: Any) -> int:
        return stripe_side.post("/webhooks/stripe", data=payload, headers=dict(headers)).status_code

    fake.webhook_url = "http://localhost/webhooks/stripe"
    fake.webhook_transport = transport
    set_stock(app, 3)
    yield Shop(shop_app, fake)
    close_client(shop_app)


def set_stock(app: Flask, level: int, reserved: int = 0) -> None:
    with app.app_context():
        row = _stock_row()
        row.stock_level, row.reserved = level, reserved
        db.session.commit()
        db.session.remove()


def _stock_row() -> Inventory:
    product = db.session.scalars(select(Product).where(Product.slug == CHAIN)).one()
    return next(row for row in product.inventory if row.variant_key == METAL)


def stock(app: Flask) -> tuple[int, int]:
    with app.app_context():
        row = _stock_row()
        counts = (row.stock_level, row.reserved)
        db.session.remove()
        return counts


def all_orders(app: Flask) -> list[dict]:
    with app.app_context():
        found = [
            {
                "number": order.number,
                "status": order.status,
                "session": order.stripe_checkout_session_id,
                "total": order.total,
                "lines": [(line.product_slug, line.quantity) for line in order.lines],
                "email": order.email,
                "shipping": order.shipping_address,
                "billing": order.billing_address,
                "gift_message": order.gift_message,
            }
            for order in db.session.scalars(select(Order).order_by(Order.id))
        ]
        db.session.remove()
        return found


def bags(app: Flask) -> list[tuple[bool, list[int]]]:
    """Every bag: (frozen?, its line quantities)."""
    with app.app_context():
        found = [
            (cart.frozen_at is not None, [line.quantity for line in cart.lines])
            for cart in db.session.scalars(select(Cart).order_by(Cart.id))
        ]
        db.session.remove()
        return found


def add_chain(client: ShopClient, quantity: int = 1):
    data = {"product": CHAIN, "quantity": str(quantity), "metal": METAL}
    response = client.submit(f"/shop/{CHAIN}", data, action="/cart/items")
    assert response.status_code == 303, page_text(response)
    return response


def check_out(client: ShopClient, **details: str):
    return client.submit("/checkout", {**DETAILS, **details})


def session_id_from(location: str) -> str:
    match = re.search(r"/pay/(cs_test_\w+)", location)
    assert match, location
    return match.group(1)
