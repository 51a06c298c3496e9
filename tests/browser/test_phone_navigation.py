"""The header and the account menu on a 390 px phone, with and without JavaScript: every
navigation item is on screen (none cut off or hidden off the edge of a bar without a cue),
and the signed-in header keeps to one line."""

from __future__ import annotations

from playwright.sync_api import Locator, Page, expect

from tests.browser.test_account import sign_in
from tests.support.databases import SAME_ON_EITHER_DATABASE

pytestmark = SAME_ON_EITHER_DATABASE

PHONE = {"width": 390, "height": 844}
CATEGORIES = ["Rings", "Necklaces", "Earrings", "Bracelets", "All pieces"]
ACCOUNT_PAGES = ["Overview", "Orders", "Details & sign-in", "Addresses", "Commissions"]


def shown_in_full(link: Locator) -> None:
    """The link is on screen, whole: inside the viewport and every box that clips it (a bar
    that scrolls), not faded out by a mask, and nothing else is drawn over it."""
    link.scroll_into_view_if_needed()
    expect(link).to_be_visible()
    problem = link.evaluate(
        """(link) => {
        const box = link.getBoundingClientRect();
        if (box.left < 0 || box.right > innerWidth || box.top < 0 || box.bottom > innerHeight)
            return `outside the screen: ${JSON.stringify(box)}`;
        for (let up = link.parentElement; up; up = up.parentElement) {
            const style = getComputedStyle(up);
            if (style.maskImage && style.maskImage !== "none")
                return `faded by a mask on ${up.className}`;
            if (style.overflowX !== "visible") {
                const clip = up.getBoundingClientRect();
                if (box.left < clip.left - 0.5 || box.right > clip.right + 0.5)
                    return `cut off by ${up.className}`;
            }
        }
        const hit = document.elementFromPoint(box.left + box.width / 2, box.top + box.height / 2);
        return link.contains(hit) ? "" : `covered by ${hit && hit.outerHTML.slice(0, 80)}`;
    }"""
    )
    assert problem == "", f"{link}: {problem}"


def one_line(page: Page) -> None:
    """The wordmark and every header action sit side by side on one row, on screen."""
    # The wordmark's letters, not its link's box (a grid cell that may stretch).
    wordmark = page.locator(".site-header .wordmark").evaluate(
        """(mark) => {
        const range = document.createRange();
        range.selectNodeContents(mark);
        const box = range.getBoundingClientRect();
        return {x: box.x, y: box.y, width: box.width, height: box.height};
    }"""
    )
    actions = [action.bounding_box() for action in page.locator(".header-action").all()]
    assert all(actions)
    middle = wordmark["y"] + wordmark["height"] / 2
    for box in actions:
        assert box["y"] <= middle <= box["y"] + box["height"], (wordmark, box)
        assert box["x"] >= wordmark["x"] + wordmark["width"] - 1, "an action overlaps the wordmark"
        assert box["x"] + box["width"] <= PHONE["width"]
        assert min(box["width"], box["height"]) >= 24, f"tap target too small: {box}"
    lefts = [box["x"] for box in actions]
    assert lefts == sorted(lefts), "the actions should run left to right on one row"


def test_every_navigation_item_is_on_screen_and_the_header_is_one_line(
    page: Page, catalogue, auth, javascript
):
    page.set_viewport_size(PHONE)
    page.goto("/shop?category=bracelet")
    shop_nav = page.get_by_role("navigation", name="Shop")
    for name in CATEGORIES:
        shown_in_full(shop_nav.get_by_role("link", name=name, exact=True))
    one_line(page)

    auth.create_user()
    sign_in(page)
    page.goto("/account")
    # The actions keep their names when only their icons show.
    for name in ("Bespoke", "Search", "Wishlist", "Account"):
        expect(page.get_by_role("link", name=name, exact=True)).to_be_visible()
    expect(page.locator(".bag-link")).to_have_accessible_name("Bag 0 items")
    one_line(page)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    for name in CATEGORIES:
        shown_in_full(shop_nav.get_by_role("link", name=name, exact=True))
    account_nav = page.get_by_role("navigation", name="Your account")
    for name in ACCOUNT_PAGES:
        shown_in_full(account_nav.get_by_role("link", name=name, exact=True))

    account_nav.get_by_role("link", name="Addresses").click()
    expect(page.get_by_role("heading", level=1)).to_be_visible()
    current = page.get_by_role("navigation", name="Your account").get_by_role(
        "link", name="Addresses"
    )
    expect(current).to_have_attribute("aria-current", "page")
    shown_in_full(current)


NARROW = {"width": 320, "height": 640}


def test_a_signed_in_shoppers_pages_fit_a_320_px_screen(page: Page, catalogue, auth, javascript):
    """Below 355 px the signed-in header (the wordmark and five actions) was wider than the
    screen: every page scrolled sideways and the bag was cut off at the edge; the account's
    details were split mid-word into a thin column (found by review)."""
    auth.create_user()
    sign_in(page)
    page.set_viewport_size(NARROW)
    for path in ("/", "/shop", "/shop/aurelia-solitaire-ring", "/cart", "/wishlist", "/account"):
        page.goto(path)
        assert page.evaluate("document.documentElement.scrollWidth") <= NARROW["width"], path
        shown_in_full(page.locator(".bag-link"))
    for value in page.locator(".details dd").all():
        box = value.bounding_box()
        assert box is not None
        assert box["width"] >= NARROW["width"] / 2, f"a thin column: {box}"
