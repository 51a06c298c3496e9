"""Cookies in production: the session, bag and remember cookies are ``__Host-`` cookies (Secure,
the whole site, this host alone), a bag under the bag cookie's old name survives the rename,
and development and tests keep plain names over http."""

from __future__ import annotations

import pytest
from flask import Flask
from flask_login import logout_user
from sqlalchemy import select

from elysium.config import cookie_name
from elysium.extensions import db
from elysium.models import Cart
from tests.conftest import AuthActions, ShopClient, make_app, page_text
from tests.html import bag_count
from tests.support.checkout import CHAIN, METAL

SITE_URL = "https://www.elysium.example"
HOST = "www.elysium.example"
PLAIN_NAMES = {"session", "elysium_bag", "remember_token"}


class HttpsBrowser(ShopClient):
    """A browser on the shop's https:// address; it names the page a form was sent from (over
    https the CSRF check wants the Referer to be the shop)."""

    def open(self, *args, **kwargs):
        kwargs.setdefault("base_url", SITE_URL)
        kwargs["headers"] = {"Referer": f"{SITE_URL}/", **kwargs.get("headers", {})}
        return super().open(*args, **kwargs)


@pytest.fixture
def production(app: Flask, catalogue: dict, monkeypatch: pytest.MonkeyPatch) -> Flask:
    """The shop as production runs it, on the suite's database and with its secret key."""
    monkeypatch.setenv("ELYSIUM_ENV", "production")
    monkeypatch.setenv("SITE_URL", SITE_URL)
    # Rate limits counted in this process (production wants Redis, or to be told there is
    # one process), so that no other test run shares the counts.
    monkeypatch.setenv("SINGLE_PROCESS", "1")
    shop = make_app(app.config["SQLALCHEMY_DATABASE_URI"], ELYSIUM_ENV="production", TESTING=False)
    shop.test_client_class = HttpsBrowser
    return shop


def set_cookies(response) -> dict[str, dict[str, str]]:
    """The response's Set-Cookie headers by cookie name: ``value`` and each attribute, its
    name lower-cased (a flag such as ``secure`` maps to "")."""
    cookies: dict[str, dict[str, str]] = {}
    for header in response.headers.getlist("Set-Cookie"):
        pair, *attributes = header.split("; ")
        name, _, value = pair.partition("=")
        cookies[name] = {"value": value}
        for attribute in attributes:
            key, _, setting = attribute.partition("=")
            cookies[name][key.lower()] = setting
    return cookies


def add_chain(browser: ShopClient):
    data = {"product": CHAIN, "quantity": "1", "metal": METAL}
    browser.get(f"/shop/{CHAIN}")
    return browser.post("/cart/items", data={"csrf_token": browser.csrf_token, **data})


def assert_host_cookie(cookie: dict[str, str]) -> None:
    """What a browser requires to keep a ``__Host-`` cookie, and what the shop wants besides."""
    assert "secure" in cookie
    assert cookie["path"] == "/"
    assert "domain" not in cookie
    assert "httponly" in cookie
    assert cookie["samesite"] == "Lax"


def test_in_production_the_session_bag_and_remember_cookies_are_host_cookies(
    production: Flask,
) -> None:
    browser = production.test_client()
    product_page = browser.get(f"/shop/{CHAIN}")
    added = browser.post(
        "/cart/items",
        data={"csrf_token": browser.csrf_token, "product": CHAIN, "quantity": "1", "metal": METAL},
    )
    assert added.status_code == 303
    auth = AuthActions(production, browser)
    auth.create_user()
    signed_in = auth.login(remember="y")
    assert signed_in.status_code == 303

    sent = {**set_cookies(product_page), **set_cookies(added), **set_cookies(signed_in)}
    assert {"__Host-session", "__Host-elysium_bag", "__Host-remember_token"} <= set(sent)
    assert not PLAIN_NAMES & set(sent)
    for name in ("__Host-session", "__Host-elysium_bag", "__Host-remember_token"):
        assert_host_cookie(sent[name])
    assert browser.get("/account").status_code == 200


