"""Browsing memory in Chromium, with and without JavaScript: the second piece's page shows the
first under "Recently viewed" (htmx fetches it once it scrolls into view; without JavaScript it
is in the page), and the bag shows both."""

from __future__ import annotations

from playwright.sync_api import Page, expect

# Headless Chromium says "HeadlessChrome", which the shop rightly takes for a robot; a
# shopper's Chromium doesn't.
SHOPPER = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)


def recently_viewed(page: Page):
    return page.locator("#recently-viewed .recently-viewed__name")


def test_the_second_piece_shows_the_first_under_recently_viewed(page: Page, catalogue):
    page.set_extra_http_headers({"User-Agent": SHOPPER})
    page.goto("/shop/aurelia-solitaire-ring")
    expect(page.get_by_role("heading", level=1)).to_have_text("Aurelia Solitaire Ring")

    page.goto("/shop/lumiere-halo-ring")
    expect(page.get_by_role("heading", level=1)).to_have_text("Lumière Halo Ring")
    page.keyboard.press("End")  # down to the foot of the page, where the section is
    expect(page.get_by_role("heading", name="Recently viewed")).to_be_visible()
    expect(recently_viewed(page)).to_have_text(["Aurelia Solitaire Ring"])

    page.goto("/cart")
    page.keyboard.press("End")
    expect(recently_viewed(page)).to_have_text(["Lumière Halo Ring", "Aurelia Solitaire Ring"])
    page.locator("#recently-viewed").get_by_role("link", name="Aurelia Solitaire Ring").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Aurelia Solitaire Ring")
