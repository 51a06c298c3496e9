"""The back office in Chromium, with JavaScript and without: a staff member signs in with the
second factor, finds a paid order, fulfils and ships it, and the shopper's order page says
"Shipped" with the tracking link."""

from __future__ import annotations

import re

import pyotp
from playwright.sync_api import expect

from elysium.extensions import db
from elysium.models import Order, OrderStatus
from tests.conftest import PASSWORD, link_in, sent_emails
from tests.support.checkout import DETAILS, session_id_from
from tests.support.databases import SAME_ON_EITHER_DATABASE
from tests.support.orders import pending_chain_order
from tests.support.staff import STAFF_EMAIL, create_staff, staff_client
from tests.test_staff_fulfilment import act


def checked_out(shop) -> str:
    """A guest puts a chain in the bag and checks out (through the test client): the id of
    the payment page on the fake Stripe."""
    client = shop.test_client()
    client.submit(
        "/shop/aurelia-fine-chain",
        {"product": "aurelia-fine-chain", "quantity": "1", "metal": "yellow-gold"},
        action="/cart/items",
    )
    return session_id_from(client.submit("/checkout", DETAILS).location)


def paid_order(shop, fake) -> str:
    """A guest buys a chain and pays on the fake Stripe: the link to the order's page."""
    session_id = checked_out(shop)
    fake.pay(session_id)
    fake.wait_for_deliveries()
    [email] = [
        e for e in sent_emails(shop, "ada@example.com") if e.template == "order_confirmation"
    ]
    return link_in(email, "/orders/")


def sign_in_with_second_factor(page, secret: str) -> None:
    page.goto("/staff")
    expect(page).to_have_url(re.compile("/auth/login"))
    page.get_by_label("Email").fill(STAFF_EMAIL)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile("/staff/security/second-factor"))
    page.get_by_label("Code from your authenticator app").fill(pyotp.TOTP(secret).now())
    page.get_by_role("button", name="Continue").click()
    expect(page).to_have_url(re.compile("/staff$"))


def order_number_of(shop, session_id: str) -> str:
    """The number of the order paid through the Checkout Session ``session_id``."""
    with shop.app_context():
        number = db.session.scalars(
            db.select(Order.number).where(Order.stripe_checkout_session_id == session_id)
        ).one()
        db.session.remove()
    return number


def test_staff_fulfil_and_ship_a_paid_order_and_the_shopper_sees_it(
    browser, javascript, shop_with_payments, live_fake_stripe, catalogue
):
    shop, base_url = shop_with_payments
    fake = live_fake_stripe
    _, secret = create_staff(shop)
    order_link = paid_order(shop, fake)
    number = re.search(r"/orders/(ELY-[0-9A-Z]{8})", order_link).group(1)

    context = browser.new_context(java_script_enabled=javascript, base_url=base_url)
    context.set_default_timeout(10_000)
    page = context.new_page()
    try:
        sign_in_with_second_factor(page, secret)

        page.get_by_role("navigation", name="Back office").get_by_role(
            "link", name="Orders"
        ).click()
        page.get_by_role("link", name=number).click()
        expect(page).to_have_url(re.compile(f"/staff/orders/{number}$"))
        page.get_by_role("button", name="Mark fulfilled").click()
        expect(page.get_by_text(f"Order {number} is fulfilled")).to_be_visible()

        page.get_by_label("Courier").select_option("royal-mail")
        page.get_by_label("Tracking number").fill("AB123456789GB")
        page.get_by_role("button", name="Ship", exact=True).click()
        expect(page.get_by_text(f"Order {number} is shipped.")).to_be_visible()

        page.goto(order_link)
        expect(
            page.get_by_text("Shipped with Royal Mail Special Delivery", exact=True)
        ).to_be_visible()
        tracking = page.get_by_role("link", name=re.compile("[Tt]rack"))
        expect(tracking).to_have_attribute(
            "href", "https://www.royalmail.com/track-your-item#/tracking-results/AB123456789GB"
        )
    finally:
        context.close()


def _another_paid_order(shop, number: str) -> None:
    order = pending_chain_order(
        shop, number=number, checkout_session_id=f"cs_{number}", with_cart=False
    )
    with shop.app_context():
        db.session.get(Order, order["id"]).status = OrderStatus.PAID
        db.session.commit()
        db.session.remove()


def test_the_tab_counts_refresh_every_30_seconds_only_while_the_tab_is_visible(
    browser, shop_with_payments, catalogue
):
    shop, base_url = shop_with_payments
    _, secret = create_staff(shop)
    context = browser.new_context(base_url=base_url)
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.clock.install()
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/staff/orders/counts" in r.url else None)
    to_fulfil = page.locator("#order-tabs a", has_text="To fulfil")
    try:
        sign_in_with_second_factor(page, secret)
        page.goto("/staff/orders")
        expect(to_fulfil).to_contain_text("0")

        _another_paid_order(shop, "ELY-REFRESH1")
        page.clock.run_for(31_000)
        expect(to_fulfil).to_contain_text("1")
        assert len(asked) == 1

        page.evaluate(
            "Object.defineProperty(document, 'visibilityState', {configurable: true,"
            " get: () => 'hidden'})"
        )
        _another_paid_order(shop, "ELY-REFRESH2")
        page.clock.run_for(95_000)
        expect(to_fulfil).to_contain_text("1")
        assert len(asked) == 1  # hidden: nothing asked for three turns

        page.evaluate(
            "Object.defineProperty(document, 'visibilityState', {configurable: true,"
            " get: () => 'visible'}); document.dispatchEvent(new Event('visibilitychange'))"
        )
        expect(to_fulfil).to_contain_text("2")
        assert len(asked) == 2
    finally:
        context.close()


