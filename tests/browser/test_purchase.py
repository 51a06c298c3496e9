"""The whole purchase in Chromium: configure a ring, bag it, pay on the simulated Stripe page,
watch the order turn to Paid, find it in the account — with JavaScript and without."""

from __future__ import annotations

import re

from playwright.sync_api import expect
from sqlalchemy import select

from elysium.extensions import db
from elysium.models import Order, Product
from tests.browser.test_account import sign_in
from tests.conftest import PASSWORD, AuthActions


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
        expect(page.get_by_text("Payment received, thank you").first).to_be_visible()
        expect(page.locator("#bag-count")).to_contain_text("0")
    finally:
        context.close()
    assert shop_errors == []


def _chain_stock(shop, level: int | None = None) -> tuple[int, int]:
    """The rose-gold Aurelia Fine Chain's (stock, reserved); ``level`` sets it first."""
    with shop.app_context():
        product = db.session.scalars(
            select(Product).where(Product.slug == "aurelia-fine-chain")
        ).one()
        row = next(row for row in product.inventory if row.variant_key == "rose-gold")
        if level is not None:
            row.stock_level, row.reserved = level, 0
            db.session.commit()
        counts = (row.stock_level, row.reserved)
        db.session.remove()
        return counts


def test_leave_the_payment_page_then_cancel_and_find_the_bag_as_it_was(
    browser, javascript, shop_with_payments, catalogue
):
    """The last piece in the bag: checkout holds it, the shop says a payment is in progress
    (nothing in the bag can change meanwhile), and cancelling gives everything back."""
    shop, base_url = shop_with_payments
    _chain_stock(shop, level=1)
    context = browser.new_context(java_script_enabled=javascript, base_url=base_url)
    context.set_default_timeout(10_000)
    page = context.new_page()
    try:
        page.goto("/shop/aurelia-fine-chain")
        page.locator("label.choice", has_text="18k rose gold").click()
        page.get_by_role("button", name="Add to bag").click()
        expect(page.locator("#bag-count")).to_contain_text("1")
        page.goto("/shop/aurelia-solitaire-ring")
        page.get_by_label("Ring size (US)").select_option("6.5")
        page.get_by_label("Engraving").fill("Always")
        page.get_by_label("Quantity", exact=True).select_option("2")
        page.get_by_role("button", name="Add to bag").click()
        expect(page.locator("#bag-count")).to_contain_text("3")

        page.goto("/checkout")
        page.get_by_label("Email").fill("ada@example.com")
        page.get_by_label("Full name").first.fill("Ada Lovelace")
        page.get_by_label("Address line 1").first.fill("1 Piccadilly")
        page.get_by_label("Town or city").first.fill("London")
        page.get_by_label("Postcode").first.fill("W1J 0DA")
        page.get_by_role("button", name=re.compile("secure payment", re.I)).click()
        expect(page.get_by_text("SIMULATED CHECKOUT")).to_be_visible()
        assert _chain_stock(shop) == (1, 1)

        page.get_by_role("button", name="Cancel").click()  # Stripe's way back to the shop
        expect(page).to_have_url(re.compile("/cart$"))
        expect(page.get_by_role("heading", name="Payment in progress")).to_be_visible()
        expect(page.get_by_role("button", name="Resume payment")).to_be_visible()
        expect(page.locator("#bag select")).to_have_count(0)  # nothing changes meanwhile
        page.goto("/")
        page.locator("a.bag-link").click()
        expect(page.get_by_role("heading", name="Payment in progress")).to_be_visible()

        page.get_by_role("button", name="Cancel payment").click()

        expect(page).to_have_url(re.compile("/cart$"))
        expect(
            page.get_by_text("Payment cancelled — your bag is just as you left it.")
        ).to_be_visible()
        expect(page.get_by_role("heading", name="Payment in progress")).to_have_count(0)
        expect(page.locator(".bag-line")).to_have_count(2)
        expect(page.get_by_label("Quantity of Aurelia Fine Chain")).to_have_value("1")
        expect(page.get_by_label("Quantity of Aurelia Solitaire Ring")).to_have_value("2")
        expect(page.locator(".bag-line__summary").nth(1)).to_contain_text("Always")
        expect(page.locator("#bag").get_by_role("link", name="Checkout")).to_be_visible()
        assert _chain_stock(shop) == (1, 0)
    finally:
        context.close()


