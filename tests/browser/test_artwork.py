"""The picture follows the configuration, in Chromium, with and without JavaScript: choosing
a metal and a diamond changes the product page's picture with the price, the picture loads
under the shop's Content-Security-Policy, and the bag shows the piece as it was chosen."""

from __future__ import annotations

import re
import time

from playwright.sync_api import Page, expect

from tests.support.databases import SAME_ON_EITHER_DATABASE

pytestmark = SAME_ON_EITHER_DATABASE

RING = "aurelia-solitaire-ring"


def expect_loaded(page: Page, css: str) -> None:
    """The image has arrived and been decoded (a CSP refusal or a 404 never gets there).

    Polled from here, not with ``page.wait_for_function``: with JavaScript off that checks
    once and never again, so an image still loading failed the test.
    """
    deadline = time.monotonic() + 10
    while not page.evaluate(
        "css => { const img = document.querySelector(css);"
        " return Boolean(img && img.complete && img.naturalWidth > 0); }",
        css,
    ):
        assert time.monotonic() < deadline, f"{css} never loaded"
        time.sleep(0.05)


def test_the_picture_follows_the_chosen_metal_and_diamond(page: Page, catalogue, javascript):
    page.goto(f"/shop/{RING}")
    picture = page.locator(".product__art img")
    expect(picture).to_have_attribute("src", re.compile(rf"^/art/{RING}/yellow-gold/0\.30ct\.svg"))
    expect(picture).to_have_attribute(
        "alt", "Aurelia Solitaire Ring in yellow gold with a 0.30 ct diamond"
    )
    expect_loaded(page, ".product__art img")

    page.locator("label.choice", has_text="Platinum").click()
    if not javascript:
        page.get_by_role("button", name="Update price").click()
    expect(page.locator(".price-total__amount")).to_have_text("£2,300")
    expect(picture).to_have_attribute("src", re.compile(rf"^/art/{RING}/platinum/0\.30ct\.svg"))
    expect(picture).to_have_attribute(
        "alt", "Aurelia Solitaire Ring in platinum with a 0.30 ct diamond"
    )
    expect_loaded(page, ".product__art img")

    page.locator("label.choice", has_text="1.00 ct").click()
    if not javascript:
        page.get_by_role("button", name="Update price").click()
    expect(picture).to_have_attribute("src", re.compile(rf"^/art/{RING}/platinum/1\.00ct\.svg"))
    expect(picture).to_have_attribute(
        "alt", "Aurelia Solitaire Ring in platinum with a 1.00 ct diamond"
    )
    expect_loaded(page, ".product__art img")


def test_the_bag_line_shows_the_piece_as_configured(page: Page, catalogue, javascript):
    page.goto(f"/shop/{RING}")
    page.locator("label.choice", has_text="18k rose gold").click()
    page.locator("label.choice", has_text="0.50 ct").click()
    page.get_by_label("Ring size (US)").select_option("6.5")
    page.get_by_role("button", name="Add to bag").click()
    expect(page.locator("#messages")).to_contain_text("to your bag")

    page.goto("/cart")
    line_picture = page.locator(".bag-line__art img")
    expect(line_picture).to_have_attribute(
        "src", re.compile(rf"^/art/{RING}/rose-gold/0\.50ct\.svg")
    )
    expect(line_picture).to_have_attribute(
        "alt", "Aurelia Solitaire Ring in rose gold with a 0.50 ct diamond"
    )
    expect_loaded(page, ".bag-line__art img")
