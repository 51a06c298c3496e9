"""The wishlist over HTTP: the heart on cards and product pages, the list, Move to bag, Remove."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select

from elysium.extensions import db
from elysium.models import Cart, Product, ProductOption, WishlistItem
from elysium.models.types import utcnow
from elysium.services import cart as bag
from elysium.services import wishlist
from elysium.services.configuration import configure
from elysium.services.seeding import seed_catalogue
from elysium.web.fragments import forget_kept
from tests.conftest import AuthActions, page_text
from tests.html import Page, bag_count, elements, form_fields, hearts, text_of
from tests.support.meanwhile import in_another_window, meanwhile

RING = "/shop/aurelia-solitaire-ring"
PLATINUM = {"metal": "platinum", "diamond": "0.50ct", "size": "7", "engraving": "Always"}
ROSE = {**PLATINUM, "metal": "rose-gold"}  # in stock (2 left); platinum is sold out


@pytest.fixture
def signed_in(auth) -> int:
    user_id = auth.create_user()
    auth.login()
    return user_id


def saved(app, user_id: int | None = None) -> list[tuple[str, dict]]:
    """What is on the wishlist, oldest first, as (slug, configuration)."""
    with app.app_context():
        stmt = select(WishlistItem).order_by(WishlistItem.id)
        if user_id is not None:
            stmt = stmt.where(WishlistItem.user_id == user_id)
        return [(item.product.slug, item.configuration) for item in db.session.scalars(stmt)]


def save_directly(app, user_id: int, slug: str, choices: dict | None = None) -> int:
    with app.app_context():
        product = db.session.scalars(select(Product).where(Product.slug == slug)).one()
        configuration = configure(product, choices or {})
        item = WishlistItem(
            user_id=user_id,
            product_id=product.id,
            configuration=configuration.canonical(),
            configuration_hash=configuration.hash,
        )
        db.session.add(item)
        db.session.commit()
        return item.id


def product_id(app, slug: str) -> int:
    with app.app_context():
        return db.session.scalars(select(Product.id).where(Product.slug == slug)).one()


def top_level(response) -> list[str]:
    """What an htmx response is made of: its top-level elements, as ``tag#id`` or ``tag.class``."""
    return [
        f"{element.name}#{element['id']}"
        if element.get("id")
        else f"{element.name}.{'.'.join(element.get('class', []))}"
        for element in Page(response).top()
    ]


def toggle(client, page: str, htmx: bool = False, **fields):
    """Press the heart on ``page`` the way the browser would (the page's CSRF token)."""
    client.get(page)
    data = {"csrf_token": client.csrf_token, "next": page, **fields}
    if htmx:
        return client.htmx("POST", "/wishlist/toggle", data=data)
    return client.post("/wishlist/toggle", data=data)


# The heart on the product page -------------------------------------------------------------


def test_product_page_heart_saves_exactly_the_configurators_choices_with_htmx(
    app, client, catalogue, signed_in
):
    page = f"{RING}?metal=platinum"
    response = toggle(
        client, page, htmx=True, slug="aurelia-solitaire-ring", scope="configuration", **PLATINUM
    )
    assert response.status_code == 200
    page = Page(response)
    assert top_level(response)[0] == "form.wishlist-heart.wishlist-heart--configuration"
    assert not page.select("html, body")
    heart = page.one("form.wishlist-heart")
    assert hearts(heart) == {product_id(app, "aurelia-solitaire-ring"): True}
    assert text_of(heart, "button") == "Remove from wishlist"
    assert (heart["hx-target"], heart["hx-swap"]) == ("this", "outerHTML")
    assert page.one("#messages")["hx-swap-oob"] == "innerHTML"
    assert text_of(page, "#messages") == "Aurelia Solitaire Ring is saved to your wishlist."
    assert "HX-Request" in response.headers["Vary"]
    assert response.headers["Cache-Control"] == "no-store"
    assert saved(app, signed_in) == [("aurelia-solitaire-ring", PLATINUM)]


