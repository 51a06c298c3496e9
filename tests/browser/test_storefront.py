"""Browse, filter, open a piece and configure it, in Chromium, with and without JavaScript."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.support.databases import SAME_ON_EITHER_DATABASE

# Browsing, filtering and searching as a browser does them; the answers' SQL is tested on both
# databases by the shop's own tests (tests/test_shop.py).
pytestmark = SAME_ON_EITHER_DATABASE


def mark_page(page: Page, javascript: bool) -> None:
    """Tag the window so we can tell a page that updated in place from one that reloaded."""
    if javascript:
        page.evaluate("window.__elysiumMarker = 'still here'")


def same_page(page: Page) -> bool:
    return page.evaluate("window.__elysiumMarker") == "still here"


def test_browse_from_home_to_a_collection_to_a_piece(page: Page, catalogue, javascript):
    page.goto("/")
    expect(page.get_by_role("heading", name="The collections")).to_be_visible()
    page.get_by_role("link", name=re.compile("^Ondine")).first.click()
    expect(page).to_have_url(re.compile("/collections/ondine$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Ondine")
    page.get_by_role("link", name=re.compile("Ondine Wave Ring")).click()
    expect(page).to_have_url(re.compile("/shop/ondine-wave-ring$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Ondine Wave Ring")
    expect(page.locator(".availability")).to_have_text("In stock")


def test_filter_the_listing(page: Page, catalogue, javascript):
    page.goto("/shop")
    expect(page.locator("#results-count")).to_have_text("24 pieces")
    mark_page(page, javascript)
    page.get_by_label("Category").select_option("ring")
    if not javascript:
        page.get_by_role("button", name="Show pieces").click()
    expect(page.locator("#results-count")).to_have_text("7 pieces")
    expect(page).to_have_url(re.compile(r"category=ring"))
    expect(page.locator(".product-card")).to_have_count(7)

    page.get_by_label("Sort by").select_option("price-desc")
    if not javascript:
        page.get_by_role("button", name="Show pieces").click()
    expect(page).to_have_url(re.compile(r"sort=price-desc"))
    prices = page.locator(".product-card__price").all_inner_texts()
    amounts = [int(re.sub(r"\D", "", price)) for price in prices]
    assert amounts == sorted(amounts, reverse=True)
    if javascript:
        assert same_page(page), "with htmx the results should update without a reload"


def test_search_and_paginate(page: Page, catalogue, javascript):
    page.goto("/shop")
    page.get_by_role("link", name="Next").click()
    expect(page.locator(".pagination__status")).to_have_text("Page 2 of 2")
    expect(page).to_have_url(re.compile(r"page=2"))
    page.get_by_label("Search").fill("halo")
    page.get_by_label("Search").press("Enter")
    expect(page.locator("#results-count")).to_have_text("1 piece for “halo”")
    expect(page.locator(".product-card__name")).to_have_text(["Lumière Halo Ring"])


def test_configure_a_ring_and_see_the_price_change(page: Page, catalogue, javascript):
    page.goto("/shop/aurelia-solitaire-ring")
    total = page.locator(".price-total__amount")
    expect(total).to_have_text("£1,850")
    mark_page(page, javascript)

    page.locator("label.choice", has_text="Platinum").click()
    if not javascript:
        page.get_by_role("button", name="Update price").click()
    expect(total).to_have_text("£2,300")
    expect(page.locator(".availability")).to_contain_text("Sold out in platinum")

    page.locator("label.choice", has_text="18k rose gold").click()
    page.locator("label.choice", has_text="0.50 ct").click()
    page.get_by_label("Ring size (US)").select_option("6.5")
    page.get_by_label("Engraving").fill("Always, Amélie")
    if not javascript:
        page.get_by_role("button", name="Update price").click()
    expect(total).to_have_text("£3,145")
    expect(page.locator(".breakdown")).to_contain_text("Engraving")
    expect(page.locator(".availability")).to_have_text("Only 2 left")
    if javascript:
        assert same_page(page)
        expect(page).to_have_url(re.compile(r"engraving=Always"))


def test_an_engraving_that_cannot_be_cut_is_explained_next_to_the_field(
    page: Page, catalogue, javascript
):
    page.goto("/shop/aurelia-solitaire-ring")
    page.get_by_label("Engraving").fill("I <3 you")
    if javascript:
        page.get_by_label("Engraving").press("Tab")
    else:
        page.get_by_role("button", name="Update price").click()
    error = page.locator("#error-engraving")
    expect(error).to_contain_text("“<” can't be engraved")
    expect(page.get_by_label("Engraving")).to_have_value("I <3 you")
    expect(page.locator(".price-pending")).to_be_visible()

    page.get_by_label("Engraving").fill("I love you")
    if javascript:
        page.get_by_label("Engraving").press("Tab")
    else:
        page.get_by_role("button", name="Update price").click()
    expect(error).to_be_empty()
    expect(page.locator(".price-total__amount")).to_have_text("£1,945")
