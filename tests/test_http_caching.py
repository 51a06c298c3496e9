"""HTTP caching: static files under fingerprinted URLs kept for a year, the shop window's pages
revalidated (304) only while the page a visitor holds is still right for them, and personal
pages never stored."""

from __future__ import annotations

import copy
import time
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask, url_for
from itsdangerous.timed import TimestampSigner
from sqlalchemy import select

from elysium.extensions import db
from elysium.models import Order
from elysium.services.orders import guest_link_token
from elysium.services.seeding import seed_catalogue
from tests.conftest import make_app, page_text
from tests.html import Page, bag_count, csrf_token
from tests.support.checkout import add_chain
from tests.support.orders import pending_chain_order
from tests.support.staff import staff_client

YEAR = "max-age=31536000"
CHAIN = "aurelia-fine-chain"
RING = "aurelia-solitaire-ring"
# The shop window: home, the listing (filtered too), a collection, a product page.
WINDOW = [
    "/",
    "/shop",
    "/shop?category=ring&sort=price-asc",
    "/collections/aurelia",
    f"/shop/{CHAIN}",
]


def add_chain_with(client, token: str | None, **headers: str):
    """Add to bag as the product page's form does, with the CSRF token of the page held."""
    data = {"csrf_token": token, "product": CHAIN, "quantity": "1", "metal": "yellow-gold"}
    return client.post("/cart/items", data=data, headers=headers)


def forget_cookies(client, only: str | None = None) -> None:
    """The browser drops its cookies (or only the one named ``only``), keeping its pages."""
    for cookie in list(client._cookies.values()):
        if only is None or cookie.key == only:
            client.delete_cookie(cookie.key, domain=cookie.domain, path=cookie.path)


def directives(response) -> set[str]:
    return {part.strip() for part in response.headers.get("Cache-Control", "").split(",")}


def static_urls(page: Page) -> list[str]:
    found = [tag.get("href") for tag in page.select("link[href]")]
    found += [tag.get("src") for tag in page.select("script[src], img[src]")]
    return [url for url in found if url and url.startswith("/static/")]


# Static files


def test_every_static_file_a_page_names_is_fingerprinted_and_kept_for_a_year(client, catalogue):
    seen = set()
    for page_url in ["/", "/collections/aurelia", f"/shop/{RING}"]:
        seen.update(static_urls(Page(client.get(page_url))))
    assert any(url.startswith("/static/css/") for url in seen)
    assert any(url.startswith("/static/vendor/htmx-2.0.11.min.js") for url in seen)
    for url in seen:
        [version] = parse_qs(urlsplit(url).query)["v"]
        assert len(version) >= 8, url
        with client.get(url) as response:
            assert response.status_code == 200, url
            assert directives(response) == {"public", YEAR, "immutable"}, url
            assert response.headers["ETag"], url


def test_public_answers_never_vary_with_the_visitors_cookie(client, catalogue):
    """A shopper with a session asks for the files every page names: each answer is public,
    the same for everyone, so a shared cache may keep one copy (no ``Vary: Cookie``)."""
    page = Page(client.get(f"/shop/{RING}"))
    assert client.get_cookie("session") is not None
    drawing = next(tag["src"] for tag in page.select("img[src]") if tag["src"].startswith("/art/"))
    for url in [*static_urls(page), drawing, "/favicon.ico"]:
        with client.get(url) as response:
            assert response.status_code == 200, url
            assert "public" in directives(response), url
            assert "Cookie" not in response.headers.get("Vary", ""), url
    with client.get(f"/shop/{RING}") as personal:
        assert "Cookie" in personal.headers["Vary"]


def test_a_static_file_without_its_current_fingerprint_is_kept_for_the_static_max_age(app):
    shop = make_app(app.config["SQLALCHEMY_DATABASE_URI"], SEND_FILE_MAX_AGE_DEFAULT=3600)
    client = shop.test_client()
    for url in ["/static/css/elysium.css", "/static/css/elysium.css?v=0123456789ab"]:
        with client.get(url) as response:
            assert response.status_code == 200
            assert directives(response) == {"public", "max-age=3600"}
            etag = response.headers["ETag"]
            assert b".site-header" in response.data
        with client.get(url, headers={"If-None-Match": etag}) as again:
            assert again.status_code == 304
            assert again.data == b""


def test_the_fingerprint_follows_the_files_content(app, client, tmp_path, monkeypatch):
    """Edit a stylesheet: pages name it under a new URL at once, and the old URL is no longer
    kept for a year, though it still gets today's file."""
    monkeypatch.setattr(app, "static_folder", str(tmp_path))
    (tmp_path / "css").mkdir()
    sheet = tmp_path / "css" / "site.css"
    sheet.write_text("body { color: #1a1a1a; }\n")

    def current_url() -> str:
        with app.test_request_context():
            return url_for("static", filename="css/site.css")

    before = current_url()
    with client.get(before) as first:
        assert YEAR in directives(first)
        assert first.data == b"body { color: #1a1a1a; }\n"
    assert current_url() == before  # the same content keeps its URL

    sheet.write_text("body { color: #2b2b2b; background: #faf7f2; }\n")
    after = current_url()
    assert after != before
    with client.get(after) as fresh:
        assert {"public", YEAR, "immutable"} <= directives(fresh)
        assert b"#faf7f2" in fresh.data
    with client.get(before) as stale:
        assert stale.status_code == 200
        assert "immutable" not in directives(stale)
        assert b"#faf7f2" in stale.data

    with app.test_request_context():
        missing = url_for("static", filename="css/missing.css")
    assert missing == "/static/css/missing.css"
    assert client.get(missing).status_code == 404
    assert client.get("/static/../pyproject.toml").status_code == 404