def test_pressing_the_heart_again_removes_that_configuration(app, client, catalogue, signed_in):
    fields = {"slug": "aurelia-solitaire-ring", "scope": "configuration", **PLATINUM}
    toggle(client, RING, htmx=True, **fields)
    response = toggle(client, RING, htmx=True, **fields)
    assert hearts(response) == {product_id(app, "aurelia-solitaire-ring"): False}
    assert text_of(response, "form.wishlist-heart button") == "Save to wishlist"
    assert text_of(response, "#messages") == "Aurelia Solitaire Ring is removed from your wishlist."
    assert saved(app) == []


def test_without_javascript_the_heart_posts_and_comes_back_to_the_piece(
    app, client, catalogue, signed_in
):
    page = f"{RING}?metal=platinum&diamond=0.50ct&size=7&engraving=Always"
    response = toggle(client, page, slug="aurelia-solitaire-ring", **PLATINUM)
    assert response.status_code == 303
    assert response.headers["Location"] == page
    assert "HX-Request" in response.headers["Vary"]
    after = client.get(page)
    assert "Aurelia Solitaire Ring is saved to your wishlist." in page_text(after)
    assert hearts(after) == {product_id(app, "aurelia-solitaire-ring"): True}
    assert saved(app) == [("aurelia-solitaire-ring", PLATINUM)]


def test_product_page_heart_is_pressed_only_for_the_saved_configuration(
    app, client, catalogue, signed_in
):
    save_directly(app, signed_in, "aurelia-solitaire-ring", {"metal": "platinum"})
    ring = product_id(app, "aurelia-solitaire-ring")
    assert hearts(client.get(f"{RING}?metal=platinum")) == {ring: True}
    assert hearts(client.get(RING)) == {ring: False}
    assert hearts(client.get(f"{RING}?metal=platinum&size=7")) == {ring: False}


def test_the_product_page_heart_follows_the_configurator_and_works_without_javascript(
    client, catalogue, signed_in
):
    heart = Page(client.get(f"{RING}?metal=platinum&size=7")).one("form.wishlist-heart")
    # htmx posts the live configurator choices and refreshes the heart when they change;
    # without JavaScript the choices last shown are posted from <noscript> fields.
    assert heart["hx-include"] == "form.configurator"
    [refresh] = elements(heart, "[hx-get]")
    assert refresh["hx-get"] == "/wishlist/heart/aurelia-solitaire-ring"
    assert refresh["hx-trigger"].startswith("change from:form.configurator")
    noscript = [(field["name"], field["value"]) for field in elements(heart, "noscript input")]
    assert noscript == [("metal", "platinum"), ("size", "7")]
    assert (heart["method"], heart["action"]) == ("post", "/wishlist/toggle")
    assert form_fields(heart)["slug"] == "aurelia-solitaire-ring"


def test_the_heart_refresh_says_whether_the_chosen_configuration_is_saved(
    app, client, catalogue, signed_in
):
    save_directly(app, signed_in, "aurelia-solitaire-ring", {"metal": "platinum"})
    url = "/wishlist/heart/aurelia-solitaire-ring"
    on = client.htmx("GET", url, query_string={"metal": "platinum", "size": ""})
    off = client.htmx("GET", url, query_string={"metal": "rose-gold"})
    ring = product_id(app, "aurelia-solitaire-ring")
    assert hearts(on) == {ring: True}
    assert hearts(off) == {ring: False}
    # the guest's way back is the piece as now configured
    assert form_fields(off, "form.wishlist-heart")["next"] == f"{RING}?metal=rose-gold"
    assert "HX-Request" in on.headers["Vary"]
    assert on.headers["Cache-Control"] == "no-store"


def test_the_heart_refresh_without_htmx_goes_to_the_product_page(client, catalogue):
    response = client.get("/wishlist/heart/aurelia-solitaire-ring?metal=platinum&size=")
    assert response.status_code == 303
    assert response.headers["Location"] == f"{RING}?metal=platinum"


