"""A worker killed between committing the order and hearing back from Stripe: the order
carries its expiry from the start, the bag says a payment is in progress and offers a way on
and a way out, and the sweeper releases what nobody comes back for."""

from __future__ import annotations

import contextlib
import threading
import time
from datetime import timedelta

import pytest
import requests
from flask import Flask
from sqlalchemy import select

from elysium.extensions import db
from elysium.models import Order, OrderStatus
from elysium.models.types import utcnow
from tests.conftest import WEBHOOK_SECRET, page_text
from tests.html import csrf_token
from tests.support.checkout import CHAIN, DETAILS, KEY, METAL, Shop, all_orders, bags, stock
from tests.support.shop_process import ShopProcess


def _order(app: Flask) -> Order | None:
    with app.app_context():
        order = db.session.scalars(select(Order)).one_or_none()
        db.session.expunge_all()
        db.session.remove()
        return order


def _killed_mid_checkout(shop: Shop, app: Flask) -> requests.Session:
    """A guest checks out on a gunicorn worker that is killed while Stripe is slow to make
    the payment page. Returns the guest's browser (its cookies)."""
    shop.fake.hang_next(60)
    settings = {
        "ELYSIUM_ENV": "testing",
        "SECRET_KEY": shop.app.config["SECRET_KEY"],
        "DATABASE_URL": shop.app.config["SQLALCHEMY_DATABASE_URI"],
        "STRIPE_SECRET_KEY": KEY,
        "STRIPE_API_BASE": shop.fake.base_url,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "STRIPE_TIMEOUT_SECONDS": "60",
        "EMAIL_BACKEND": "console",
    }
    browser = requests.Session()
    with ShopProcess(settings) as server:
        # Every server of one shop shares its SITE_URL (Stripe's return pages are built on it).
        shop.app.config["SITE_URL"] = server.base_url
        product_page = browser.get(f"{server.base_url}/shop/{CHAIN}")
        token = csrf_token(product_page.text)
        added = browser.post(
            f"{server.base_url}/cart/items",
            data={"csrf_token": token, "product": CHAIN, "quantity": "1", "metal": METAL},
        )
        assert added.ok
        token = csrf_token(browser.get(f"{server.base_url}/checkout").text)

        def submit() -> None:
            with contextlib.suppress(requests.ConnectionError):  # the worker dies under it
                browser.post(
                    f"{server.base_url}/checkout",
                    data={"csrf_token": token, **DETAILS},
                    allow_redirects=False,
                    timeout=30,
                )

        thread = threading.Thread(target=submit)
        thread.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _order(app) is None:
            time.sleep(0.05)
        assert _order(app) is not None, "the order is committed before Stripe is asked"
        time.sleep(0.5)  # on its way to Stripe, which sits on it
        server.kill()
        thread.join(timeout=30)
    return browser


def _same_shopper(shop: Shop, browser: requests.Session):
    """The shopper comes back (to another server): same bag cookie."""
    client = shop.client()
    for cookie in browser.cookies:
        client.set_cookie(cookie.name, cookie.value)
    return client


def test_a_resume_that_cant_reach_stripe_leaves_the_order_to_be_paid(shop: Shop, app: Flask):
    """The order's page was never made (its request still waiting on Stripe, or killed), and
    a Resume (a second submit, another tab) could not reach Stripe, or met the idempotency
    key the first request's call still holds. It cancelled the order, released its pieces and
    told the shopper their page had expired; the first request's page then came to nothing.
    The order now stays as it is, the shopper is told to try again, and the next Resume goes
    on to pay."""
    browser = _killed_mid_checkout(shop, app)
    client = _same_shopper(shop, browser)
    shop.fake.down()

    response = client.submit("/cart", {}, action="/checkout/resume")

    assert "couldn't reach our payment provider" in page_text(
        client.get(response.location) if response.status_code == 303 else response
    )
    [order] = all_orders(app)
    assert order["status"] is OrderStatus.PENDING
    assert stock(app) == (3, 1)
    assert bags(app) == [(True, [1])]

    shop.fake.up()
    shop.fake.release_hangs()
    resumed = client.submit("/cart", {}, action="/checkout/resume")
    assert resumed.status_code == 303
    assert resumed.location == shop.fake.page_url(next(iter(shop.fake.sessions)))
    assert all_orders(app)[0]["status"] is OrderStatus.PENDING


@pytest.mark.parametrize("way_out", ["cancel", "sweeper", "resume"])
def test_a_worker_killed_before_stripe_answers_leaves_nothing_stuck(
    shop: Shop, app: Flask, way_out: str
) -> None:
    browser = _killed_mid_checkout(shop, app)

    order = _order(app)
    assert order is not None
    assert order.status is OrderStatus.PENDING
    assert order.stripe_checkout_session_id is None
    assert order.checkout_expires_at is not None
    assert order.checkout_expires_at > utcnow() + timedelta(minutes=25)
    assert stock(app) == (3, 1)
    assert bags(app) == [(True, [1])]

    client = _same_shopper(shop, browser)
    page = page_text(client.get("/cart"))
    assert "Payment in progress" in page
    assert "Resume payment" in page
    assert "Cancel payment" in page

    if way_out == "cancel":
        response = client.submit("/cart", {}, action="/checkout/cancel")
        assert response.location.endswith("/cart")
        assert "Payment cancelled" in page_text(client.get("/cart"))
    elif way_out == "sweeper":
        runner = shop.app.test_cli_runner()
        assert "Stale checkouts: none." in runner.invoke(args=["orders", "expire-stale"]).output
        with app.app_context():
            db.session.scalars(select(Order)).one().checkout_expires_at = utcnow() - timedelta(
                minutes=20
            )
            db.session.commit()
            db.session.remove()
        result = runner.invoke(args=["orders", "expire-stale"])
        assert "1 cancelled" in result.output, result.output
    else:
        # Stripe finished making the page after all: asking again with the same request
        # finds it, and the shopper goes on to pay.
        shop.fake.release_hangs()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not shop.fake.sessions:
            time.sleep(0.05)
        response = client.submit("/cart", {}, action="/checkout/resume")
        assert response.status_code == 303
        assert response.location == shop.fake.page_url(next(iter(shop.fake.sessions)))
        assert len(shop.fake.sessions) == 1
        [resumed] = all_orders(app)
        assert resumed["status"] is OrderStatus.PENDING
        assert resumed["session"] == next(iter(shop.fake.sessions))
        assert stock(app) == (3, 1)
        return

    [cancelled] = all_orders(app)
    assert cancelled["status"] is OrderStatus.CANCELLED
    assert stock(app) == (3, 0)
    assert bags(app) == [(False, [1])]
