"""The keyboard never loses its place: after each htmx swap the focus is on the updated region
(or the first field with an error), never dropped to <body>, and the live region says what
changed. Driven with the keyboard only; without JavaScript every action is a full page load."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Locator, Page, expect

from elysium.account.routes import ADDRESS_REFUSED
from tests.browser.test_account import sign_in
from tests.browser.test_recently_viewed import SHOPPER
from tests.support.databases import SAME_ON_EITHER_DATABASE
from tests.test_wishlist import save_directly

pytestmark = SAME_ON_EITHER_DATABASE

RING = "/shop/aurelia-solitaire-ring"
CHAIN = "/shop/aurelia-fine-chain"


@pytest.fixture
def javascript() -> bool:
    """Only htmx swaps can drop the focus."""
    return True


def tab_to(page: Page, target: Locator, presses: int = 60) -> None:
    """Press Tab until ``target`` has the focus, as a keyboard user would."""
    for _ in range(presses):
        if target.evaluate("element => element === document.activeElement"):
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"Tab never reached {target}")


def settled(page: Page) -> None:
    expect(page.locator(".htmx-request, .htmx-settling, .htmx-added")).to_have_count(0)


def focus_is_in(page: Page, selector: str) -> str:
    """Wait until the focus is on or inside ``selector`` (never <body>); what it is on."""
    page.wait_for_function(
        """selector => {
            const active = document.activeElement;
            return active && active !== document.body && active.closest(selector) !== null;
        }""",
        arg=selector,
    )
    return page.evaluate(
        "() => document.activeElement.getAttribute('aria-label') || "
        "document.activeElement.textContent.trim().replace(/\\s+/g, ' ')"
    )


def focused(page: Page) -> Locator:
    return page.locator("*:focus")


def test_add_to_bag_refused_then_accepted_keeps_the_focus(page: Page, catalogue):
    page.goto(RING)
    tab_to(page, page.get_by_role("button", name="Add to bag"))
    page.keyboard.press("Enter")
    expect(page.locator("#messages")).to_contain_text("Choose your ring size.")
    # The first field with an error takes the focus: the ring size, above the button.
    expect(page.get_by_label("Ring size (US)")).to_be_focused()

    page.keyboard.press("ArrowDown")  # the first size
    expect(page.locator(".price-total__amount")).to_be_visible()
    settled(page)
    tab_to(page, page.get_by_role("button", name="Add to bag"))
    page.keyboard.press("Enter")
    expect(page.locator("#messages")).to_contain_text("Added Aurelia Solitaire Ring")
    assert "Added Aurelia Solitaire Ring" in focus_is_in(page, ".add-to-bag")
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="View your bag")).to_be_focused()


def add_directly(page: Page, path: str) -> None:
    """Put a piece in the bag (setup, not under test)."""
    page.goto(path)
    if page.get_by_label("Ring size (US)").count():
        page.get_by_label("Ring size (US)").select_option("6.5")
    page.get_by_role("button", name="Add to bag").click()
    expect(page.locator("#messages")).to_contain_text("to your bag")
    settled(page)


def test_changing_a_quantity_and_removing_lines_keeps_the_focus_in_the_bag(page: Page, catalogue):
    add_directly(page, RING)
    add_directly(page, CHAIN)
    page.goto("/cart")

    tab_to(page, page.get_by_label("Quantity of Aurelia Fine Chain"))
    page.keyboard.press("ArrowDown")
    expect(page.locator("#messages")).to_contain_text("Aurelia Fine Chain: quantity 2.")
    settled(page)
    expect(page.get_by_label("Quantity of Aurelia Fine Chain")).to_be_focused()
    expect(page.locator("#bag-count")).to_have_text("3 items")

    tab_to(page, page.get_by_role("button", name="Remove Aurelia Solitaire Ring"))
    page.keyboard.press("Enter")
    expect(page.locator("#messages")).to_have_text("Removed Aurelia Solitaire Ring from your bag.")
    assert focus_is_in(page, "#bag") == "Pieces in your bag"
    page.keyboard.press("Tab")  # on to the remaining line, not the footer
    expect(focused(page)).to_have_text("Aurelia Fine Chain")

    tab_to(page, page.get_by_role("button", name="Remove Aurelia Fine Chain"))
    page.keyboard.press("Space")
    expect(page.locator("#messages")).to_have_text("Removed Aurelia Fine Chain from your bag.")
    assert focus_is_in(page, "#bag") == "Your bag is empty."
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Explore the collection")).to_be_focused()


def type_into(page: Page, field: Locator, text: str) -> None:
    tab_to(page, field)
    page.keyboard.press("ControlOrMeta+a")
    page.keyboard.type(text)


def test_refusing_and_saving_an_address_keeps_the_focus(page: Page, auth):
    auth.create_user()
    sign_in(page)
    page.goto("/account/addresses")
    form = page.locator("#address-form")
    type_into(page, form.get_by_label("Full name"), "Ada Lovelace")
    type_into(page, form.get_by_label("Address line 1"), "12 St James's Square")
    type_into(page, form.get_by_label("Town or city"), "London")
    type_into(page, form.get_by_label("Postcode"), "nonsense")
    tab_to(page, form.get_by_role("button", name="Add address"))
    page.keyboard.press("Enter")
    expect(form.get_by_text("Enter a postcode like SW1A 1AA.")).to_be_visible()
    expect(form.get_by_label("Postcode")).to_be_focused()
    expect(page.locator("#messages")).to_have_text(ADDRESS_REFUSED)

    page.keyboard.press("ControlOrMeta+a")
    page.keyboard.type("SW1Y 4JH")
    tab_to(page, form.get_by_role("button", name="Add address"))
    page.keyboard.press("Enter")
    expect(page.locator("#messages")).to_have_text("Address added.")
    assert "Ada Lovelace" in focus_is_in(page, "#address-list article.address-card")

    tab_to(page, page.get_by_role("link", name=re.compile("^Edit Ada Lovelace")))
    page.keyboard.press("Enter")
    editing = page.locator("form.address-card--editing")
    expect(editing.get_by_label("Full name")).to_be_focused()
    settled(page)
    type_into(page, editing.get_by_label("Postcode"), "nonsense")
    page.keyboard.press("Enter")
    expect(editing.get_by_text("Enter a postcode like SW1A 1AA.")).to_be_visible()
    expect(editing.get_by_label("Postcode")).to_be_focused()
    expect(page.locator("#messages")).to_have_text(ADDRESS_REFUSED)
    settled(page)

    page.keyboard.press("ControlOrMeta+a")
    page.keyboard.type("SW1A 2AA")
    page.keyboard.press("Enter")
    expect(page.locator("#messages")).to_have_text("Address saved.")
    assert "SW1A 2AA" in focus_is_in(page, "#address-list article.address-card")

    tab_to(page, page.get_by_role("button", name=re.compile("^Delete Ada Lovelace")))
    page.keyboard.press("Enter")
    expect(page.locator("#messages")).to_have_text("Address deleted.")
    assert focus_is_in(page, "#saved-heading") == "Saved addresses"


def test_moving_saved_pieces_to_the_bag_keeps_the_focus_in_the_wishlist(
    page: Page, app, auth, catalogue
):
    user_id = auth.create_user()
    save_directly(app, user_id, "aurelia-solitaire-ring", {"size": "7"})
    save_directly(app, user_id, "aurelia-fine-chain")
    sign_in(page)
    page.goto("/wishlist")
    expect(page.locator(".wishlist-item")).to_have_count(2)

    tab_to(page, page.get_by_role("button", name=re.compile("^Move to bag.*Aurelia Fine Chain")))
    page.keyboard.press("Enter")
    expect(page.locator("#messages")).to_contain_text("Aurelia Fine Chain")
    expect(page.locator(".wishlist-item")).to_have_count(1)
    focus_is_in(page, "main")
    assert page.evaluate("document.activeElement.matches('[data-focus-after-swap]')")

    tab_to(page, page.get_by_role("button", name=re.compile("^Move to bag.*Aurelia Solitaire")))
    page.keyboard.press("Enter")
    expect(page.locator("#messages")).to_contain_text("Aurelia Solitaire Ring")
    assert focus_is_in(page, "#wishlist-items") == "Your wishlist is empty."
    expect(page.locator("#bag-count")).to_contain_text("2")


def test_scrolling_down_to_recently_viewed_leaves_the_page_and_the_focus_where_they_are(
    page: Page, catalogue
):
    """On a phone, the bag jumped back to its lines (drawn in a focus ring) as the shopper
    scrolled down to "Recently viewed": the slot's swap, which nobody's focus was in, gave the
    focus to the mark before it (found by review)."""
    page.set_extra_http_headers({"User-Agent": SHOPPER})
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(RING)
    add_directly(page, CHAIN)
    page.goto("/cart")

    page.mouse.wheel(0, 5000)
    expect(page.locator("#recently-viewed .recently-viewed__name")).to_have_text(
        ["Aurelia Fine Chain", "Aurelia Solitaire Ring"]
    )
    settled(page)
    expect(page.locator("body")).to_be_focused()
    assert page.evaluate("window.scrollY") > 500