# The heart on listing cards ----------------------------------------------------------------


def test_a_card_heart_is_pressed_when_any_configuration_of_the_piece_is_saved(
    app, client, catalogue, signed_in
):
    save_directly(app, signed_in, "aurelia-solitaire-ring", {"metal": "platinum", "size": "7"})
    states = hearts(client.get("/shop"))
    assert len(states) == 12
    assert states.pop(product_id(app, "aurelia-solitaire-ring")) is True
    assert not any(states.values())


def test_a_card_heart_saves_the_default_configuration(app, client, catalogue, signed_in):
    response = toggle(
        client, "/shop?category=ring", htmx=True, slug="aurelia-solitaire-ring", scope="piece"
    )
    assert response.status_code == 200
    assert hearts(response) == {product_id(app, "aurelia-solitaire-ring"): True}
    assert text_of(response, "form.wishlist-heart button") == (
        "Remove from wishlist: Aurelia Solitaire Ring"
    )
    assert saved(app) == [("aurelia-solitaire-ring", {"metal": "yellow-gold", "diamond": "0.30ct"})]


def test_a_pressed_card_heart_removes_every_configuration_of_the_piece(
    app, client, catalogue, signed_in
):
    save_directly(app, signed_in, "aurelia-solitaire-ring", {"metal": "platinum"})
    save_directly(app, signed_in, "aurelia-solitaire-ring", {"metal": "rose-gold"})
    save_directly(app, signed_in, "aurelia-signet-ring")
    response = toggle(client, "/shop", slug="aurelia-solitaire-ring", scope="piece")
    assert response.status_code == 303
    assert response.headers["Location"] == "/shop"
    assert [slug for slug, _ in saved(app)] == ["aurelia-signet-ring"]


def test_a_card_heart_without_javascript_returns_to_the_listing_page(
    app, client, catalogue, signed_in
):
    response = toggle(
        client, "/shop?category=ring&page=1", slug="aurelia-solitaire-ring", scope="piece"
    )
    assert response.headers["Location"] == "/shop?category=ring&page=1"
    assert "is saved to your wishlist" in page_text(client.get(response.headers["Location"]))


@pytest.mark.parametrize(
    "next_url", ["https://evil.example/", "//evil.example/", "javascript:alert(1)", "", "/\\x"]
)
def test_next_must_be_a_same_site_path(app, client, catalogue, signed_in, next_url):
    client.get(RING)
    response = client.post(
        "/wishlist/toggle",
        data={"csrf_token": client.csrf_token, "slug": "aurelia-solitaire-ring", "next": next_url},
    )
    assert response.status_code == 303
    assert response.headers["Location"] == RING


# Guests ------------------------------------------------------------------------------------


def test_a_guest_pressing_the_heart_is_sent_to_sign_in_and_back_to_the_piece(
    app, client, catalogue, auth
):
    auth.create_user()
    page = f"{RING}?metal=platinum"
    response = toggle(client, page, slug="aurelia-solitaire-ring", metal="platinum")
    assert response.status_code == 303
    login = response.headers["Location"]
    assert urlsplit(login).path == "/auth/login"
    assert parse_qs(urlsplit(login).query)["next"] == [page]
    assert saved(app) == []

    signed = auth.login(next=page)
    assert signed.status_code == 303
    assert signed.headers["Location"] == page


def test_a_guest_pressing_the_heart_with_htmx_gets_hx_redirect(client, catalogue):
    page = f"{RING}?metal=platinum"
    response = toggle(client, page, htmx=True, slug="aurelia-solitaire-ring", metal="platinum")
    assert response.status_code == 204
    target = response.headers["HX-Redirect"]
    assert urlsplit(target).path == "/auth/login"
    assert parse_qs(urlsplit(target).query)["next"] == [page]


def test_a_guest_sees_unpressed_hearts_and_no_wishlist_link(client, catalogue):
    response = client.get("/shop")
    assert set(hearts(response).values()) == {False}
    assert not elements(response, 'a[href="/wishlist"]')


