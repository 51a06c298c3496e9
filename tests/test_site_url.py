"""SITE_URL and TRUSTED_HOSTS: every absolute link is built on the shop's own address, never on
the Host header a request came with, and requests naming an unknown host are refused."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import authlib.integrations.flask_client  # noqa: F401  (see tests/test_google_sign_in.py)
import pytest
from flask import Flask

from devtools.fake_stripe import FakeStripeServer
from elysium import create_app
from elysium.config import ConfigurationError
from elysium.integrations.stripe_gateway import close_client
from elysium.urls import absolute_url
from tests.conftest import WEBHOOK_SECRET, AuthActions, ShopClient, make_app, sent_emails
from tests.html import Page, text_of
from tests.support.oidc_provider import OIDCProvider

SITE_URL = "https://www.elysium.example"
EVIL = "evil.example"
REFUSED = "This request could not be understood"


@pytest.fixture(scope="module")
def shop(app: Flask) -> Flask:
    """The shop at SITE_URL, reached in these tests through its other trusted hosts."""
    return make_app(app.config["SQLALCHEMY_DATABASE_URI"], SITE_URL=SITE_URL)


@pytest.fixture
def browser(shop: Flask) -> ShopClient:
    return shop.test_client()  # type: ignore[return-value]


def production(monkeypatch: pytest.MonkeyPatch, **settings: str) -> Flask:
    monkeypatch.setenv("ELYSIUM_ENV", "production")
    monkeypatch.setenv("SECRET_KEY", "a" * 64)
    monkeypatch.setenv("SINGLE_PROCESS", "1")
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    return create_app({"SQLALCHEMY_DATABASE_URI": "sqlite://"})


def as_seen_from(client: ShopClient, host: str) -> None:
    """Give ``host`` the session cookie the client holds for localhost (with its CSRF token):
    what a visitor who forges the Host header of their own requests has."""
    cookie = client.get_cookie("session", domain="localhost")
    assert cookie is not None
    client.set_cookie("session", cookie.value, domain=str(urlsplit(f"//{host}").hostname))


def ask_for_reset(client: ShopClient, host: str, email: str = "ada@example.com", **headers):
    client.get("/auth/forgot")
    as_seen_from(client, host)
    data = {"csrf_token": client.csrf_token, "email": email}
    return client.post("/auth/forgot", data=data, headers={"Host": host, **headers})


def refused(response) -> bool:
    """The shop's 400 page, or for htmx its 400 message in the page's messages region."""
    if response.status_code != 400:
        return False
    if "HX-Request" in response.request.headers:
        return response.headers.get("HX-Retarget") == "#messages" and text_of(response).startswith(
            f"{REFUSED}."
        )
    return text_of(response, "h1") == REFUSED


def reset_links(app: Flask) -> list[str]:
    return [
        word
        for email in sent_emails(app, to="ada@example.com")
        for word in email.body_text.split()
        if "/auth/reset/" in word
    ]


@pytest.mark.parametrize("htmx", [False, True], ids=["plain", "htmx"])
def test_a_reset_asked_for_through_an_unknown_host_is_refused_and_emails_nothing(
    app, client, auth, htmx
):
    auth.create_user()
    headers = {"HX-Request": "true"} if htmx else {}

    assert refused(ask_for_reset(client, EVIL, **headers))
    assert sent_emails(app) == []
    # The same session, token and form through a known host do send the email.
    assert ask_for_reset(client, "127.0.0.1", **headers).status_code in (200, 303)
    assert len(reset_links(app)) == 1


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.0.0.1:8000"])
def test_the_reset_link_is_on_site_url_whichever_trusted_host_was_asked(shop, browser, host):
    AuthActions(shop, browser).create_user()

    response = ask_for_reset(browser, host)

    assert response.status_code == 303
    [link] = reset_links(shop)
    assert link.startswith(f"{SITE_URL}/auth/reset/")
    assert browser.get(link.removeprefix(SITE_URL)).status_code == 200


def test_outside_production_site_url_defaults_to_where_make_run_serves(app, client, auth):
    auth.create_user()
    ask_for_reset(client, "localhost")
    [link] = reset_links(app)
    assert link.startswith("http://127.0.0.1:5000/auth/reset/")


def test_production_refuses_to_start_without_site_url(monkeypatch):
    monkeypatch.delenv("SITE_URL", raising=False)
    with pytest.raises(ConfigurationError, match="SITE_URL is not set"):
        production(monkeypatch)


def test_production_refuses_a_site_url_without_https(monkeypatch):
    with pytest.raises(ConfigurationError, match="https"):
        production(monkeypatch, SITE_URL="http://www.elysium.example")


@pytest.mark.parametrize(
    "value",
    [
        "www.elysium.example",
        "ftp://www.elysium.example",
        "https://",
        "https:///shop",
        "https://www.elysium.example/?ref=1",
        "https://www.elysium.example/?",
        "https://www.elysium.example/#top",
        "https://admin@www.elysium.example",
        "https://www.elysium.example:99999",
        "https://www elysium.example",
        "https://www.elysium_shop.example",
    ],
)
def test_a_malformed_site_url_refuses_to_start(monkeypatch, value):
    monkeypatch.setenv("ELYSIUM_ENV", "development")
    monkeypatch.setenv("SITE_URL", value)
    with pytest.raises(ConfigurationError, match="SITE_URL"):
        create_app({"SECRET_KEY": "x", "SQLALCHEMY_DATABASE_URI": "sqlite://"})


@pytest.mark.parametrize("value", ["https://shop.example", "shop.example:8000", "*", "a/b"])
def test_trusted_hosts_must_be_host_names(monkeypatch, value):
    monkeypatch.setenv("ELYSIUM_ENV", "development")
    monkeypatch.setenv("TRUSTED_HOSTS", f"elysium.example, {value}")
    with pytest.raises(ConfigurationError, match="TRUSTED_HOSTS"):
        create_app({"SECRET_KEY": "x", "SQLALCHEMY_DATABASE_URI": "sqlite://"})


def test_production_answers_only_site_url_host_and_trusted_hosts(monkeypatch):
    shop = production(
        monkeypatch, SITE_URL="https://www.elysium.example/", TRUSTED_HOSTS=".shop.example"
    )
    client = shop.test_client()
    assert shop.config["SITE_URL"] == "https://www.elysium.example"
    assert client.get("/robots.txt", base_url="https://www.elysium.example").status_code == 200
    assert client.get("/robots.txt", base_url="https://eu.shop.example").status_code == 200
    assert client.get("/robots.txt", base_url="https://shop.example").status_code == 200
    for host in ("localhost", "127.0.0.1", "elysium.example", "www.elysium.example.evil.example"):
        assert client.get("/robots.txt", base_url=f"https://{host}").status_code == 400, host


def test_sitemap_robots_and_canonical_links_use_site_url(browser, catalogue):
    sitemap = browser.get("/sitemap.xml", headers={"Host": "127.0.0.1"})
    namespace = {"s": "http://www.sitemaps.org/schemas/sitemap/0.9"}
    locations = [
        loc.text or "" for loc in ET.fromstring(sitemap.data).findall("s:url/s:loc", namespace)
    ]
    assert f"{SITE_URL}/" in locations
    assert f"{SITE_URL}/shop/aurelia-fine-chain" in locations
    assert all(location.startswith(f"{SITE_URL}/") for location in locations)

    robots = browser.get("/robots.txt", headers={"Host": "127.0.0.1"}).get_data(as_text=True)
    assert f"Sitemap: {SITE_URL}/sitemap.xml" in robots.splitlines()

    page = Page(browser.get("/shop/aurelia-fine-chain?metal=yellow-gold"))
    assert page.one('link[rel="canonical"]')["href"] == f"{SITE_URL}/shop/aurelia-fine-chain"
    assert page.one('meta[property="og:image"]')["content"].startswith(
        f"{SITE_URL}/art/aurelia-fine-chain/yellow-gold/none.png?v="
    )
    listing = Page(browser.get("/shop?category=ring&page=2"))
    assert listing.one('link[rel="canonical"]')["href"] == f"{SITE_URL}/shop?category=ring"


def test_a_site_url_with_a_path_prefixes_every_absolute_link(app):
    shop = make_app(app.config["SQLALCHEMY_DATABASE_URI"], SITE_URL="https://elysium.example/shop/")
    with shop.app_context():
        assert absolute_url("shop.product", slug="x") == "https://elysium.example/shop/shop/x"


def test_google_is_told_to_come_back_to_site_url(app):
    with OIDCProvider("elysium-google-client", "elysium-google-secret") as oidc:
        shop = make_app(
            app.config["SQLALCHEMY_DATABASE_URI"],
            SITE_URL=SITE_URL,
            GOOGLE_CLIENT_ID=oidc.client_id,
            GOOGLE_CLIENT_SECRET=oidc.client_secret,
            GOOGLE_ISSUER=oidc.issuer,
        )
        client = shop.test_client()
        client.get("/auth/login", headers={"Host": "127.0.0.1"})
        response = client.post(
            "/auth/google", data={"csrf_token": client.csrf_token}, headers={"Host": "127.0.0.1"}
        )
    assert response.status_code == 302
    query = parse_qs(urlsplit(response.headers["Location"]).query)
    assert query["redirect_uri"] == [f"{SITE_URL}/auth/google/callback"]


@pytest.fixture
def paying_shop(app: Flask, catalogue: dict) -> Iterator[tuple[Flask, FakeStripeServer]]:
    with FakeStripeServer(webhook_secret=WEBHOOK_SECRET) as fake:
        shop = make_app(
            app.config["SQLALCHEMY_DATABASE_URI"],
            SITE_URL=SITE_URL,
            STRIPE_SECRET_KEY="sk_test_elysium",
            STRIPE_API_BASE=fake.base_url,
        )
        yield shop, fake
        close_client(shop)


def test_stripe_sends_the_shopper_back_to_site_url(paying_shop):
    shop, fake = paying_shop
    client: ShopClient = shop.test_client()  # type: ignore[assignment]
    item = {"product": "aurelia-fine-chain", "quantity": "1", "metal": "yellow-gold"}
    client.submit("/shop/aurelia-fine-chain", item, action="/cart/items")
    details = {
        "email": "ada@example.com",
        "billing_same": "y",
        "shipping-full_name": "Ada Lovelace",
        "shipping-line1": "12 St James's Square",
        "shipping-city": "London",
        "shipping-postcode": "SW1Y 4JH",
        "shipping-country": "GB",
    }

    response = client.submit("/checkout", details)

    assert response.status_code == 303
    session_id = urlsplit(response.location).path.rsplit("/", 1)[1]
    session = fake.session(session_id)
    assert session["success_url"].startswith(f"{SITE_URL}/checkout/success?")
    assert session["cancel_url"].startswith(f"{SITE_URL}/")


ROUTES = [
    ("GET", "/"),
    ("GET", "/shop/aurelia-fine-chain"),
    ("GET", "/account"),
    ("GET", "/sitemap.xml"),
    ("GET", "/robots.txt"),
    ("GET", "/static/css/elysium.css"),
    ("GET", "/no-such-page"),
    ("POST", "/auth/login"),
    ("POST", "/cart/items"),
    ("POST", "/webhooks/stripe"),
    ("DELETE", "/shop"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_an_unknown_host_gets_the_400_page_everywhere(client, catalogue, method, path):
    client.get("/")
    as_seen_from(client, EVIL)
    data = {"csrf_token": client.csrf_token} if method == "POST" else None

    plain = client.open(path, method=method, data=data, headers={"Host": EVIL})
    htmx = client.htmx(method, path, data=data, headers={"Host": EVIL})

    assert refused(plain)
    assert Page(plain).one('link[rel="stylesheet"]')["href"].startswith("/static/")
    assert refused(htmx)


def test_behind_a_proxy_the_forwarded_host_is_the_one_checked(app):
    shop = make_app(app.config["SQLALCHEMY_DATABASE_URI"], SITE_URL=SITE_URL, PROXY_FIX_HOPS=1)
    client = shop.test_client()
    forged = client.get("/robots.txt", headers={"X-Forwarded-Host": EVIL})
    assert forged.status_code == 400
    internal = {"Host": "10.0.3.17:8000", "X-Forwarded-Host": "www.elysium.example"}
    assert client.get("/robots.txt", headers=internal).status_code == 200


@pytest.mark.parametrize("host", ["10.0.3.17:8000", "ip-10-0-3-17.internal", EVIL])
def test_the_health_check_answers_whatever_host_the_load_balancer_names(client, host):
    response = client.get("/healthz", headers={"Host": host})
    assert response.status_code == 200
    assert response.json == {"status": "ok", "database": "ok"}
