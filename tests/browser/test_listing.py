"""Filtering the listing in Chromium, with and without JavaScript: everything that describes
the choice (heading, title, the header nav's current item, "Clear all", the results) changes
together, and going back never shows a filter that disagrees with the pieces."""

from __future__ import annotations

import re

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, expect

from tests.browser.test_storefront import mark_page, same_page


def nav_link(page: Page, name: str):
    return page.get_by_role("navigation", name="Shop").get_by_role("link", name=name, exact=True)


def back(page: Page) -> None:
    """The browser's Back button. With htmx the page reloads itself from the server (no
    history cache), which would abort Playwright's own wait for the navigation. Without
    JavaScript the page may be gone before the evaluation returns: that is the navigation
    asked for."""
    try:
        page.evaluate("history.back()")
    except PlaywrightError as error:
        if "Execution context was destroyed" not in str(error):
            raise


def test_choosing_a_category_updates_the_whole_page_and_back_agrees(
    page: Page, catalogue, javascript
):
    page.goto("/shop")
    expect(page.get_by_role("heading", level=1)).to_have_text("All pieces")
    expect(nav_link(page, "All pieces")).to_have_attribute("aria-current", "page")
    expect(page.get_by_role("link", name="Clear all")).to_have_count(0)
    mark_page(page, javascript)

    page.get_by_label("Category").focus()
    page.get_by_label("Category").select_option("ring")
    if not javascript:
        page.get_by_role("button", name="Show pieces").click()
    expect(page.locator("#results-count")).to_have_text("7 pieces")
    expect(page).to_have_url(re.compile(r"category=ring"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Rings")
    expect(page).to_have_title("Rings — Fine jewellery | ELYSIUM")
    expect(nav_link(page, "Rings")).to_have_attribute("aria-current", "page")
    expect(nav_link(page, "All pieces")).not_to_have_attribute("aria-current", re.compile(".*"))
    expect(page.get_by_role("link", name="Clear all filters")).to_be_visible()
    if javascript:
        assert same_page(page), "with htmx the listing should update without a reload"
        # The filters were swapped with everything else; the keyboard stays where it was.
        expect(page.get_by_label("Category")).to_be_focused()

    # A second filter narrows the rings: "Rings" is still where the shopper is, but the page
    # is no longer all of it.
    page.get_by_label("Metal").select_option("platinum")
    if not javascript:
        page.get_by_role("button", name="Show pieces").click()
    expect(page).to_have_url(re.compile(r"metal=platinum"))
    expect(nav_link(page, "Rings")).to_have_attribute("aria-current", "true")
    expect(page.get_by_role("heading", level=1)).to_have_text("Rings")

    back(page)
    expect(page).to_have_url(re.compile(r"/shop\?.*category=ring"))
    expect(page.get_by_label("Metal")).to_have_value("")
    expect(page.locator("#results-count")).to_have_text("7 pieces")
    back(page)
    expect(page).to_have_url(re.compile(r"/shop$"))
    expect(page.locator("#results-count")).to_have_text("24 pieces")
    expect(page.get_by_role("heading", level=1)).to_have_text("All pieces")
    expect(page).to_have_title("All pieces — Fine jewellery | ELYSIUM")
    expect(page.get_by_label("Category")).to_have_value("")
    expect(page.get_by_label("Metal")).to_have_value("")
    expect(nav_link(page, "All pieces")).to_have_attribute("aria-current", "page")

    # "Clear all" from a filtered page comes back to every piece.
    nav_link(page, "Earrings").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Earrings")
    page.get_by_role("link", name="Clear all filters").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("All pieces")
    expect(page.get_by_label("Category")).to_have_value("")