# Refusals ----------------------------------------------------------------------------------


def test_an_invalid_configuration_is_422_with_the_message_and_nothing_saved(
    app, client, catalogue, signed_in
):
    fields = {"slug": "aurelia-solitaire-ring", "metal": "platinum", "engraving": "I <3 you"}
    response = toggle(client, RING, htmx=True, **fields)
    assert response.status_code == 422
    assert hearts(response) == {product_id(app, "aurelia-solitaire-ring"): False}
    assert "“<” can't be engraved" in text_of(response, "div.notice.notice--error")

    plain = toggle(client, RING, **fields)
    assert plain.status_code == 422
    assert "“<” can't be engraved" in page_text(plain)
    assert "Aurelia Solitaire Ring wasn't saved" in page_text(plain)
    assert saved(app) == []


def test_an_unknown_choice_is_refused(app, client, catalogue, signed_in):
    response = toggle(client, RING, slug="aurelia-solitaire-ring", metal="tin")
    assert response.status_code == 422
    assert "Choose one of the metals offered" in page_text(response)
    assert saved(app) == []


def test_an_unknown_piece_is_404(client, catalogue, signed_in):
    assert toggle(client, RING, slug="no-such-piece").status_code == 404
    assert toggle(client, RING, slug="").status_code == 404


def test_the_wishlist_has_a_limit(app, client, catalogue, signed_in, monkeypatch):
    monkeypatch.setattr(wishlist, "WISHLIST_LIMIT", 2)
    save_directly(app, signed_in, "aurelia-signet-ring")
    save_directly(app, signed_in, "aurelia-bangle")
    response = toggle(client, RING, htmx=True, slug="aurelia-solitaire-ring")
    assert response.status_code == 422
    assert "Your wishlist holds up to 2 pieces" in page_text(response)
    assert len(saved(app)) == 2
    # A heart drawn before the bangle was saved (another tab) saves what is saved: it said the
    # wishlist was full (found by review).
    bangle = {"slug": "aurelia-bangle", "intent": "save", "metal": "yellow-gold"}
    again = toggle(client, "/shop/aurelia-bangle", htmx=True, **bangle)
    assert again.status_code == 200, page_text(again)
    assert "saved to your wishlist" in page_text(again)
    assert len(saved(app)) == 2


def test_saving_the_same_configuration_twice_keeps_one_item(app, catalogue, auth):
    user_id = auth.create_user()
    with app.app_context():
        product = db.session.scalars(select(Product).where(Product.slug == "aurelia-bangle")).one()
        configuration = configure(product, {})
        wishlist._save(db.session, user_id, product, configuration)
        wishlist._save(db.session, user_id, product, configuration)
        db.session.commit()
    assert len(saved(app)) == 1


@pytest.mark.parametrize("url", ["/wishlist/toggle", "/wishlist/1/remove", "/wishlist/1/move"])
def test_every_wishlist_post_needs_the_csrf_token(app, client, catalogue, signed_in, url):
    item_id = save_directly(app, signed_in, "aurelia-bangle")
    url = url.replace("/1/", f"/{item_id}/")
    response = client.post(url, data={"slug": "aurelia-solitaire-ring", "next": RING})
    assert response.status_code == 400
    htmx = client.open(url, method="POST", headers={"HX-Request": "true"}, data={})
    assert htmx.status_code == 400
    assert saved(app) == [("aurelia-bangle", {"metal": "yellow-gold"})]


# The wishlist page -------------------------------------------------------------------------

PROTECTED = [
    ("GET", "/wishlist"),
    ("POST", "/wishlist/1/remove"),
    ("POST", "/wishlist/1/move"),
]


