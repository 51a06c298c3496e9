"""The bag's summary in Chromium, with and without JavaScript: at checkout the total is the
figure that stands out and the gift message box spans the form; the bag empties in one
action, after a confirmation that needs no JavaScript."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.browser.test_bag import configure_and_add, settled
from tests.browser.test_storefront import mark_page, same_page


def font_size(page: Page, selector: str) -> float:
    return page.locator(selector).evaluate("(e) => parseFloat(getComputedStyle(e).fontSize)")


def test_the_checkout_total_stands_out_then_the_bag_empties_after_asking(
    page: Page, catalogue, javascript
):
    page.goto("/shop/aurelia-solitaire-ring")
    configure_and_add(page, javascript)
    page.goto("/checkout")
    expect(page.locator("#checkout-total")).to_have_text("£3,145")
    assert font_size(page, "#checkout-total") > font_size(page, "#checkout-subtotal")
    gift = page.get_by_label("Gift message (optional)")
    form = page.locator("#checkout-form")
    gift_width = gift.bounding_box()["width"]
    email_width = page.get_by_label("Email").bounding_box()["width"]
    form_width = form.evaluate("(f) => f.clientWidth")
    assert abs(gift_width - form_width) <= 1, (gift_width, form_width)
    assert abs(gift_width - email_width) <= 1, (gift_width, email_width)

    page.get_by_role("link", name="Back to your bag").click()
    expect(page).to_have_url(re.compile(r"/cart$"))
    mark_page(page, javascript)
    confirm = page.get_by_role("button", name="Yes, empty my bag")
    expect(confirm).to_be_hidden()  # the first click only asks
    page.get_by_text("Empty bag", exact=True).click()
    expect(page.get_by_text("Remove the piece from your bag?")).to_be_visible()
    expect(page.locator(".bag-line")).to_have_count(1)
    confirm.click()
    expect(page.locator("#messages")).to_contain_text("Emptied your bag: removed 1 piece.")
    expect(page.get_by_text("Your bag is empty.")).to_be_visible()
    expect(page.locator(".bag-line")).to_have_count(0)
    expect(page.locator("#bag-count")).to_have_text("0 items")
    if javascript:
        settled(page)
        assert same_page(page), "with htmx the bag should empty without a reload"