# The shop window's pages


def test_the_shop_window_answers_the_same_visitor_with_304(client, catalogue):
    for url in WINDOW:
        first = client.get(url)
        assert first.status_code == 200, url
        etag = first.headers["ETag"]
        assert etag.startswith('W/"'), url
        assert directives(first) == {"private", "no-cache"}, url
        assert "Cookie" in first.vary, url
        again = client.get(url, headers={"If-None-Match": etag})
        assert again.status_code == 304, url
        assert again.data == b""
        assert again.headers["ETag"] == etag

    fragment = client.htmx("GET", "/shop?category=ring")
    assert fragment.status_code == 200
    again = client.htmx(
        "GET", "/shop?category=ring", headers={"If-None-Match": fragment.headers["ETag"]}
    )
    assert again.status_code == 304
    assert {"HX-Request", "Cookie"} <= set(again.vary)
    home = client.get("/")
    assert client.head("/", headers={"If-None-Match": home.headers["ETag"]}).status_code == 304


SCRIPT = {"User-Agent": "python-requests/2.32.3"}


def test_a_client_that_keeps_no_cookies_is_answered_304_too(app, catalogue):
    """Each request of a client without cookies gets a new session and a new token: the ETag
    changed every time, so such a client (a crawler, a script) never got a 304. With no
    session of its own to tie the page to, the page is the same to it every time."""
    cookieless = app.test_client(use_cookies=False)
    for url in WINDOW:
        first = cookieless.get(url, headers=SCRIPT)
        assert first.status_code == 200, url
        again = cookieless.get(url, headers={"If-None-Match": first.headers["ETag"], **SCRIPT})
        assert again.status_code == 304, url
    # A visitor with a session of their own never matches the cookieless page's ETag, and a
    # client without cookies never matches the ETag of a page that showed someone's bag.
    visitor = app.test_client()
    visitor.get("/shop")
    anonymous = cookieless.get("/shop", headers=SCRIPT).headers["ETag"]
    assert visitor.get("/shop", headers={"If-None-Match": anonymous}).status_code == 200
    add_chain(visitor)
    with_a_bag = visitor.get("/shop").headers["ETag"]
    answer = cookieless.get("/shop", headers={"If-None-Match": with_a_bag, **SCRIPT})
    assert answer.status_code == 200
    assert bag_count(answer) == 0


@pytest.mark.parametrize("lost", ["session", "every cookie"])
def test_a_browser_back_without_its_session_gets_a_page_whose_forms_post(
    app, client, catalogue, lost
):
    """The session cookie ends with the browser (the visitor cookie stays), or the shopper
    clears their cookies but not the pages kept: a 304 would leave them a page whose token is
    of the session they lost, and their first "Add to bag" refused."""
    kept = client.get(f"/shop/{CHAIN}")
    forget_cookies(
        client, only=None if lost == "every cookie" else app.config["SESSION_COOKIE_NAME"]
    )

    again = client.get(f"/shop/{CHAIN}", headers={"If-None-Match": kept.headers["ETag"]})

    assert again.status_code == 200
    assert add_chain_with(client, csrf_token(again)).status_code == 303
    assert bag_count(client.get("/cart")) == 1


@pytest.mark.parametrize("url", WINDOW)
def test_a_browsers_prefetch_without_cookies_is_never_taken_for_a_script(client, catalogue, url):
    """A prefetch (or a HEAD) is a browser's too: without its cookies, the copy it holds
    carries a token of a session it lost."""
    kept = client.get(url)
    forget_cookies(client)
    asked = {"If-None-Match": kept.headers["ETag"], "Sec-Purpose": "prefetch"}
    assert client.get(url, headers=asked).status_code == 200
    assert client.head(url, headers={"If-None-Match": kept.headers["ETag"]}).status_code == 200