def test_staff_give_back_a_bank_payment_that_came_after_they_cancelled_the_order(
    browser, javascript, shop_with_payments, live_fake_stripe, catalogue
):
    """The transfer was on its way when staff cancelled the order; it arrived after all. The
    order's page gives it back through Stripe, and the order stays cancelled."""
    shop, base_url = shop_with_payments
    fake = live_fake_stripe
    _, secret = create_staff(shop)
    session_id = checked_out(shop)
    fake.pay_later(session_id)
    fake.wait_for_deliveries()
    number = order_number_of(shop, session_id)

    context = browser.new_context(java_script_enabled=javascript, base_url=base_url)
    context.set_default_timeout(10_000)
    page = context.new_page()
    try:
        sign_in_with_second_factor(page, secret)
        page.goto(f"/staff/orders/{number}")
        page.get_by_label("Why (for the order's record)").fill("No transfer yet")
        page.get_by_role("button", name="Cancel order").click()
        expect(page.get_by_text(f"Order {number} is cancelled.")).to_be_visible()

        fake.bank_payment_succeeds(session_id)
        fake.wait_for_deliveries()
        page.reload()
        expect(
            page.get_by_text("Payment arrived after the order was cancelled").first
        ).to_be_visible()
        page.get_by_label("Why (for the order's record)").fill("The piece was sold again")
        page.get_by_role("button", name="Refund the payment").click()

        expect(page.get_by_text(f"The money held on order {number} is refunded.")).to_be_visible()
        expect(page.get_by_role("button", name="Refund the payment")).to_have_count(0)
        expect(page.get_by_text("Nothing more to do: the order is cancelled.")).to_be_visible()
    finally:
        context.close()
    intent = fake.session(session_id)["payment_intent"]
    given = [r["amount"] for r in fake.refunds.values() if r["payment_intent"] == intent]
    assert given == [65000]


@SAME_ON_EITHER_DATABASE
def test_the_back_offices_lists_fit_a_phone(
    browser, javascript, shop_with_payments, live_fake_stripe, catalogue
):
    """The stock list was 787 px wide on a 375 px phone (its rows' hidden labels escaped the
    table's scroller), the orders list 499 px (the bulk action's select as wide as its
    longest option), an order's page 440 px once it had a refund (its table widened the
    page's grid) (found by review)."""
    shop, base_url = shop_with_payments
    number = re.search(r"/orders/(ELY-[0-9A-Z]{8})", paid_order(shop, live_fake_stripe)).group(1)
    colleague = staff_client(shop, "colleague@elysium.example")
    refunded = act(colleague, number, "refund", amount="100", request_key="r")
    assert refunded.status_code == 303
    _, secret = create_staff(shop)
    context = browser.new_context(
        java_script_enabled=javascript,
        base_url=base_url,
        viewport={"width": 375, "height": 740},
    )
    context.set_default_timeout(10_000)
    page = context.new_page()
    try:
        sign_in_with_second_factor(page, secret)
        for path in ("/staff/orders", "/staff/inventory", f"/staff/orders/{number}"):
            page.goto(path)
            assert page.evaluate("document.documentElement.scrollWidth") <= 375, path
        expect(page.get_by_role("table")).to_be_visible()
    finally:
        context.close()


def test_an_order_page_with_a_long_email_address_fits_a_phone(
    browser, shop_with_payments, live_fake_stripe, catalogue
):
    """An order's page was 504 px wide on a 390 px phone when its shopper's email address was
    long: the link to it, which never broke, set the width of the back office's one column
    (found by review). Its content also starts at the shop's own margin, as the header does,
    and its next steps are set apart (the "Refund" heading touched "Mark fulfilled")."""
    shop, base_url = shop_with_payments
    email = "someone.with.a.very.long.email.address@example.com"
    client = shop.test_client()
    client.submit(
        "/shop/aurelia-fine-chain",
        {"product": "aurelia-fine-chain", "quantity": "1", "metal": "yellow-gold"},
        action="/cart/items",
    )
    session_id = session_id_from(client.submit("/checkout", {**DETAILS, "email": email}).location)
    live_fake_stripe.pay(session_id)
    live_fake_stripe.wait_for_deliveries()
    number = order_number_of(shop, session_id)
    _, secret = create_staff(shop)
    context = browser.new_context(base_url=base_url, viewport={"width": 390, "height": 844})
    context.set_default_timeout(10_000)
    page = context.new_page()
    try:
        sign_in_with_second_factor(page, secret)
        page.goto(f"/staff/orders/{number}")
        expect(page.get_by_role("link", name=email)).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        wordmark = page.locator(".site-header .wordmark").bounding_box()
        heading = page.get_by_role("heading", level=1).bounding_box()
        assert heading["x"] == wordmark["x"]
        fulfil = page.get_by_role("button", name="Mark fulfilled").bounding_box()
        refund = page.get_by_text("Refund through Stripe", exact=True).bounding_box()
        assert refund["y"] - (fulfil["y"] + fulfil["height"]) >= 24
    finally:
        context.close()
