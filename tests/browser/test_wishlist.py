"""Keep pieces in the wishlist, in Chromium, with and without JavaScript."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.browser.test_account import sign_in
from tests.browser.test_storefront import mark_page, same_page
from tests.conftest import PASSWORD
from tests.test_wishlist import save_directly

RING = "/shop/aurelia-solitaire-ring"


def choose(page: Page, javascript: bool, *labels: str) -> None:
    """Pick configurator choices; without JavaScript the page is reloaded with them."""
    for label in labels:
        page.locator("label.choice", has_text=label).click()
    if not javascript:
        page.get_by_role("button", name="Update price").click()
    expect(page.locator(".availability")).to_be_visible()


def test_save_a_configured_piece_from_the_product_page_then_remove_it(
    page: Page, auth, catalogue, javascript
):
    auth.create_user()
    sign_in(page)
    page.goto(RING)
    mark_page(page, javascript)
    choose(page, javascript, "18k rose gold", "0.50 ct")
    expect(page.locator(".availability")).to_have_text("Only 2 left")
    # Typed, then the heart pressed at once: the heart saves what the configurator shows.
    page.get_by_label("Engraving").fill("Always")
    if not javascript:
        page.get_by_role("button", name="Update price").click()

    page.get_by_role("button", name="Save to wishlist").click()
    heart = page.get_by_role("button", name="Remove from wishlist")
    expect(heart).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#messages")).to_have_text(
        "Aurelia Solitaire Ring is saved to your wishlist."
    )
    if javascript:
        assert same_page(page), "with htmx the heart should flip in place"
        expect(heart).to_be_focused()
    else:
        expect(page).to_have_url(re.compile(r"metal=rose-gold"))

    # The heart stands for this exact configuration: another metal is not saved.
    choose(page, javascript, "18k white gold")
    expect(page.get_by_role("button", name="Save to wishlist")).to_have_attribute(
        "aria-pressed", "false"
    )
    choose(page, javascript, "18k rose gold")
    expect(heart).to_have_attribute("aria-pressed", "true")

    page.get_by_role("link", name="Wishlist").click()
    expect(page).to_have_url(re.compile(r"/wishlist$"))
    item = page.locator(".wishlist-item")
    expect(item).to_have_count(1)
    expect(item).to_contain_text("18k rose gold with 0.50 ct, G colour, VS1, engraved “Always”")
    expect(item).to_contain_text("£3,145")
    expect(item).to_contain_text("Only 2 left")
    mark_page(page, javascript)
    item.get_by_role("button", name=re.compile("^Remove")).click()
    expect(page.get_by_text("Your wishlist is empty.")).to_be_visible()
    expect(page.locator("#messages")).to_have_text(
        "Aurelia Solitaire Ring is removed from your wishlist."
    )
    if javascript:
        assert same_page(page)


def test_a_card_heart_toggles_on_the_listing(page: Page, auth, catalogue, javascript):
    auth.create_user()
    sign_in(page)
    page.goto("/shop?category=ring")
    mark_page(page, javascript)
    card = page.locator(".product-card", has_text="Aurelia Solitaire Ring")
    card.get_by_role("button", name="Save to wishlist: Aurelia Solitaire Ring").click()
    pressed = card.get_by_role("button", name="Remove from wishlist: Aurelia Solitaire Ring")
    expect(pressed).to_have_attribute("aria-pressed", "true")
    expect(page).to_have_url(re.compile(r"/shop\?category=ring$"))
    expect(page.locator(".product-card button[aria-pressed=true]")).to_have_count(1)
    pressed.click()
    expect(card.get_by_role("button", name=re.compile("^Save to wishlist"))).to_have_attribute(
        "aria-pressed", "false"
    )
    expect(page.locator("#messages")).to_contain_text("removed from your wishlist")
    if javascript:
        assert same_page(page)


def test_a_guest_pressing_the_heart_signs_in_and_comes_back_to_the_piece(
    page: Page, auth, catalogue, javascript
):
    auth.create_user()
    page.goto(RING)
    choose(page, javascript, "Platinum")
    page.get_by_role("button", name="Save to wishlist").click()
    expect(page).to_have_url(re.compile(r"/auth/login\?next="))
    page.get_by_label("Email").fill("ada@example.com")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page).to_have_url(re.compile(r"/shop/aurelia-solitaire-ring\?metal=platinum"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Aurelia Solitaire Ring")
    expect(page.get_by_role("button", name="Save to wishlist")).to_be_visible()


def test_move_a_saved_piece_to_the_bag(page: Page, app, auth, catalogue, javascript):
    user_id = auth.create_user()
    choices = {"metal": "rose-gold", "diamond": "0.50ct", "size": "7"}
    save_directly(app, user_id, "aurelia-solitaire-ring", choices)
    save_directly(app, user_id, "aurelia-bangle")
    sign_in(page)
    page.goto("/wishlist")
    expect(page.locator(".wishlist-item")).to_have_count(2)
    mark_page(page, javascript)
    ring = page.locator(".wishlist-item", has_text="Aurelia Solitaire Ring")
    ring.get_by_role("button", name=re.compile("^Move to bag")).click()
    expect(page.locator(".wishlist-item")).to_have_count(1)
    expect(page.locator("#messages")).to_contain_text("Aurelia Solitaire Ring")
    expect(page.locator("#bag-count")).to_contain_text("1")
    if javascript:
        assert same_page(page), "with htmx the item should leave the list without a reload"