def test_the_page_kept_after_a_304_still_posts(client, catalogue, monkeypatch):
    """The CSRF token is signed with the time, so each rendering's text differs; the page
    the browser kept (and its token) is still good, so the later rendering is a 304."""
    first = client.get(f"/shop/{CHAIN}")
    kept_token = csrf_token(first)
    later = int(time.time()) + 5
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: later)

    again = client.get(f"/shop/{CHAIN}", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304
    assert csrf_token(client.get(f"/shop/{CHAIN}")) != kept_token  # the text did change

    assert add_chain_with(client, kept_token).status_code == 303
    assert bag_count(client.get("/cart")) == 1


def test_a_price_change_is_sent_in_full(app, client, catalogue):
    pages = {
        url: client.get(url)
        for url in (f"/shop/{CHAIN}", "/shop?collection=aurelia", "/collections/aurelia")
    }
    for url, page in pages.items():
        assert "£650" in page_text(page), url
        assert "£712.34" not in page_text(page), url

    repriced = copy.deepcopy(catalogue)
    [chain] = [product for product in repriced["products"] if product["slug"] == CHAIN]
    chain["base_price"] = 71234
    with app.app_context():
        seed_catalogue(db.session, repriced)
        db.session.commit()
        db.session.remove()

    for url, page in pages.items():
        now = client.get(url, headers={"If-None-Match": page.headers["ETag"]})
        assert now.status_code == 200, url
        assert now.headers["ETag"] != page.headers["ETag"]
        assert "£712.34" in page_text(now), url


def test_adding_to_the_bag_or_signing_in_sends_the_page_in_full(client, auth, catalogue):
    home = client.get("/")
    assert bag_count(home) == 0
    add_chain_with(client, csrf_token(client.get(f"/shop/{RING}")))
    after = client.get("/", headers={"If-None-Match": home.headers["ETag"]})
    assert after.status_code == 200
    assert bag_count(after) == 1

    auth.create_user()
    assert auth.login().status_code == 303
    signed_in = client.get("/", headers={"If-None-Match": after.headers["ETag"]})
    assert signed_in.status_code == 200
    assert Page(signed_in).select('a[href="/account"]')


def test_another_visitors_etag_gets_the_whole_page(app, client, catalogue):
    client.get("/")  # the visitor's session
    for url in WINDOW:
        etag = client.get(url).headers["ETag"]
        neighbour = app.test_client()
        neighbour.get(url)  # has a session of their own
        answer = neighbour.get(url, headers={"If-None-Match": etag})
        assert answer.status_code == 200, url
        assert answer.headers["ETag"] != etag


def test_a_post_is_never_answered_304(client, catalogue):
    page = client.get(f"/shop/{CHAIN}")
    for match in (page.headers["ETag"], "*"):
        assert (
            add_chain_with(client, csrf_token(page), **{"If-None-Match": match}).status_code == 303
        )
    refused = client.post(
        "/shop", data={"csrf_token": csrf_token(page)}, headers={"If-None-Match": "*"}
    )
    assert refused.status_code == 405


# Personal pages


@pytest.fixture
def shopper_with_an_order(app: Flask, client, auth, catalogue) -> dict[str, str]:
    user_id = auth.create_user()
    order = pending_chain_order(app)
    with app.app_context():
        found = db.session.scalars(select(Order).where(Order.number == order["number"])).one()
        found.user_id = user_id
        db.session.commit()
        with app.test_request_context():
            token = guest_link_token(found)
        db.session.remove()
    auth.login()
    add_chain(client)  # so the checkout page shows
    return {"number": order["number"], "token": token}


def test_the_price_fragment_is_never_stored(client, catalogue):
    """It carries a price and stock of the moment, and may bring a new "Add to bag" block
    with the shopper's CSRF token; with no header, a proxy or CDN could keep it for a while."""
    client.get(f"/shop/{RING}")
    for state in ("available", "sold-out"):
        url = f"/shop/{RING}/price?metal=platinum&diamond=0.50ct&size=6&add_to_bag_state={state}"
        response = client.htmx("GET", url)
        assert response.status_code == 200
        assert directives(response) == {"no-store"}, state


def test_signing_out_asks_the_browser_to_forget_the_pages_it_keeps(client, auth, catalogue):
    """A shop page is ``private, no-cache``, and Back shows it from the browser's cache
    without asking: on a shared computer, the bag count and hearts of whoever signed out."""
    auth.create_user()
    auth.login()
    client.get(f"/shop/{RING}")
    signed_out = client.post("/auth/logout", data={"csrf_token": client.csrf_token})
    assert signed_out.headers["Clear-Site-Data"] == '"cache"'
    assert "Clear-Site-Data" not in client.get(f"/shop/{RING}").headers


def test_personal_pages_are_never_stored(app, client, shopper_with_an_order):
    number, token = shopper_with_an_order["number"], shopper_with_an_order["token"]
    shopper_pages = [
        "/cart",
        "/checkout",
        "/account",
        "/account/profile",
        "/account/addresses",
        "/account/orders",
        f"/account/orders/{number}",
        "/account/commissions",
        "/wishlist",
        "/bespoke",
    ]
    guest_pages = [
        "/cart",
        "/auth/login",
        "/auth/register",
        "/auth/forgot",
        f"/orders/{number}?token={token}",
    ]
    staff_pages = [
        "/staff",
        "/staff/orders",
        f"/staff/orders/{number}",
        "/staff/inventory",
        "/staff/leads",
    ]
    visits = [(client, url) for url in shopper_pages]
    visits += [(app.test_client(), url) for url in guest_pages]
    staff = staff_client(app)
    visits += [(staff, url) for url in staff_pages]
    for visitor, url in visits:
        for response in (visitor.get(url), visitor.htmx("GET", url)):
            assert response.status_code == 200, url
            assert directives(response) == {"no-store"}, url
            assert "ETag" not in response.headers, url