@pytest.mark.parametrize(("method", "url"), PROTECTED)
def test_the_wishlist_needs_signing_in(client, catalogue, method, url):
    client.get("/wishlist/heart/aurelia-bangle")  # a page visit: the session has a CSRF token
    client.get("/")
    data = {"csrf_token": client.csrf_token} if method == "POST" else None
    headers = {"Referer": "http://localhost/wishlist"}
    response = client.open(url, method=method, data=data, headers=headers)
    assert response.status_code == 303
    assert urlsplit(response.headers["Location"]).path == "/auth/login"
    assert parse_qs(urlsplit(response.headers["Location"]).query)["next"] == ["/wishlist"]
    htmx = client.htmx(method, url, data=data, headers=headers)
    assert htmx.status_code == 204
    assert htmx.headers["HX-Redirect"].startswith("/auth/login?next=")


def test_the_wishlist_shows_summary_todays_price_and_availability(
    app, client, catalogue, signed_in
):
    save_directly(app, signed_in, "aurelia-solitaire-ring", ROSE)
    save_directly(app, signed_in, "aurelia-bangle")
    with app.app_context():
        # prices are computed when the list is shown, never stored
        option = db.session.scalars(
            select(ProductOption)
            .join(ProductOption.product)
            .where(Product.slug == "aurelia-solitaire-ring", ProductOption.code == "0.50ct")
        ).one()
        option.price_delta += 10000
        db.session.commit()
    response = client.get("/wishlist")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    page = page_text(response)
    assert "Your wishlist" in page
    assert "18k rose gold with 0.50 ct, G colour, VS1, US size 7, engraved “Always”" in page
    assert "£3,245" in page  # 1,850 + 1,300 + 95 engraving
    assert "Only 2 left" in page
    assert page.index("Aurelia Bangle") < page.index("Aurelia Solitaire Ring")  # newest first
    assert page.count("Move to bag") == 2
    buttons = [text_of(button) for button in elements(response, ".wishlist-item form button")]
    assert [button.split(":")[0] for button in buttons].count("Remove") == 2
    links = [str(a["href"]) for a in elements(response, ".wishlist-item__name a")]
    assert any(
        link.startswith("/shop/aurelia-solitaire-ring?metal=rose-gold&diamond=0.50ct")
        for link in links
    )


def test_an_empty_wishlist_says_so(client, catalogue, signed_in):
    page = page_text(client.get("/wishlist"))
    assert "Your wishlist is empty." in page


def test_the_header_links_to_the_wishlist_when_signed_in(client, catalogue, signed_in):
    [link] = elements(client.get("/"), 'a[href="/wishlist"]')
    assert text_of(link) == "Wishlist"


def test_a_configuration_no_longer_offered_shows_a_note_and_can_only_be_removed(
    app, client, catalogue, signed_in
):
    save_directly(app, signed_in, "aurelia-solitaire-ring", {"metal": "platinum"})
    with app.app_context():
        platinum = db.session.scalars(
            select(ProductOption)
            .join(ProductOption.product)
            .where(Product.slug == "aurelia-solitaire-ring", ProductOption.code == "platinum")
        ).one()
        db.session.delete(platinum)
        db.session.commit()
    page = Page(client.get("/wishlist"))
    item = text_of(page, ".wishlist-item")
    assert "This configuration is no longer offered." in item
    assert "Move to bag" not in item
    assert [text_of(button).split(":")[0] for button in page.select(".wishlist-item button")] == [
        "Remove"
    ]
    assert "£" not in text_of(page, "main")


def test_an_unpublished_piece_is_noted_and_can_only_be_removed(app, client, catalogue, signed_in):
    save_directly(app, signed_in, "aurelia-bangle")
    with app.app_context():
        product = db.session.scalars(select(Product).where(Product.slug == "aurelia-bangle")).one()
        product.published = False
        db.session.commit()
    page = Page(client.get("/wishlist"))
    assert "This piece is no longer offered." in text_of(page, ".wishlist-item")
    assert "Move to bag" not in text_of(page, ".wishlist-item")
    assert not [a for a in page.select("a[href]") if a["href"].startswith("/shop/aurelia-bangle")]


