"""The house edits a piece in its studio and the shop follows: a live shop fed by the Sanity
stand-in, a signed webhook for the edit, and the product page shows the new name and price,
with the piece's picture from Sanity's CDN (let in by the CSP, or the page would log a
violation)."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator

import pytest
from flask import Flask
from playwright.sync_api import Page, Route, expect
from werkzeug.serving import make_server

from devtools.fake_sanity import FakeSanityServer
from elysium.money import format_money
from tests.conftest import make_app

RING = "product-aurelia-solitaire-ring"
RING_PAGE = "/shop/aurelia-solitaire-ring"
# Sanity's CDN is not reachable offline: the browser gets a 1x1 PNG for every image on it.
PIXEL = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)


@pytest.fixture
def javascript() -> bool:
    """The sync and the webhook are the server's; one run with JavaScript is enough."""
    return True


@pytest.fixture
def studio() -> Iterator[FakeSanityServer]:
    with FakeSanityServer() as server:
        yield server


@pytest.fixture
def synced_shop(app: Flask, studio: FakeSanityServer) -> Iterator[tuple[Flask, str]]:
    """The shop pointed at the stand-in, served on 127.0.0.1, after a first sync."""
    shop = make_app(
        app.config["SQLALCHEMY_DATABASE_URI"],
        **studio.settings(),
        SANITY_TIMEOUT_SECONDS=2,
        SANITY_MAX_RETRIES=1,
        SANITY_RETRY_BACKOFF_SECONDS=0.01,
    )
    result = shop.test_cli_runner().invoke(args=["catalog", "sync"])
    assert result.exit_code == 0, result.output
    server = make_server("127.0.0.1", 0, shop, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield shop, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=5)
    server.server_close()


def serve_cdn_offline(page: Page) -> list[str]:
    asked: list[str] = []

    def answer(route: Route) -> None:
        asked.append(route.request.url)
        route.fulfill(status=200, content_type="image/png", body=PIXEL)

    page.route("https://cdn.sanity.io/**", answer)
    return asked


def test_an_edit_in_the_studio_shows_on_the_product_page_after_its_webhook(
    studio, synced_shop, page: Page
):
    # ``page`` comes last so it is closed first: a shop stopped under an open page resets
    # whatever the page still asks of it (its "Recently viewed" loads after the page does),
    # and the browser reports that as an error.
    _, base_url = synced_shop
    asked = serve_cdn_offline(page)
    page.goto(base_url + RING_PAGE)
    expect(page.locator("h1.product__name")).to_have_text("Aurelia Solitaire Ring")
    picture = page.locator("#product-art img")
    expect(picture).to_have_attribute(
        "src", studio.documents[RING]["images"][0]["url"] + "?w=600&auto=format"
    )
    page.wait_for_function(
        "() => { const img = document.querySelector('#product-art img');"
        " return img && img.complete && img.naturalWidth > 0; }"
    )
    assert asked
    assert all(url.startswith("https://cdn.sanity.io/images/") for url in asked)

    studio.edit(RING, title="Aurelia Solitaire, renamed", basePrice=199000)
    assert studio.deliver_webhook(base_url + "/webhooks/sanity", RING) == 202

    # The re-sync runs after the webhook's response: reload until the page shows it.
    deadline = time.monotonic() + 10
    name = page.locator("h1.product__name")
    while time.monotonic() < deadline:
        page.goto(base_url + RING_PAGE)
        if name.inner_text() == "Aurelia Solitaire, renamed":
            break
        time.sleep(0.2)
    expect(name).to_have_text("Aurelia Solitaire, renamed")
    expect(page.locator(".product__from")).to_contain_text(format_money(199000, "GBP"))