def test_when_flask_login_forgets_the_remember_cookie_the_deletion_says_secure(
    production: Flask,
) -> None:
    """Flask-Login deletes its cookie without Secure, and a browser ignores that for a
    ``__Host-`` cookie: the shop's responses add it."""

    @production.get("/forget-me")
    def forget_me() -> str:
        logout_user()
        return "forgotten"

    browser = production.test_client()
    auth = AuthActions(production, browser)
    auth.create_user()
    auth.login(remember="y")
    assert browser.get_cookie("__Host-remember_token", domain=HOST) is not None

    removed = set_cookies(browser.get("/forget-me"))["__Host-remember_token"]

    assert removed["value"] == ""
    assert removed["max-age"] == "0"
    assert "secure" in removed
    assert removed["path"] == "/"
    assert "domain" not in removed
    assert browser.get_cookie("__Host-remember_token", domain=HOST) is None


def _bag_cookie_from_before_the_rename(client: ShopClient) -> str:
    """A guest's bag as the shop kept it before production prefixed its cookies: the same
    secret key, the plain name ``elysium_bag`` (which tests still use)."""
    assert add_chain(client).status_code == 303
    cookie = client.get_cookie("elysium_bag")
    assert cookie is not None
    return cookie.value


def _bags(app: Flask) -> list[int]:
    """Every bag's total quantity."""
    with app.app_context():
        totals = [
            sum(line.quantity for line in cart.lines)
            for cart in db.session.scalars(select(Cart).order_by(Cart.id))
        ]
        db.session.remove()
    return totals


def test_a_guest_bag_under_the_old_cookie_name_is_kept_and_moved_to_the_new_name(
    production: Flask, client: ShopClient, app: Flask
) -> None:
    browser = production.test_client()
    browser.set_cookie("elysium_bag", _bag_cookie_from_before_the_rename(client), domain=HOST)

    bag = browser.get("/cart")

    assert bag_count(bag) == 1
    assert "Aurelia Fine Chain" in page_text(bag)
    cookies = set_cookies(bag)
    assert cookies["elysium_bag"]["value"] == ""
    assert cookies["elysium_bag"]["max-age"] == "0"
    assert_host_cookie(cookies["__Host-elysium_bag"])
    assert browser.get_cookie("elysium_bag", domain=HOST) is None

    again = browser.get("/cart")
    assert bag_count(again) == 1
    assert "elysium_bag" not in set_cookies(again)
    assert add_chain(browser).status_code == 303
    assert _bags(app) == [2]


def test_the_old_bag_cookie_moves_even_when_the_first_request_shows_no_bag(
    production: Flask, client: ShopClient
) -> None:
    """The first request after the rename may be for a stylesheet, which never looks for
    the bag: deleting the old cookie there must not lose it."""
    browser = production.test_client()
    browser.set_cookie("elysium_bag", _bag_cookie_from_before_the_rename(client), domain=HOST)

    with browser.get("/static/css/elysium.css") as stylesheet:
        assert stylesheet.status_code == 200
        assert set(set_cookies(stylesheet)) == {"elysium_bag", "__Host-elysium_bag"}
        # The stylesheet is kept a year by any cache; this answer carries the bag's token.
        assert stylesheet.headers["Cache-Control"] == "private, no-store"
    assert bag_count(browser.get("/cart")) == 1
    with browser.get("/static/css/elysium.css") as stylesheet:
        assert "public" in stylesheet.headers["Cache-Control"]
        assert set_cookies(stylesheet) == {}


def test_a_bag_handed_out_under_the_new_name_cant_be_planted_under_the_old_one(
    production: Flask, app: Flask
) -> None:
    """Any subdomain can set a cookie named ``elysium_bag``; only bags from before the rename
    are found under that name, so nobody can slip their own bag into a shopper's browser
    (and read the order placed from it)."""
    planter = production.test_client()
    assert add_chain(planter).status_code == 303
    planted = planter.get_cookie("__Host-elysium_bag", domain=HOST)
    assert planted is not None

    shopper = production.test_client()
    shopper.set_cookie("elysium_bag", planted.value, domain=HOST)
    bag = shopper.get("/cart")

    assert bag_count(bag) == 0
    assert "__Host-elysium_bag" not in set_cookies(bag)
    assert shopper.get_cookie("elysium_bag", domain=HOST) is None
    assert _bags(app) == [1]