def test_remove_with_htmx_takes_the_item_away_and_says_so(app, client, catalogue, signed_in):
    first = save_directly(app, signed_in, "aurelia-bangle")
    second = save_directly(app, signed_in, "aurelia-signet-ring")
    client.get("/wishlist")
    response = client.htmx("POST", f"/wishlist/{first}/remove")
    assert response.status_code == 200
    assert text_of(response, "#messages") == "Aurelia Bangle is removed from your wishlist."
    # nothing takes the item's place (it is removed), and the list stays as it is
    assert top_level(response) == ["div#messages"]
    assert response.headers["Cache-Control"] == "no-store"

    last = Page(client.htmx("POST", f"/wishlist/{second}/remove"))
    items = last.one("section#wishlist-items")
    assert items["hx-swap-oob"] == "true"
    assert text_of(items).startswith("Your wishlist is empty.")
    assert saved(app) == []


def test_remove_without_javascript_redirects_to_the_wishlist(app, client, catalogue, signed_in):
    item_id = save_directly(app, signed_in, "aurelia-bangle")
    response = client.submit("/wishlist", {}, action=f"/wishlist/{item_id}/remove")
    assert response.status_code == 303
    assert response.headers["Location"] == "/wishlist"
    assert "Aurelia Bangle is removed from your wishlist." in page_text(client.get("/wishlist"))
    assert saved(app) == []


def test_someone_elses_item_is_not_found(app, client, catalogue, auth, signed_in):
    other = auth.create_user("grace@example.com")
    item_id = save_directly(app, other, "aurelia-bangle")
    client.get("/wishlist")
    for action in ("remove", "move"):
        response = client.post(
            f"/wishlist/{item_id}/{action}", data={"csrf_token": client.csrf_token}
        )
        assert response.status_code == 404
    assert len(saved(app, other)) == 1


# Move to bag (the bag service) -------------------------------------------------------------


def bag_lines(app, user_id: int) -> list[tuple[str, dict, int]]:
    with app.app_context():
        cart = db.session.scalars(select(Cart).where(Cart.user_id == user_id)).one_or_none()
        if cart is None:
            return []
        return [(line.product.slug, line.configuration, line.quantity) for line in cart.lines]


def test_move_to_bag_with_htmx_moves_the_configuration_and_updates_the_bag_count(
    app, client, catalogue, signed_in
):
    item_id = save_directly(app, signed_in, "aurelia-solitaire-ring", ROSE)
    save_directly(app, signed_in, "aurelia-bangle")
    client.get("/wishlist")
    response = client.htmx("POST", f"/wishlist/{item_id}/move")
    assert response.status_code == 200
    page = Page(response)
    assert page.one("#bag-count")["hx-swap-oob"] == "true"
    assert bag_count(page) == 1
    assert page.one("#messages")["hx-swap-oob"] == "innerHTML"
    assert not page.select(".wishlist-item")
    assert text_of(page, "#messages") == "Added Aurelia Solitaire Ring to your bag."
    assert bag_lines(app, signed_in) == [("aurelia-solitaire-ring", ROSE, 1)]
    assert [slug for slug, _ in saved(app)] == ["aurelia-bangle"]


def test_an_accounts_two_browsers_moving_pieces_to_a_bag_it_has_not_got_fill_one_bag(
    app, client, catalogue, auth, signed_in
):
    """The account has no bag; its phone moves one piece from the wishlist as the laptop moves
    another. Both make a bag: the second to write it collides with the first's and tries
    once more, into that bag. Before, it answered 500."""
    ring = save_directly(app, signed_in, "aurelia-solitaire-ring", ROSE)
    bangle = save_directly(app, signed_in, "aurelia-bangle")
    phone = app.test_client()
    AuthActions(app, phone).login()
    phone.get("/wishlist")
    client.get("/wishlist")

    def move_from_the_phone() -> None:
        assert phone.htmx("POST", f"/wishlist/{bangle}/move").status_code == 200

    postgresql = app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql")
    written_with = "WITH new_bag" if postgresql else "INSERT INTO carts"
    with meanwhile(app, written_with, lambda: in_another_window(move_from_the_phone)) as raced:
        moved = client.htmx("POST", f"/wishlist/{ring}/move")

    assert raced
    assert moved.status_code == 200
    assert bag_count(Page(moved)) == 2
    assert sorted(slug for slug, _, _ in bag_lines(app, signed_in)) == [
        "aurelia-bangle",
        "aurelia-solitaire-ring",
    ]
    assert saved(app) == []