def _fill_checkout(page, line1: str) -> None:
    page.goto("/checkout")
    page.get_by_label("Email").fill("ada@example.com")
    page.get_by_label("Full name").first.fill("Ada Lovelace")
    page.get_by_label("Address line 1").first.fill(line1)
    page.get_by_label("Town or city").first.fill("London")
    page.get_by_label("Postcode").first.fill("W1J 0DA")


def test_a_second_tab_with_other_details_replaces_the_payment_only_when_asked(
    browser, javascript, shop_with_payments, catalogue
):
    """Two tabs on the checkout page: the first goes to pay; the second, with another address,
    is told so, keeps what was typed, and its button pays with that address instead."""
    shop, base_url = shop_with_payments
    _chain_stock(shop, level=1)
    context = browser.new_context(java_script_enabled=javascript, base_url=base_url)
    context.set_default_timeout(10_000)
    first, second = context.new_page(), context.new_page()
    try:
        first.goto("/shop/aurelia-fine-chain")
        first.locator("label.choice", has_text="18k rose gold").click()
        first.get_by_role("button", name="Add to bag").click()
        expect(first.locator("#bag-count")).to_contain_text("1")
        _fill_checkout(first, "1 Old Flat Lane")
        _fill_checkout(second, "9 New House Road")
        first.get_by_role("button", name=re.compile("secure payment", re.I)).click()
        expect(first.get_by_text("SIMULATED CHECKOUT")).to_be_visible()

        second.get_by_role("button", name=re.compile("secure payment", re.I)).click()
        expect(second.get_by_text("already being paid for in another window")).to_be_visible()
        expect(second.get_by_role("heading", name="Payment in progress")).to_be_visible()
        expect(second.get_by_label("Address line 1").first).to_have_value("9 New House Road")
        second.get_by_role("button", name="Cancel that payment and use these details").click()
        expect(second.get_by_text("SIMULATED CHECKOUT")).to_be_visible()

        with shop.app_context():
            placed = [
                (order.status.value, order.shipping_address["line1"])
                for order in db.session.scalars(select(Order).order_by(Order.id))
            ]
            db.session.remove()
        assert placed == [("cancelled", "1 Old Flat Lane"), ("pending", "9 New House Road")]
        assert _chain_stock(shop) == (1, 1)
    finally:
        context.close()


def test_a_saved_address_chosen_hides_the_new_address_fields(
    browser, javascript, shop_with_payments, catalogue
):
    """The new address's fields stood empty under the chosen saved address, and a gift's
    address typed there went nowhere: they show only for "A new address", without
    JavaScript too (found by review)."""
    from elysium.models import Address, User

    shop, base_url = shop_with_payments
    AuthActions(shop, shop.test_client()).create_user("ada@example.com")
    with shop.app_context():
        user_id = db.session.scalar(select(User.id).where(User.email == "ada@example.com"))
        db.session.add(
            Address(
                user_id=user_id,
                full_name="Ada Lovelace",
                line1="1 Piccadilly",
                city="London",
                postcode="W1J 0DA",
                country="GB",
                is_default_shipping=True,
            )
        )
        db.session.commit()
        db.session.remove()
    context = browser.new_context(java_script_enabled=javascript, base_url=base_url)
    context.set_default_timeout(10_000)
    page = context.new_page()
    try:
        sign_in(page)
        page.goto("/shop/aurelia-fine-chain")
        page.get_by_role("button", name="Add to bag").click()
        expect(page.locator("#bag-count")).to_contain_text("1")

        page.goto("/checkout")
        delivery = page.locator(".checkout-delivery")
        expect(delivery.get_by_label("Deliver to")).to_have_value(re.compile(r"^\d+$"))
        expect(delivery.get_by_label("Full name")).to_be_hidden()
        delivery.get_by_label("Deliver to").select_option(label="A new address")
        expect(delivery.get_by_label("Full name")).to_be_visible()

        # A gift's address typed, then her own chosen again: asked which, the typed address is
        # on screen to clear or keep (it was hidden, the refusal asking to clear what she
        # couldn't see; found by review).
        delivery.get_by_label("Full name").fill("Ada Byron")
        delivery.get_by_label("Deliver to").select_option(index=0)
        expect(delivery.get_by_label("Full name")).to_be_hidden()
        page.get_by_role("button", name=re.compile("secure payment", re.I)).click()
        expect(page.get_by_text("You chose a saved address and typed another")).to_be_visible()
        expect(page.locator(".checkout-delivery").get_by_label("Full name")).to_have_value(
            "Ada Byron"
        )
        expect(page.locator(".checkout-delivery").get_by_label("Full name")).to_be_visible()
    finally:
        context.close()
