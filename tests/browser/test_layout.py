"""Pages keep the shop's margins and measure, at a phone's width and a desktop's (found by
review: checkout and a quote sat a second gutter further in than the header, and a quote's
sums ran the width of the page, a label at one end and its figure 1,100 px away)."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.support.databases import SAME_ON_EITHER_DATABASE
from tests.support.staff import staff_client
from tests.test_quotes import make_lead, quote_link, send

pytestmark = SAME_ON_EITHER_DATABASE

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}


def left_of(page: Page, selector: str) -> float:
    return page.locator(selector).first.bounding_box()["x"]


def space_between(page: Page, upper: str, lower: str) -> float:
    """From the bottom of ``upper`` to the top of ``lower``, measured at one moment (a swap's
    focus may scroll the page between two measurements)."""
    return page.evaluate(
        """([upper, lower]) => document.querySelector(lower).getBoundingClientRect().top
            - document.querySelector(upper).getBoundingClientRect().bottom""",
        [upper, lower],
    )


def test_checkout_starts_at_the_shops_margin(page: Page, catalogue):
    page.goto("/shop/aurelia-fine-chain")
    page.get_by_role("button", name="Add to bag").click()
    expect(page.locator("#bag-count")).to_have_text("1 item")
    for viewport in (PHONE, DESKTOP):
        page.set_viewport_size(viewport)
        page.goto("/checkout")
        assert left_of(page, "#checkout-form") == left_of(page, ".footer-brand")


def test_a_quote_is_one_narrow_column_at_the_shops_margin(page: Page, app, catalogue):
    send(staff_client(app), make_lead(app, user=False))
    page.set_viewport_size(DESKTOP)
    page.goto(quote_link(app))
    sums = page.locator(".quote-page__sums").bounding_box()
    assert sums["width"] <= 640
    page.set_viewport_size(PHONE)
    assert left_of(page, ".quote-page__sums") == left_of(page, ".footer-brand")


def test_a_checkout_lines_words_stay_beside_its_picture(page: Page, catalogue):
    """The summary of the piece and its "made to order" note ran on under the picture."""
    page.set_viewport_size(PHONE)
    page.goto("/shop/aurelia-signet-ring")
    page.get_by_label("Ring size (US)").select_option("6.5")
    page.get_by_role("button", name="Add to bag").click()
    expect(page.locator("#bag-count")).to_have_text("1 item")
    page.goto("/checkout")
    line = page.locator(".checkout__line")
    picture = line.locator(".line-art").bounding_box()
    expect(line.locator("p")).to_have_count(4)
    for words in line.locator("p").all():
        assert words.bounding_box()["x"] >= picture["x"] + picture["width"]


def test_a_forms_errors_are_set_apart_from_what_follows_them(page: Page):
    """The bespoke form's own error touched the first label under it, and each field's error
    the next field's label."""
    page.set_viewport_size(PHONE)
    page.goto("/bespoke")
    page.get_by_role("button", name="Send my request").click()
    expect(page.locator("#error-bespoke-name")).to_have_text("Please tell us your name.")
    assert space_between(page, ".bespoke > .notice--error", "label[for=bespoke-name]") >= 16
    assert space_between(page, "#error-bespoke-name", "label[for=bespoke-email]") >= 12


def test_checkouts_field_errors_are_set_apart_from_the_next_field(
    browser, javascript, shop_with_payments, catalogue
):
    """In checkout's fieldsets the fields had nothing between them but the line kept for an
    error: "Enter the full name." sat against the "Company" label under it."""
    _, base_url = shop_with_payments
    context = browser.new_context(java_script_enabled=javascript, base_url=base_url, viewport=PHONE)
    context.set_default_timeout(10_000)
    page = context.new_page()
    try:
        page.goto("/shop/aurelia-fine-chain")
        page.get_by_role("button", name="Add to bag").click()
        expect(page.locator("#bag-count")).to_have_text("1 item")
        page.goto("/checkout")
        page.get_by_role("button", name="Continue to secure payment").click()
        expect(page.locator("#error-shipping-full_name")).to_have_text("Enter the full name.")
        gap = space_between(page, "#error-shipping-full_name", "label[for=shipping-company]")
        assert gap >= 12
    finally:
        context.close()