def test_one_saved_piece_moved_from_two_windows_at_once_goes_in_the_bag_once(
    app, client, catalogue, auth, signed_in
):
    """Both windows had the piece on their wishlist; the first to take it off moves it, the
    other finds it gone (404). Before, both added it: two in the bag where one was moved."""
    bangle = save_directly(app, signed_in, "aurelia-bangle")
    ring = save_directly(app, signed_in, "aurelia-solitaire-ring", ROSE)
    client.get("/wishlist")
    assert client.htmx("POST", f"/wishlist/{bangle}/move").status_code == 200  # the bag
    phone = app.test_client()
    AuthActions(app, phone).login()
    phone.get("/wishlist")
    answers = []

    def move_from_the_phone() -> None:
        answers.append(phone.htmx("POST", f"/wishlist/{ring}/move").status_code)

    # Both have read the piece; the phone moves it as the laptop starts to change the bag.
    with meanwhile(app, "UPDATE carts", lambda: in_another_window(move_from_the_phone)) as raced:
        moved = client.htmx("POST", f"/wishlist/{ring}/move")

    assert raced
    assert answers == [200]
    assert moved.status_code == 404
    assert sorted((slug, quantity) for slug, _, quantity in bag_lines(app, signed_in)) == [
        ("aurelia-bangle", 1),
        ("aurelia-solitaire-ring", 1),
    ]
    assert saved(app) == []


def test_move_to_bag_without_javascript_redirects_to_the_wishlist(
    app, client, catalogue, signed_in
):
    item_id = save_directly(app, signed_in, "aurelia-bangle", {"engraving": "Ada"})
    response = client.submit("/wishlist", {}, action=f"/wishlist/{item_id}/move")
    assert response.status_code == 303
    assert response.headers["Location"] == "/wishlist"
    page = page_text(client.get("/wishlist"))
    assert "Your wishlist is empty." in page
    assert bag_lines(app, signed_in) == [
        ("aurelia-bangle", {"metal": "yellow-gold", "engraving": "Ada"}, 1)
    ]


def test_move_to_bag_refused_by_the_bag_keeps_the_item_with_the_reason(
    app, client, catalogue, signed_in
):
    item_id = save_directly(app, signed_in, "aurelia-bangle")
    with app.app_context():
        cart = bag.cart_for(db.session, user_id=signed_in, create=True)
        cart.frozen_at = utcnow()
        db.session.commit()
    client.get("/wishlist")
    response = client.htmx("POST", f"/wishlist/{item_id}/move")
    assert response.status_code == 422
    item = Page(response).one(f"#wishlist-item-{item_id}")
    assert text_of(item, '[role="alert"]') == bag.FROZEN_MESSAGE
    plain = client.post(f"/wishlist/{item_id}/move", data={"csrf_token": client.csrf_token})
    assert plain.status_code == 422
    assert "Your wishlist" in page_text(plain)
    assert len(saved(app)) == 1
    assert bag_lines(app, signed_in) == []


def test_a_sold_out_configuration_stays_with_the_reason(app, client, catalogue, signed_in):
    item_id = save_directly(app, signed_in, "aurelia-solitaire-ring", PLATINUM)
    assert "Sold out in platinum" in page_text(client.get("/wishlist"))
    response = client.htmx("POST", f"/wishlist/{item_id}/move")
    assert response.status_code == 422
    assert "Sold out in platinum" in page_text(response)
    assert len(saved(app)) == 1
    assert bag_lines(app, signed_in) == []


