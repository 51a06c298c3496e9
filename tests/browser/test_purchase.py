"""The whole purchase in Chromium: configure a ring, bag it, pay on the simulated Stripe page,
watch the order turn to Paid, find it in the account — with JavaScript and without."""

from __future__ import annotations

import re
import threading

import pytest
from playwright.sync_api import expect
from werkzeug.serving import make_server

from devtools.fake_stripe.server import FakeStripeServer
from elysium.integrations.stripe_gateway import close_client
from tests.conftest import PASSWORD, WEBHOOK_SECRET, AuthActions, make_app


@pytest.fixture(scope="module")
def shop_with_payments(app):
    """The shop with Stripe pointed at the fake, both served on 127.0.0.1."""
    with FakeStripeServer(webhook_secret=WEBHOOK_SECRET) as fake:
        shop = make_app(
            app.config["SQLALCHEMY_DATABASE_URI"],
            STRIPE_SECRET_KEY="sk_test_elysium_browser",
            STRIPE_API_BASE=fake.base_url,
        )
        server = make_server("127.0.0.1", 0, shop, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        base_url = f"http://127.0.0.1:{server.server_port}"
        fake.webhook_url = f"{base_url}/webhooks/stripe"
        yield shop, base_url
        server.shutdown()
        thread.join(timeout=5)
        server.server_close()
        close_client(shop)


def test_buy_a_ring_end_to_end(browser, javascript, shop_with_payments, catalogue):
    shop, base_url = shop_with_payments
    AuthActions(shop, shop.test_client()).create_user("ada@example.com")
    context = browser.new_context(java_script_enabled=javascript, base_url=base_url)
    context.set_default_timeout(10_000)
    page = context.new_page()
    shop_errors: list[str] = []
    page.on(
        "console",
        lambda message: (
            shop_errors.append(message.text)
            if message.type == "error" and message.location.get("url", "").startswith(base_url)
            else None
        ),
    )
    try:
        page.goto("/auth/login")
        page.get_by_label("Email").fill("ada@example.com")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        expect(page).to_have_url(re.compile("/account$"))

        page.goto("/shop/aurelia-solitaire-ring")
        page.locator("label.choice", has_text="18k rose gold").click()
        page.get_by_label("Ring size (US)").select_option("6.5")
        page.get_by_role("button", name="Add to bag").click()
        expect(page.locator("#bag-count")).to_contain_text("1")

        page.goto("/cart")
        page.get_by_role("link", name=re.compile("checkout", re.I)).click()
        expect(page).to_have_url(re.compile("/checkout$"))
        page.get_by_label("Full name").first.fill("Ada Lovelace")
        page.get_by_label("Address line 1").first.fill("1 Piccadilly")
        page.get_by_label("Town or city").first.fill("London")
        page.get_by_label("Postcode").first.fill("W1J 0DA")
        page.get_by_role("button", name=re.compile("secure payment", re.I)).click()

        expect(page.get_by_text("SIMULATED CHECKOUT")).to_be_visible()
        expect(page.get_by_text("£1,850").first).to_be_visible()
        page.get_by_role("button", name=re.compile("^Pay", re.I)).first.click()

        expect(page).to_have_url(re.compile("/checkout/success"))
        expect(page.get_by_text(re.compile("Paid"))).to_be_visible()
        number = re.search(r"ELY-[0-9A-Z]{8}", page.content()).group(0)

        page.goto("/account/orders")
        expect(page.get_by_role("link", name=number)).to_be_visible()
        page.get_by_role("link", name=number).click()
        expect(page.get_by_text("Payment received, thank you")).to_be_visible()
        expect(page.locator("#bag-count")).to_contain_text("0")
    finally:
        context.close()
    assert shop_errors == []
