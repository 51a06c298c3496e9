"""The wishlist over HTTP: the heart on cards and product pages, the list, Move to bag, Remove."""

from __future__ import annotations

import re
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
from tests.conftest import page_text

RING = "/shop/aurelia-solitaire-ring"
PLATINUM = {"metal": "platinum", "diamond": "0.50ct", "size": "7", "engraving": "Always"}
ROSE = {**PLATINUM, "metal": "rose-gold"}  # in stock (2 left); platinum is sold out
HEART = re.compile(r'<form class="wishlist-heart[^"]*"[^>]*>.*?</form>', re.S)
PRESSED = re.compile(r'id="heart-(piece|configuration)-(\d+)" type="submit" aria-pressed="(\w+)"')


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


def hearts(response) -> dict[int, bool]:
    """Product id -> whether its heart is pressed, for every heart on the page."""
    return {
        int(product_id): pressed == "true"
        for _, product_id, pressed in PRESSED.findall(response.get_data(as_text=True))
    }


def product_id(app, slug: str) -> int:
    with app.app_context():
        return db.session.scalars(select(Product.id).where(Product.slug == slug)).one()


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
    body = page_text(response)
    assert body.lstrip().startswith('<form class="wishlist-heart')
    assert "<html" not in body
    assert 'aria-pressed="true"' in body
    assert "Remove from wishlist" in body
    assert 'hx-target="this" hx-swap="outerHTML"' in body
    assert '<div id="messages" hx-swap-oob="innerHTML">' in body
    assert "Aurelia Solitaire Ring is saved to your wishlist." in body
    assert "HX-Request" in response.headers["Vary"]
    assert response.headers["Cache-Control"] == "no-store"
    assert saved(app, signed_in) == [("aurelia-solitaire-ring", PLATINUM)]


def test_pressing_the_heart_again_removes_that_configuration(app, client, catalogue, signed_in):
    fields = {"slug": "aurelia-solitaire-ring", "scope": "configuration", **PLATINUM}
    toggle(client, RING, htmx=True, **fields)
    response = toggle(client, RING, htmx=True, **fields)
    body = page_text(response)
    assert 'aria-pressed="false"' in body
    assert "Save to wishlist" in body
    assert "Aurelia Solitaire Ring is removed from your wishlist." in body
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
    body = client.get(f"{RING}?metal=platinum&size=7").get_data(as_text=True)
    [heart] = HEART.findall(body)
    # htmx posts the live configurator choices and refreshes the heart when they change;
    # without JavaScript the choices last shown are posted from <noscript> fields.
    assert 'hx-include="form.configurator"' in heart
    assert 'hx-get="/wishlist/heart/aurelia-solitaire-ring"' in heart
    assert 'hx-trigger="change from:form.configurator' in heart
    assert (
        '<noscript><input type="hidden" name="metal" value="platinum">'
        '<input type="hidden" name="size" value="7"></noscript>'
    ) in heart
    assert 'method="post" action="/wishlist/toggle"' in heart


def test_the_heart_refresh_says_whether_the_chosen_configuration_is_saved(
    app, client, catalogue, signed_in
):
    save_directly(app, signed_in, "aurelia-solitaire-ring", {"metal": "platinum"})
    url = "/wishlist/heart/aurelia-solitaire-ring"
    on = client.htmx("GET", url, query_string={"metal": "platinum", "size": ""})
    off = client.htmx("GET", url, query_string={"metal": "rose-gold"})
    assert 'aria-pressed="true"' in on.get_data(as_text=True)
    assert 'aria-pressed="false"' in off.get_data(as_text=True)
    # the guest's way back is the piece as now configured
    assert f'name="next" value="{RING}?metal=rose-gold"' in off.get_data(as_text=True)
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
    body = page_text(response)
    assert 'aria-pressed="true"' in body
    assert "Remove from wishlist: Aurelia Solitaire Ring" in body
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
    assert 'href="/wishlist"' not in response.get_data(as_text=True)


