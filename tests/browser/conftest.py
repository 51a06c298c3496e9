"""Real-browser tests: the app served on 127.0.0.1, Playwright driving Debian's Chromium,
once with JavaScript and once without."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from werkzeug.serving import make_server

from devtools.fake_stripe.server import FakeStripeServer
from elysium.integrations.stripe_gateway import close_client
from tests.conftest import WEBHOOK_SECRET, make_app

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-dev-shm-usage",
]


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/browser/" in str(item.path).replace(os.sep, "/"):
            item.add_marker(pytest.mark.browser)
            # Werkzeug's development server leaves a static file unclosed when the browser
            # drops the connection mid-download (a navigation); that is the test server's
            # housekeeping, not the shop's.
            item.add_marker(pytest.mark.filterwarnings("ignore::ResourceWarning"))
            item.add_marker(
                pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
            )


@pytest.fixture(scope="session")
def live_server(app: Flask) -> Iterator[str]:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=5)
    server.server_close()


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.exists():
        message = "Debian's Chromium is not installed (apt-get install chromium)"
        if os.environ.get("REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(params=["javascript", "no-javascript"])
def javascript(request) -> bool:
    return request.param == "javascript"


@pytest.fixture
def page(browser, javascript: bool, live_server: str):
    """A fresh browser tab; fails the test on any console error (a CSP violation included)."""
    context = browser.new_context(java_script_enabled=javascript, base_url=live_server)
    context.set_default_timeout(10_000)
    tab = context.new_page()
    errors: list[str] = []
    # Chromium logs every 4xx as an error (and htmx one it swaps in); a 422 is how a form says
    # "fix this". A test that expects another adds it here.
    tab.expected_statuses = {422}

    def on_console(message) -> None:
        expected = any(
            f"status of {status}" in message.text or f"Error Code {status} " in message.text
            for status in tab.expected_statuses
        )
        if message.type == "error" and not expected:
            errors.append(message.text)

    tab.on("console", on_console)
    tab.on("pageerror", lambda error: errors.append(str(error)))
    yield tab
    context.close()
    assert errors == [], f"the browser reported errors: {errors}"


@pytest.fixture(scope="module")
def live_fake_stripe():
    """The fake Stripe the live shop pays through (its webhooks go to the live shop)."""
    with FakeStripeServer(webhook_secret=WEBHOOK_SECRET) as fake:
        yield fake


@pytest.fixture(scope="module")
def shop_with_payments(app, live_fake_stripe):
    """The shop with Stripe pointed at the fake, both served on 127.0.0.1."""
    fake = live_fake_stripe
    shop = make_app(
        app.config["SQLALCHEMY_DATABASE_URI"],
        STRIPE_SECRET_KEY="sk_test_elysium_browser",
        STRIPE_API_BASE=fake.base_url,
    )
    server = make_server("127.0.0.1", 0, shop, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base_url = f"http://127.0.0.1:{server.server_port}"
    shop.config["SITE_URL"] = base_url  # Stripe's return pages, once the port is known
    fake.webhook_url = f"{base_url}/webhooks/stripe"
    yield shop, base_url
    server.shutdown()
    thread.join(timeout=5)
    server.server_close()
    close_client(shop)
