"""Checkout through the real ``stripe`` library against the fake Stripe on 127.0.0.1:
the order, its stock and the bag stay right whether Stripe answers, fails or is cancelled."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from devtools.fake_stripe import FakeStripeServer
from elysium.extensions import db
from elysium.integrations import stripe_gateway
from elysium.integrations.stripe_gateway import close_client
from elysium.models import Cart, Inventory, Order, OrderStatus, Product
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


def test_a_guest_pays_and_the_webhook_makes_the_order_paid(shop: Shop, app: Flask) -> None:
    client = shop.client()
    add_chain(client)
    page = client.get("/cart")
    assert 'href="/checkout"' in page_text(page)
    form = client.get("/checkout")
    assert form.status_code == 200
    assert form.headers["Cache-Control"] == "no-store"
    assert "Continue to secure payment" in page_text(form)
    assert "Demo payments: no real money moves" in page_text(form)
    assert (
        "form-action 'self' https://checkout.stripe.com " + shop.fake.base_url
        in (form.headers["Content-Security-Policy"])
    )

    response = check_out(client)

    assert response.status_code == 303
    assert response.location.startswith(f"{shop.fake.base_url}/pay/")
    session_id = session_id_from(response.location)
    [order] = all_orders(app)
    assert order["status"] is OrderStatus.PENDING
    assert order["session"] == session_id
    assert order["email"] == "ada@example.com"
    assert order["shipping"]["postcode"] == "SW1Y 4JH"
    assert order["billing"] == order["shipping"]
    assert stock(app) == (3, 1)
    assert bags(app) == [(True, [1])]
    session = shop.fake.session(session_id)
    assert session["client_reference_id"] == order["number"]
    assert session["metadata"] == {"order_number": order["number"]}
    assert session["amount_total"] == order["total"]
    assert session["customer_email"] == "ada@example.com"
    assert session["expires_at"] >= time.time() + 30 * 60

    waiting = client.get(f"/checkout/success?session_id={session_id}")
    assert 'hx-trigger="every 2s"' in page_text(waiting)
    assert all_orders(app)[0]["status"] is OrderStatus.PENDING  # the page never marks it paid

    [delivery] = [d for d in shop.fake.pay(session_id) if d.type == "checkout.session.completed"]
    assert delivery.status == 200

    assert all_orders(app)[0]["status"] is OrderStatus.PAID
    assert stock(app) == (2, 0)
    assert bags(app) == [(False, [])]
    status = client.htmx("GET", f"/checkout/success?session_id={session_id}")
    assert "Paid" in page_text(status)
    assert "hx-trigger" not in page_text(status)


def test_a_double_submit_makes_one_order_and_one_stripe_session(shop: Shop, app: Flask) -> None:
    client = shop.client()
    add_chain(client)
    first = check_out(client)
    second = client.post("/checkout", data={"csrf_token": client.csrf_token, **DETAILS})

    assert first.status_code == second.status_code == 303
    assert first.location == second.location
    assert len(all_orders(app)) == 1
    assert len(shop.fake.sessions) == 1
    assert stock(app) == (3, 1)


def test_the_stripe_session_is_idempotent_on_the_order_number(shop: Shop, app: Flask) -> None:
    """A retried create (a lost answer, a second worker) gets the same session back."""
    client = shop.client()
    add_chain(client)
    session_id = session_id_from(check_out(client).location)
    number = all_orders(app)[0]["number"]
    assert (KEY, f"checkout-{number}") in shop.fake.app._idempotency
    with shop.app.test_request_context():
        order = db.session.scalars(select(Order)).one()
        expires_at = order.checkout_expires_at
        again = stripe_gateway.create_checkout_session(
            order,
            [
                stripe_gateway.LineItem(
                    line.product_name, line.configuration_summary, line.unit_price, line.quantity
                )
                for line in order.lines
            ],
            success_url="http://localhost/checkout/success?session_id={CHECKOUT_SESSION_ID}",
            cancel_url="http://localhost/checkout/cancel?session_id={CHECKOUT_SESSION_ID}",
            expires_at=expires_at,
            idempotency_key=f"checkout-{number}",
        )
        db.session.remove()
    assert again[0] == session_id
    assert len(shop.fake.sessions) == 1


@pytest.mark.parametrize("failure", ["down", "500", "timeout"])
def test_when_stripe_fails_nothing_is_lost_and_nothing_stays_reserved(
    shop: Shop, app: Flask, failure: str
) -> None:
    client = shop.client()
    add_chain(client, quantity=2)
    if failure == "down":
        shop.fake.down()
    elif failure == "500":
        shop.fake.fail_next(500, type="api_error", message="Something went wrong")
    else:
        shop.app.config["STRIPE_TIMEOUT_SECONDS"] = 1
        shop.fake.hang_next(3)

    response = check_out(client)

    assert response.status_code == 503
    assert "We couldn't reach our payment provider — your bag is saved, please try again" in (
        page_text(response)
    )
    assert 'value="Ada Lovelace"' in page_text(response)
    [order] = all_orders(app)
    assert order["status"] is OrderStatus.CANCELLED
    assert stock(app) == (3, 0)
    assert bags(app) == [(False, [2])]
    if failure == "down":
        shop.fake.up()
    shop.fake.release_hangs()
    again = check_out(client)
    assert again.status_code == 303
    assert stock(app) == (3, 2)


def test_cancelling_at_the_payment_page_releases_the_piece_and_the_bag(
    shop: Shop, app: Flask
) -> None:
    client = shop.client()
    add_chain(client)
    session_id = session_id_from(check_out(client).location)

    response = client.get(f"/checkout/cancel?session_id={session_id}")

    assert response.status_code == 303
    assert response.location.endswith("/cart")
    assert "Checkout cancelled — your bag is just as you left it" in page_text(client.get("/cart"))
    assert all_orders(app)[0]["status"] is OrderStatus.CANCELLED
    assert shop.fake.session(session_id)["status"] == "expired"
    assert stock(app) == (3, 0)
    assert bags(app) == [(False, [1])]


def test_cancel_after_payment_never_cancels_a_paid_order(shop: Shop, app: Flask) -> None:
    client = shop.client()
    add_chain(client)
    session_id = session_id_from(check_out(client).location)
    shop.fake.pay(session_id)

    response = client.get(f"/checkout/cancel?session_id={session_id}")

    assert response.status_code == 303
    assert "/checkout/success" in response.location
    assert all_orders(app)[0]["status"] is OrderStatus.PAID
    assert stock(app) == (2, 0)


def test_cancel_after_paying_but_before_the_webhook_cancels_nothing(shop: Shop, app: Flask) -> None:
    client = shop.client()
    add_chain(client)
    session_id = session_id_from(check_out(client).location)
    shop.fake.auto_deliver = False
    shop.fake.pay(session_id)

    response = client.get(f"/checkout/cancel?session_id={session_id}")

    assert "/checkout/success" in response.location
    assert all_orders(app)[0]["status"] is OrderStatus.PENDING
    assert stock(app) == (3, 1)
    shop.fake.deliver_pending()
    assert all_orders(app)[0]["status"] is OrderStatus.PAID


def test_cancel_while_stripe_is_down_still_gives_the_bag_back(shop: Shop, app: Flask) -> None:
    client = shop.client()
    add_chain(client)
    session_id = session_id_from(check_out(client).location)
    shop.fake.down()

    response = client.get(f"/checkout/cancel?session_id={session_id}")

    assert response.location.endswith("/cart")
    assert all_orders(app)[0]["status"] is OrderStatus.CANCELLED
    assert stock(app) == (3, 0)
    assert bags(app) == [(False, [1])]


def test_an_unknown_payment_session_is_not_found(shop: Shop) -> None:
    client = shop.client()
    assert client.get("/checkout/success?session_id=cs_test_nope").status_code == 404
    assert client.get("/checkout/cancel?session_id=cs_test_nope").status_code == 404
    assert client.get("/checkout/success").status_code == 404


def test_invalid_details_are_refused_with_what_was_typed_kept(shop: Shop, app: Flask) -> None:
    client = shop.client()
    add_chain(client)
    response = check_out(
        client,
        **{"email": "not-an-email", "shipping-city": "", "gift_message": "x" * 301},
    )

    assert response.status_code == 422
    text = page_text(response)
    assert "Enter an email address like name@example.com." in text
    assert "Enter the town or city." in text
    assert "Use at most 300 characters." in text
    assert 'value="not-an-email"' in text
    assert 'value="12 St James\'s Square"' in text or "12 St James&#39;s Square" in (
        response.get_data(as_text=True)
    )
    assert all_orders(app) == []
    assert bags(app) == [(False, [1])]


def test_a_separate_billing_address_is_checked_and_kept(shop: Shop, app: Flask) -> None:
    client = shop.client()
    add_chain(client)
    details = {key: value for key, value in DETAILS.items() if key != "billing_same"}
    refused = client.submit("/checkout", details)
    assert refused.status_code == 422
    assert "Enter the full name." in page_text(refused)

    billing = {key.replace("shipping-", "billing-"): value for key, value in ADDRESS.items()}
    billing["billing-full_name"] = "Charles Babbage"
    accepted = client.submit("/checkout", {**details, **billing})
    assert accepted.status_code == 303
    [order] = all_orders(app)
    assert order["billing"]["full_name"] == "Charles Babbage"
    assert order["shipping"]["full_name"] == "Ada Lovelace"


@pytest.mark.parametrize(("threshold", "shown"), [(1, True), (10_000_000, False)])
def test_a_signature_note_shows_above_the_configured_value(
    app: Flask, catalogue: dict, threshold: int, shown: bool
) -> None:
    client = _shop_app(app, SIGNATURE_REQUIRED_ABOVE=threshold).test_client()
    add_chain(client)
    assert ("A signature is required on delivery." in page_text(client.get("/checkout"))) is shown


def test_htmx_is_sent_to_the_payment_page_with_hx_redirect(shop: Shop, app: Flask) -> None:
    client = shop.client()
    add_chain(client)
    client.get("/checkout")
    refused = client.htmx("POST", "/checkout", data={**DETAILS, "email": ""})
    assert refused.status_code == 422
    assert "<html" not in refused.get_data(as_text=True)
    assert "Enter your email address." in page_text(refused)

    response = client.htmx("POST", "/checkout", data=DETAILS)

    assert response.status_code == 204
    assert response.headers["HX-Redirect"].startswith(f"{shop.fake.base_url}/pay/")


def test_back_at_checkout_with_a_payment_open_the_shopper_can_resume_or_cancel(
    shop: Shop, app: Flask
) -> None:
    client = shop.client()
    add_chain(client)
    location = check_out(client).location
    session_id = session_id_from(location)

    page = page_text(client.get("/checkout"))

    assert f"You have a payment in progress for order {all_orders(app)[0]['number']}" in page
    assert f"/checkout/cancel?session_id={session_id}" in page
    resumed = client.post("/checkout", data={"csrf_token": client.csrf_token, **DETAILS})
    assert resumed.status_code == 303
    assert resumed.location == location
    assert len(all_orders(app)) == 1


def test_an_empty_bag_goes_back_to_the_bag(shop: Shop) -> None:
    client = shop.client()
    assert client.get("/checkout").location.endswith("/cart")
    client.get("/")
    response = client.post("/checkout", data={"csrf_token": client.csrf_token, **DETAILS})
    assert response.status_code == 303
    assert response.location.endswith("/cart")


def test_a_bag_with_a_sold_out_piece_goes_back_to_the_bag(shop: Shop, app: Flask) -> None:
    client = shop.client()
    add_chain(client)
    set_stock(app, 0)
    with app.app_context():
        product = db.session.scalars(select(Product).where(Product.slug == CHAIN)).one()
        product.lead_time_weeks = None
        for row in product.inventory:
            row.lead_time_weeks = None
        db.session.commit()
        db.session.remove()
    response = client.get("/checkout")
    assert response.status_code == 303
    assert response.location.endswith("/cart")


def test_without_a_stripe_key_checkout_says_payments_are_not_configured(
    app: Flask, catalogue: dict
) -> None:
    client = _shop_app(app, STRIPE_SECRET_KEY=None).test_client()
    add_chain(client)
    page = client.get("/checkout")
    assert page.status_code == 200
    assert "Payments are not configured" in page_text(page)
    assert "Continue to secure payment" not in page_text(page)
    assert "Demo payments" not in page_text(page)
    assert (
        client.post("/checkout", data={"csrf_token": client.csrf_token, **DETAILS}).status_code
        == 503
    )
    assert all_orders(app) == []


def test_a_signed_in_shopper_can_deliver_to_a_saved_address(shop: Shop, app: Flask) -> None:
    from elysium.models import Address
    from tests.conftest import PASSWORD, create_user

    with app.app_context():
        user_id = create_user("grace@example.com")
        db.session.add(
            Address(
                user_id=user_id,
                full_name="Grace Hopper",
                line1="1 Navy Row",
                city="Bath",
                postcode="BA1 1AA",
                country="GB",
                is_default_shipping=True,
            )
        )
        db.session.commit()
        address_id = db.session.scalars(select(Address.id)).one()
        db.session.remove()
    client = shop.client()
    client.submit("/auth/login", {"email": "grace@example.com", "password": PASSWORD})
    add_chain(client)
    page = page_text(client.get("/checkout"))
    assert "Grace Hopper, 1 Navy Row, Bath" in page
    assert 'value="grace@example.com"' in page

    response = client.submit(
        "/checkout",
        {"email": "grace@example.com", "billing_same": "y", "shipping_choice": str(address_id)},
    )
    assert response.status_code == 303, page_text(response)
    [order] = all_orders(app)
    assert order["shipping"]["full_name"] == "Grace Hopper"


def test_twenty_shoppers_racing_for_the_last_piece_make_one_order(shop: Shop, app: Flask) -> None:
    set_stock(app, 1)
    clients = [shop.client() for _ in range(20)]
    for client in clients:
        add_chain(client)
        client.get("/checkout")
    barrier = threading.Barrier(len(clients))
    results: list[int] = []
    texts: list[str] = []
    lock = threading.Lock()

    def attempt(client: ShopClient) -> None:
        barrier.wait()
        response = client.post("/checkout", data={"csrf_token": client.csrf_token, **DETAILS})
        with lock:
            results.append(response.status_code)
            texts.append(response.location or page_text(response))

    threads = [threading.Thread(target=attempt, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(results).count(303) == 1, sorted(results)
    assert sum(text.startswith(shop.fake.base_url + "/pay/") for text in texts) == 1
    assert sorted(results).count(409) == 19, results
    told = [t for t in texts if "Aurelia Fine Chain" in t and "sold out" in t.lower()]
    assert len(told) == 19
    assert stock(app) == (1, 1)
    orders = all_orders(app)
    assert [o["status"] for o in orders].count(OrderStatus.PENDING) == 1
    assert sum(frozen for frozen, _ in bags(app)) == 1


def _expire_in_the_past(app: Flask, minutes: int = 30) -> None:
    from datetime import timedelta

    from elysium.models.types import utcnow

    with app.app_context():
        for order in db.session.scalars(select(Order)):
            order.checkout_expires_at = utcnow() - timedelta(minutes=minutes)
        db.session.commit()
        db.session.remove()


def test_the_sweeper_cancels_an_unpaid_checkout_whose_event_was_lost(
    shop: Shop, app: Flask
) -> None:
    client = shop.client()
    add_chain(client)
    session_id = session_id_from(check_out(client).location)
    shop.fake.auto_deliver = False  # Stripe's own expired event is lost
    runner = shop.app.test_cli_runner()

    assert "none" in runner.invoke(args=["orders", "expire-stale"]).output  # not yet due
    _expire_in_the_past(app)
    result = runner.invoke(args=["orders", "expire-stale"])

    assert "1 cancelled" in result.output, result.output
    assert shop.fake.session(session_id)["status"] == "expired"
    assert all_orders(app)[0]["status"] is OrderStatus.CANCELLED
    assert stock(app) == (3, 0)
    assert bags(app) == [(False, [1])]
    assert "none" in runner.invoke(args=["orders", "expire-stale"]).output


def test_the_sweeper_never_cancels_an_order_stripe_was_paid_for(shop: Shop, app: Flask) -> None:
    client = shop.client()
    add_chain(client)
    session_id = session_id_from(check_out(client).location)
    shop.fake.auto_deliver = False
    shop.fake.pay(session_id)  # paid, but the webhook is lost
    _expire_in_the_past(app)

    result = shop.app.test_cli_runner().invoke(args=["orders", "expire-stale"])

    assert "1 paid" in result.output, result.output
    assert all_orders(app)[0]["status"] is OrderStatus.PENDING
    assert stock(app) == (3, 1)
    shop.fake.deliver_pending()
    assert all_orders(app)[0]["status"] is OrderStatus.PAID
    assert stock(app) == (2, 0)


def test_the_sweeper_leaves_orders_alone_while_stripe_is_down(shop: Shop, app: Flask) -> None:
    client = shop.client()
    add_chain(client)
    check_out(client)
    _expire_in_the_past(app)
    shop.fake.down()

    result = shop.app.test_cli_runner().invoke(args=["orders", "expire-stale"])

    assert "1 unreachable" in result.output, result.output
    assert all_orders(app)[0]["status"] is OrderStatus.PENDING
    assert stock(app) == (3, 1)


@pytest.mark.parametrize(
    ("api_base", "key"),
    [
        ("https://api.example.com", "sk_test_x"),
        ("http://10.0.0.5:12111", "sk_test_x"),
        ("http://127.0.0.1:12111", "sk_live_x"),
        ("http://127.0.0.1:12111", None),
    ],
)
def test_the_fake_stripe_address_is_only_accepted_on_loopback_with_a_test_key(app, api_base, key):
    from elysium.config import ConfigurationError

    with pytest.raises(ConfigurationError, match="STRIPE_API_BASE"):
        make_app(
            app.config["SQLALCHEMY_DATABASE_URI"], STRIPE_API_BASE=api_base, STRIPE_SECRET_KEY=key
        )