# Refusals ----------------------------------------------------------------------------------


def test_an_invalid_configuration_is_422_with_the_message_and_nothing_saved(
    app, client, catalogue, signed_in
):
    fields = {"slug": "aurelia-solitaire-ring", "metal": "platinum", "engraving": "I <3 you"}
    response = toggle(client, RING, htmx=True, **fields)
    assert response.status_code == 422
    body = page_text(response)
    assert 'aria-pressed="false"' in body
    assert '<div class="notice notice--error">' in body
    assert "“<” can't be engraved" in body

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
    assert page.count(">Remove<") == 2
    assert 'href="/shop/aurelia-solitaire-ring?metal=rose-gold&diamond=0.50ct' in page


def test_an_empty_wishlist_says_so(client, catalogue, signed_in):
    page = page_text(client.get("/wishlist"))
    assert "Your wishlist is empty." in page


def test_the_header_links_to_the_wishlist_when_signed_in(client, catalogue, signed_in):
    assert 'href="/wishlist">Wishlist</a>' in client.get("/").get_data(as_text=True)


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
    page = page_text(client.get("/wishlist"))
    assert "This configuration is no longer offered." in page
    assert "Move to bag" not in page
    assert ">Remove<" in page
    assert "£" not in page.split("Your wishlist")[-1].split("site-footer")[0]


def test_an_unpublished_piece_is_noted_and_can_only_be_removed(app, client, catalogue, signed_in):
    save_directly(app, signed_in, "aurelia-bangle")
    with app.app_context():
        product = db.session.scalars(select(Product).where(Product.slug == "aurelia-bangle")).one()
        product.published = False
        db.session.commit()
    page = page_text(client.get("/wishlist"))
    assert "This piece is no longer offered." in page
    assert "Move to bag" not in page
    assert 'href="/shop/aurelia-bangle' not in page


def test_remove_with_htmx_takes_the_item_away_and_says_so(app, client, catalogue, signed_in):
    first = save_directly(app, signed_in, "aurelia-bangle")
    second = save_directly(app, signed_in, "aurelia-signet-ring")
    client.get("/wishlist")
    response = client.htmx("POST", f"/wishlist/{first}/remove")
    assert response.status_code == 200
    body = page_text(response)
    assert "Aurelia Bangle is removed from your wishlist." in body
    assert 'class="wishlist-item' not in body  # the empty body replaces (removes) the item
    assert "wishlist-items" not in body
    assert response.headers["Cache-Control"] == "no-store"

    last = client.htmx("POST", f"/wishlist/{second}/remove")
    body = page_text(last)
    assert re.search(r'<section id="wishlist-items"[^>]* hx-swap-oob="true">', body)
    assert "Your wishlist is empty." in body
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
    body = page_text(response)
    assert re.search(r'<span id="bag-count"[^>]*hx-swap-oob="true"[^>]*>1\b', body)
    assert '<div id="messages" hx-swap-oob="innerHTML">' in body
    assert 'class="wishlist-item' not in body
    assert "Added Aurelia Solitaire Ring to your bag." in body
    assert bag_lines(app, signed_in) == [("aurelia-solitaire-ring", ROSE, 1)]
    assert [slug for slug, _ in saved(app)] == ["aurelia-bangle"]


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
    body = page_text(response)
    assert f'id="wishlist-item-{item_id}"' in body
    assert 'role="alert"' in body
    assert bag.FROZEN_MESSAGE in body
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
    page = client.get("/wishlist").get_data(as_text=True)
    assert "Move to bag" not in page
    assert (
        '<a class="button button--small" '
        'href="/shop/aurelia-solitaire-ring?metal=yellow-gold&amp;diamond=0.30ct">Choose your size'
    ) in page
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
        with queries() as statements:
            assert client.get(url).status_code == 200
        return len(statements)

    urls = ["/shop?sort=price-asc", RING, "/", "/collections/aurelia"]
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