def test_development_and_tests_keep_plain_cookie_names_without_secure(
    client: ShopClient, auth: AuthActions, catalogue: dict, monkeypatch, tmp_path
) -> None:
    added = add_chain(client)
    auth.create_user()
    signed_in = auth.login(remember="y")
    sent = {**set_cookies(added), **set_cookies(signed_in)}
    assert set(sent) >= PLAIN_NAMES
    assert not any(name.startswith("__") for name in sent)
    assert not any("secure" in sent[name] for name in PLAIN_NAMES)

    monkeypatch.setenv("ELYSIUM_INSTANCE_PATH", str(tmp_path))
    development = make_app("sqlite://", ELYSIUM_ENV="development")
    assert {
        development.config[setting]
        for setting in ("SESSION_COOKIE_NAME", "REMEMBER_COOKIE_NAME", "CART_COOKIE_NAME")
    } == PLAIN_NAMES


def test_a_cookie_name_has_the_host_prefix_exactly_when_the_cookie_is_secure() -> None:
    """For any cookie the shop adds (set it Secure with SESSION_COOKIE_SECURE, path /, no
    domain)."""
    assert cookie_name("elysium_device", secure=True) == "__Host-elysium_device"
    assert cookie_name("elysium_device", secure=False) == "elysium_device"
    assert cookie_name("__Host-elysium_device", secure=True) == "__Host-elysium_device"


def test_csp_forbids_a_base_element_in_production(production: Flask) -> None:
    policy = production.test_client().get("/").headers["Content-Security-Policy"]
    assert "base-uri 'none'" in policy.split("; ")


def test_a_session_past_its_lifetime_is_over_though_its_cookie_was_checked_before(
    app: Flask, client: ShopClient, auth: AuthActions, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each process remembers a session cookie whose signature checked out
    (``elysium.web.signatures``); the cookie's age is still checked on every request."""
    from itsdangerous import TimestampSigner

    auth.create_user()
    auth.login()
    assert client.get("/account").status_code == 200  # its cookie checked, and remembered
    lifetime = int(app.permanent_session_lifetime.total_seconds())
    now = TimestampSigner("any").get_timestamp()
    with monkeypatch.context() as patch:
        patch.setattr(TimestampSigner, "get_timestamp", lambda self: now + lifetime - 60)
        assert client.get("/account").status_code == 200
        patch.setattr(TimestampSigner, "get_timestamp", lambda self: now + lifetime + 60)
        assert client.get("/account").status_code == 303  # signed out: to the sign-in page


def test_a_server_whose_clock_is_a_little_behind_keeps_the_session(
    app: Flask, client: ShopClient, auth: AuthActions, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two servers behind one load balancer, one clock a few milliseconds behind the other:
    a cookie the first stamped in whole seconds could read as a second in the future on the
    second, which took it for no session: the shopper was signed out, their forms refused."""
    from itsdangerous import TimestampSigner

    auth.create_user()
    auth.login()
    assert client.get("/account").status_code == 200
    other = make_app(app.config["SQLALCHEMY_DATABASE_URI"]).test_client()
    other.set_cookie("session", client.get_cookie("session").value)
    now = TimestampSigner("any").get_timestamp()
    with monkeypatch.context() as patch:
        patch.setattr(TimestampSigner, "get_timestamp", lambda self: now - 1)
        assert other.get("/account").status_code == 200
        assert client.get("/account").status_code == 200
        patch.setattr(TimestampSigner, "get_timestamp", lambda self: now - 3600)
        assert client.get("/account").status_code == 303  # a cookie from an hour ahead: none


def test_a_bag_cookie_checked_by_one_shop_is_no_bag_at_a_shop_with_another_key(
    app: Flask, catalogue: dict, client: ShopClient
) -> None:
    client.get(f"/shop/{CHAIN}")
    added = client.post(
        "/cart/items",
        data={"csrf_token": client.csrf_token, "product": CHAIN, "metal": METAL, "quantity": "1"},
    )
    assert added.status_code == 303
    assert bag_count(client.get("/cart")) == 1  # its cookie checked, and remembered
    other = make_app(
        app.config["SQLALCHEMY_DATABASE_URI"], SECRET_KEY="another-key-not-for-production"
    ).test_client()
    other.set_cookie("elysium_bag", client.get_cookie("elysium_bag").value)
    assert bag_count(other.get("/cart")) == 0