def test_a_ring_saved_without_a_size_asks_for_one_before_the_bag(app, client, catalogue, signed_in):
    item_id = save_directly(app, signed_in, "aurelia-solitaire-ring")
    page = Page(client.get("/wishlist"))
    assert "Move to bag" not in text_of(page, ".wishlist-item")
    choose = page.one(".wishlist-item__actions a.button")
    assert choose["href"] == "/shop/aurelia-solitaire-ring?metal=yellow-gold&diamond=0.30ct"
    assert text_of(choose).startswith("Choose your size")
    response = client.post(f"/wishlist/{item_id}/move", data={"csrf_token": client.csrf_token})
    assert response.status_code == 422
    assert wishlist.NEEDS_SIZE in page_text(response)
    assert bag_lines(app, signed_in) == []


# Queries -----------------------------------------------------------------------------------


def test_hearts_cost_one_query_per_page_whatever_the_catalogue_size(
    app, client, catalogue, queries, signed_in
):
    for slug in ("aurelia-solitaire-ring", "aurelia-bangle", "lumiere-halo-ring"):
        save_directly(app, signed_in, slug)

    def count(url: str) -> int:
        with app.app_context():
            forget_kept()  # what a page costs before its cached parts are cached
        with queries() as statements:
            assert client.get(url).status_code == 200
        return len(statements)

    urls = ["/shop?sort=price-asc", RING, "/", "/collections/aurelia"]
    client.get(RING)  # each count below is of a repeat view, which records nothing
    before = [count(url) for url in urls]
    bigger = {**catalogue, "products": []}
    for copy in range(3):
        for product in catalogue["products"]:
            bigger["products"].append(
                {**product, "slug": f"{product['slug']}-{copy}", "featured": None}
            )
    with app.app_context():
        seed_catalogue(db.session, bigger)
        db.session.commit()
    for copy in range(3):
        save_directly(app, signed_in, f"aurelia-signet-ring-{copy}")

    assert [count(url) for url in urls] == before
    with queries() as statements:
        client.get("/shop")
    assert sum("wishlist_items" in statement for statement in statements) == 1


def test_the_wishlist_page_uses_a_constant_number_of_queries(
    app, client, catalogue, queries, signed_in
):
    save_directly(app, signed_in, "aurelia-solitaire-ring")

    def count() -> int:
        with queries() as statements:
            assert client.get("/wishlist").status_code == 200
        return len(statements)

    one = count()
    for slug in ("aurelia-bangle", "lumiere-halo-ring", "ondine-cuff", "meridian-bar-pendant"):
        save_directly(app, signed_in, slug)
    assert count() == one


@pytest.mark.parametrize("scope", ["piece", "configuration"])
def test_a_heart_drawn_before_a_save_elsewhere_never_removes_it(
    app, client, catalogue, signed_in, scope
):
    """A listing (or product page) a moment old, or another tab, still showed the piece
    unsaved; pressing its heart removed every version saved since, engravings and all
    (found by review: a lagging read replica draws every card like that). A heart does what
    it showed it would."""
    page = "/shop" if scope == "piece" else f"{RING}?metal=platinum&diamond=0.50ct&size=7"
    drawn = Page(client.get(page))
    heart = f"#heart-{scope}-{product_id(app, 'aurelia-solitaire-ring')}"
    fields = form_fields(drawn, f"form.wishlist-heart:has({heart})")
    assert fields["intent"] == "save"
    save_directly(app, signed_in, "aurelia-solitaire-ring", PLATINUM)  # another tab
    save_directly(app, signed_in, "aurelia-solitaire-ring", ROSE)

    response = client.post("/wishlist/toggle", data={**fields, "next": page})

    assert response.status_code == 303
    kept = [configuration for _, configuration in saved(app)]
    assert PLATINUM in kept
    assert ROSE in kept
    assert len(kept) == (2 if scope == "piece" else 3)  # the page's own choices saved too
    assert "saved to your wishlist" in page_text(client.get(response.location))
