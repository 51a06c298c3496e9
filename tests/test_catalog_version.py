"""What the shop window keeps of the catalogue (cards, choices, pieces) is never shown late.

The pages keep what is the same for every shopper under the catalogue's version, which the
database renews with every committed change to pieces, options, stock or collections,
whoever makes it. Each test first has the pages kept (a second visit reads no piece or stock
from the database), then changes the catalogue the way the shop, a command or a console
would, and looks at the very next page.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime

import pytest
import time_machine
from flask import Flask
from itsdangerous import URLSafeTimedSerializer
from markupsafe import Markup
from sqlalchemy import create_engine, select, text

from elysium.extensions import cache, db
from elysium.models import CartLine, Collection, Inventory, Product
from elysium.services import inventory
from elysium.services.seeding import seed_catalogue
from elysium.web.fragments import TEMPLATES, Memo, forget_kept, near_cache
from tests.conftest import ShopClient, count_queries, make_app, page_text
from tests.html import Page, elements, form_fields, hearts, text_of
from tests.support.checkout import set_stock
from tests.support.orders import pending_chain_order

RING = "aurelia-solitaire-ring"
CHAIN = "aurelia-fine-chain"
HTMX = {"HX-Request": "true"}
RING_PRICE = f"/shop/{RING}/price?metal=platinum&diamond=0.50ct&size=6"
CHAIN_PRICE = f"/shop/{CHAIN}/price?metal=yellow-gold"


def card(response, name: str) -> str | None:
    """The text of the card of the piece called ``name`` on the page, None if not shown."""
    for found in elements(response, ".product-card"):
        if text_of(found, ".product-card__name") == name:
            return text_of(found)
    return None


def kept(client: ShopClient, *urls: str, **headers: str) -> None:
    """Visit each page twice: the second visit is drawn from what was kept (no stock read:
    every card and every piece's page reads it), so a later page can only be right if the
    change reached what was kept."""
    for url in urls:
        assert client.get(url, headers=headers).status_code == 200
        with count_queries(client.application) as statements:
            assert client.get(url, headers=headers).status_code == 200
        read = [statement for statement in statements if "inventory" in statement]
        assert read == [], f"{url} was not kept: {read}"


def ring_stock(app, assignments: str) -> None:
    """Change the stock row of the ring in yellow gold with a 0.30 ct diamond, from outside
    the shop (as a console would: the database's triggers decide the catalogue's version)."""
    engine = create_engine(app.config["SQLALCHEMY_DATABASE_URI"])
    with engine.begin() as connection:
        connection.execute(
            text(
                f"UPDATE inventory SET {assignments} WHERE variant_key = 'yellow-gold/0.30ct' "
                "AND product_id = (SELECT id FROM products WHERE slug = :slug)"
            ),
            {"slug": RING},
        )
    engine.dispose()


def catalog_token(app) -> str:
    with app.app_context():
        return db.session.scalar(text("SELECT token FROM catalog_version WHERE id = 1"))


def test_a_price_change_shows_at_once_on_every_page(app, client, catalogue):
    kept(client, "/", "/shop", f"/shop/{RING}")
    kept(client, RING_PRICE, **HTMX)
    assert "From £1,850" in card(client.get("/shop"), "Aurelia Solitaire Ring")
    assert "£3,500" in text_of(client.get(RING_PRICE, headers=HTMX), ".price-total")

    changed = {
        **catalogue,
        "products": [
            {
                **product,
                "base_price": 190000,
                "metals": [
                    {**metal, "delta": 50000} if metal["code"] == "platinum" else metal
                    for metal in product["metals"]
                ],
            }
            if product["slug"] == RING
            else product
            for product in catalogue["products"]
        ],
    }
    with app.app_context():
        seed_catalogue(db.session, changed)  # what `flask seed` (and a sync) does
        db.session.commit()

    assert "From £1,900" in card(client.get("/"), "Aurelia Solitaire Ring")
    assert "From £1,900" in card(client.get("/shop"), "Aurelia Solitaire Ring")
    product_page = client.get(f"/shop/{RING}")
    assert text_of(product_page, ".product__from") == "From £1,900"
    assert "£1,900" in text_of(product_page, ".price-total")
    # 1,900 + 500 for platinum (was 450) + 1,200 for the half carat
    assert "£3,600" in text_of(client.get(RING_PRICE, headers=HTMX), ".price-total")


def test_a_made_to_order_promise_follows_the_day_whatever_was_kept(app, client, catalogue):
    """The signet ships three weeks from the day it is ordered: kept one day, its page must
    promise the next day's date the next day. Before, each process kept the first date for
    as long as the catalogue did not change."""
    signet = "/shop/aurelia-signet-ring"
    with time_machine.travel(datetime(2027, 1, 4, 9, tzinfo=UTC)):
        kept(client, signet)
        assert "by 25 January" in text_of(client.get(signet), "#price-panel")

    with time_machine.travel(datetime(2027, 1, 7, 9, tzinfo=UTC)):
        assert "by 28 January" in text_of(client.get(signet), "#price-panel")


def test_a_change_keeps_nothing_it_read(app, client, catalogue):
    """Only a GET or a HEAD keeps what it made: a change (here "Add to bag" refused, the chain
    sold out, which draws the product page again) may have read the catalogue before the
    version it would file it under. With nothing kept, the page seen next reads the piece."""
    set_stock(app, 0)
    client.get(f"/shop/{CHAIN}")
    forget_kept(app)

    refused = client.post(
        "/cart/items",
        data={"csrf_token": client.csrf_token, "product": CHAIN, "metal": "yellow-gold"},
    )
    assert refused.status_code == 409, page_text(refused)

    with count_queries(app) as statements:
        assert client.get(f"/shop/{CHAIN}").status_code == 200
    assert [statement for statement in statements if "FROM product_options" in statement]


def test_add_to_bag_decides_on_the_stock_as_it_is_not_as_it_was_kept(app, client, catalogue):
    """A reservation that leaves a variant "In stock" keeps the catalogue's version, and so
    the piece kept under it with the stock it had then (migration 0009). Add to bag takes the
    rest of the piece from what was kept, but reads the stock now: it never puts in a bag
    more than is left to sell."""
    page = f"/shop/{RING}?metal=yellow-gold&diamond=0.30ct&size=6"
    ring_stock(app, "stock_level = 10, reserved = 0, low_stock_threshold = 2")
    kept(client, page)
    before = catalog_token(app)
    ring_stock(app, "reserved = 7")  # 3 to sell: still "In stock"
    assert catalog_token(app) == before

    choices = {"metal": "yellow-gold", "diamond": "0.30ct", "size": "6"}
    with count_queries(app) as statements:
        added = client.htmx(
            "POST", "/cart/items", data={"product": RING, "quantity": "5", **choices}
        )

    assert added.status_code == 200
    assert "Added 3 of Aurelia Solitaire Ring to your bag" in page_text(added)
    assert not [statement for statement in statements if "FROM product_options" in statement]
    with app.app_context():
        assert db.session.scalars(select(CartLine.quantity)).all() == [3]


def test_the_bag_shows_its_pieces_stock_as_it_is_and_their_prices_as_they_are(
    app, client, catalogue
):
    """The bag's page takes its pieces' words, options and prices from the copies kept under
    the catalogue's version, and reads their stock now: a reservation that keeps the version
    shows at once, and so does a new price (a new version)."""
    ring_stock(app, "stock_level = 10, reserved = 0, low_stock_threshold = 0")
    choices = {"metal": "yellow-gold", "diamond": "0.30ct", "size": "6"}
    client.get(f"/shop/{RING}")
    added = client.post(
        "/cart/items",
        data={"csrf_token": client.csrf_token, "product": RING, "quantity": "3", **choices},
    )
    assert added.status_code == 303, page_text(added)
    assert client.get("/cart").status_code == 200
    with count_queries(app) as statements:
        bag = client.get("/cart")
    assert not [statement for statement in statements if "FROM product_options" in statement]
    assert "£5,550" in text_of(bag, ".bag-line__total")
    before = catalog_token(app)

    ring_stock(app, "reserved = 8")  # 2 left to sell: still "In stock", the same version

    assert catalog_token(app) == before
    problem = text_of(client.get("/cart"), ".bag-line__problem")
    assert "Only 2 left in 18k yellow gold with 0.30 ct" in problem

    ring_stock(app, "reserved = 0")
    changed = {
        **catalogue,
        "products": [
            {**product, "base_price": 190000} if product["slug"] == RING else product
            for product in catalogue["products"]
        ],
    }
    with app.app_context():
        seed_catalogue(db.session, changed)
        db.session.commit()

    assert "£5,700" in text_of(client.get("/cart"), ".bag-line__total")


def test_a_piece_selling_out_and_coming_back_shows_at_once(app, client, catalogue):
    with app.app_context():
        for row in db.session.scalars(select(Inventory).join(Product).where(Product.slug == CHAIN)):
            if row.variant_key != "yellow-gold":
                row.stock_level = 0
        db.session.commit()
    listing = "/shop?category=necklace&sort=price-asc"
    kept(client, listing, f"/shop/{CHAIN}")
    kept(client, CHAIN_PRICE, **HTMX)
    assert "Sold out" not in card(client.get(listing), "Aurelia Fine Chain")

    # A checkout reserves the last yellow-gold chain: every chain is taken.
    order = pending_chain_order(app, stock_level=1)

    assert "Sold out" in card(client.get(listing), "Aurelia Fine Chain")
    product_page = client.get(f"/shop/{CHAIN}")
    assert "Sold out" in text_of(product_page, ".price-panel .availability")
    assert Page(product_page).one(".add-to-bag__button").has_attr("disabled")
    fragment = client.get(CHAIN_PRICE, headers=HTMX)
    assert "Sold out" in text_of(fragment, ".price-panel .availability")

    # The checkout is abandoned: its unit is back on sale at once.
    with app.app_context():
        inventory.release(db.session, order["inventory_id"], 1, order_id=order["id"])
        db.session.commit()

    assert "Sold out" not in card(client.get(listing), "Aurelia Fine Chain")
    assert "Only 1 left" in text_of(client.get(f"/shop/{CHAIN}"), ".price-panel .availability")
    fragment = client.get(CHAIN_PRICE, headers=HTMX)
    assert "Only 1 left" in text_of(fragment, ".price-panel .availability")


def set_published(app: Flask, slug: str, published: bool) -> None:
    with app.app_context():
        product = db.session.scalars(select(Product).where(Product.slug == slug)).one()
        product.published = published
        db.session.commit()


def test_unpublishing_and_publishing_again_show_at_once(app, client, catalogue):
    kept(client, "/", "/shop", f"/shop/{RING}")
    kept(client, RING_PRICE, **HTMX)

    set_published(app, RING, False)

    assert card(client.get("/"), "Aurelia Solitaire Ring") is None
    assert card(client.get("/shop"), "Aurelia Solitaire Ring") is None
    assert "23 pieces" in text_of(client.get("/shop"), "#results-count")
    assert client.get(f"/shop/{RING}").status_code == 404
    assert client.get(RING_PRICE, headers=HTMX).status_code == 404

    set_published(app, RING, True)

    assert card(client.get("/"), "Aurelia Solitaire Ring") is not None
    assert card(client.get("/shop"), "Aurelia Solitaire Ring") is not None
    assert client.get(f"/shop/{RING}").status_code == 200
    assert client.get(RING_PRICE, headers=HTMX).status_code == 200


def test_a_renamed_collection_and_a_new_piece_show_at_once(app, client, catalogue):
    kept(client, "/", "/shop")
    with app.app_context():
        collection = db.session.scalars(select(Collection).where(Collection.slug == "aurelia"))
        collection.one().name = "Aurélia"
        db.session.commit()

    listing = client.get("/shop")
    assert "Aurélia" in card(listing, "Aurelia Solitaire Ring")
    assert "Aurélia" in [text_of(option) for option in elements(listing, "#collection option")]
    assert "Aurélia" in page_text(client.get("/"))

    new = {**next(p for p in catalogue["products"] if p["slug"] == CHAIN)}
    new.update(slug="aurelia-fine-chain-long", name="Aurelia Long Chain", featured=0)
    with app.app_context():
        seed_catalogue(db.session, {**catalogue, "products": [new]})
        db.session.commit()

    assert card(client.get("/shop?q=long+chain"), "Aurelia Long Chain") is not None
    assert card(client.get("/"), "Aurelia Long Chain") is not None  # now the first featured
    assert client.get("/shop/aurelia-fine-chain-long").status_code == 200


@pytest.fixture
def second_server(app: Flask) -> Flask:
    """Another app on the same database with a cache of its own (another worker, another
    server without Redis): it must never show what it kept once the catalogue changed."""
    return make_app(app.config["SQLALCHEMY_DATABASE_URI"])


def test_a_change_made_outside_the_shop_reaches_every_server_at_once(
    app, client, catalogue, second_server
):
    other = second_server.test_client()
    for browser in (client, other):
        kept(browser, "/shop", f"/shop/{RING}")
    assert "From £1,850" in card(other.get("/shop"), "Aurelia Solitaire Ring")

    # Someone edits the database from a console, through a connection of their own.
    engine = create_engine(app.config["SQLALCHEMY_DATABASE_URI"])
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE products SET base_price = 177700 WHERE slug = :slug"), {"slug": RING}
        )
    engine.dispose()

    for browser in (client, other):
        assert "From £1,777" in card(browser.get("/shop"), "Aurelia Solitaire Ring")
        assert text_of(browser.get(f"/shop/{RING}"), ".product__from") == "From £1,777"


def test_each_process_keeps_its_own_copies_and_a_change_still_shows_at_once(app, client, catalogue):
    """The shared cache emptied behind the shop's back (Redis restarted, say): the pages are
    still drawn from the process's own copies, and a change still shows on the next page."""
    kept(client, "/shop", f"/shop/{RING}")
    with app.app_context():
        cache.clear()
    kept_again = [f"/shop/{RING}", "/shop"]
    for url in kept_again:
        with count_queries(app) as statements:
            assert client.get(url).status_code == 200
        assert [s for s in statements if "inventory" in s] == [], url

    engine = create_engine(app.config["SQLALCHEMY_DATABASE_URI"])
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE products SET base_price = 177700 WHERE slug = :slug"), {"slug": RING}
        )
    engine.dispose()
    assert "From £1,777" in card(client.get("/shop"), "Aurelia Solitaire Ring")
    assert text_of(client.get(f"/shop/{RING}"), ".product__from") == "From £1,777"


def test_a_reservation_no_shopper_can_see_keeps_what_is_kept_and_a_visible_one_renews_it(
    app, client, catalogue
):
    """Checkouts reserve stock all day: while a variant stays "In stock" before and after, the
    catalogue's version (and so everything kept) stays; once it runs low, comes back or its
    stock level changes, the version is renewed and the very next page shows it."""
    page = f"/shop/{RING}?metal=yellow-gold&diamond=0.30ct&size=6"

    def console(sql: str) -> None:
        ring_stock(app, sql)

    def version() -> str:
        return catalog_token(app)

    def shown() -> str:
        return text_of(client.get(page), ".price-panel .availability")

    console("stock_level = 10, reserved = 0, low_stock_threshold = 2")
    assert shown() == "In stock"
    kept(client, page, "/shop")
    before = version()

    console("reserved = 3")  # 7 to sell: still "In stock"
    assert version() == before
    kept(client, page, "/shop")
    console("reserved = 7")  # 3 to sell
    assert version() == before

    console("reserved = 8")  # 2 to sell: "Only 2 left"
    assert version() != before
    assert shown() == "Only 2 left"
    low = version()
    console("reserved = 7")  # back to 3: "In stock" again
    assert version() != low
    assert shown() == "In stock"

    back = version()
    console("stock_level = 20")  # more stock, though "In stock" both times
    assert version() != back
    quiet = version()
    console("low_stock_threshold = 5")
    assert version() != quiet


def test_reading_the_shop_leaves_the_version_alone(app, client, catalogue):
    def version() -> str:
        with app.app_context():
            found = db.session.scalar(text("SELECT token FROM catalog_version WHERE id = 1"))
            db.session.remove()
            return found

    before = version()
    for url in ("/", "/shop", f"/shop/{RING}", "/shop?category=ring", "/collections/aurelia"):
        assert client.get(url).status_code == 200
    assert client.get(RING_PRICE, headers=HTMX).status_code == 200
    assert version() == before


def test_a_price_panel_bringing_add_to_bag_is_never_kept_for_another_shopper(
    app, client, catalogue
):
    """The panel that brings a new "Add to bag" block carries the shopper's CSRF token: each
    shopper gets their own, however often the same choices are asked for."""
    sold_out = f"/shop/{RING}/price?metal=platinum&diamond=0.50ct&size=6&add_to_bag_state=available"
    # What a token carries: the session's secret (the signed text changes every second).
    secret_of = URLSafeTimedSerializer(app.secret_key, salt="wtf-csrf-token").loads
    secrets = []
    for browser in (client, app.test_client(), app.test_client()):
        browser.get(f"/shop/{RING}")  # a session, with its token
        panel = browser.get(sold_out, headers=HTMX)
        button = Page(panel).one("#add-to-bag .add-to-bag__button")
        assert button.has_attr("disabled")
        assert secret_of(button["value"]) == secret_of(browser.csrf_token)
        secrets.append(secret_of(button["value"]))
    assert len(set(secrets)) == 3


def test_the_product_page_keeps_nothing_of_the_shoppers_and_follows_the_choices(
    app, client, catalogue, auth
):
    """Parts of the product page are kept per catalogue version and choices; the heart, the
    Add to bag token, the bag count and Recently viewed are drawn for each shopper."""
    auth.create_user()
    auth.login()
    page = f"/shop/{RING}?metal=yellow-gold"
    heart = client.submit(
        page,
        {"slug": RING, "scope": "configuration", "metal": "yellow-gold", "next": page},
        action="/wishlist/toggle",
    )
    assert heart.status_code == 303
    added = client.submit(
        page,
        {
            "product": RING,
            "quantity": "2",
            "size": "6",
            "metal": "yellow-gold",
            "diamond": "0.30ct",
        },
        action="/cart/items",
    )
    assert added.status_code == 303
    kept(client, page)
    member = client.get(page)
    guest = app.test_client()
    first_visit = guest.get(page)

    def pressed(response) -> str:
        return elements(response, "form.wishlist-heart--configuration button")[0]["aria-pressed"]

    def add_to_bag_token(response) -> str:
        return elements(response, "button.add-to-bag__button")[0]["value"]

    assert (pressed(member), pressed(first_visit)) == ("true", "false")
    # The same piece in another metal is not what the member saved, however often it is asked.
    other = f"/shop/{RING}?metal=platinum"
    kept(client, other)
    assert pressed(client.get(other)) == "false"
    assert add_to_bag_token(member) != add_to_bag_token(first_visit)
    assert text_of(member, "#bag-count") == "2 items"
    assert text_of(first_visit, "#bag-count") == "0 items"
    assert "Sign in" in text_of(first_visit, ".header-actions")
    assert "Account" in text_of(member, ".header-actions")

    for metal in ("yellow-gold", "platinum", "yellow-gold"):
        shown = guest.get(f"/shop/{RING}?metal={metal}")
        assert [radio["value"] for radio in elements(shown, "input[name=metal][checked]")] == [
            metal
        ]
    wrong = guest.get(f"/shop/{RING}?metal=platinum&size=99")
    assert wrong.status_code == 422
    assert text_of(wrong, "#error-size")
    right = guest.get(f"/shop/{RING}?metal=platinum&size=6")
    assert right.status_code == 200
    assert text_of(right, "#error-size") == ""


def test_the_listing_and_home_page_kept_for_everyone_show_each_shopper_their_own(
    app, client, catalogue, auth
):
    """The listing's region and the home page are kept whole for every shopper, with marks
    where the hearts go: each shopper still gets their own hearts (with their own CSRF token),
    bag count and header, on the page and in the listing's htmx answer."""
    auth.create_user()
    auth.login()
    ring = client.get(f"/shop/{RING}")
    ring_id = int(Page(ring).one("form.wishlist-heart button")["id"].rsplit("-", 1)[1])
    saved = client.submit(
        "/shop", {"slug": RING, "scope": "piece", "next": "/shop"}, action="/wishlist/toggle"
    )
    assert saved.status_code == 303
    assert (
        client.submit(
            f"/shop/{RING}", {"product": RING, "quantity": "1", "size": "6"}, action="/cart/items"
        ).status_code
        == 303
    )
    filtered = "/shop?category=ring&sort=price-asc"
    kept(client, "/shop", filtered)
    secret_of = URLSafeTimedSerializer(app.secret_key, salt="wtf-csrf-token").loads
    guest = app.test_client()
    for url in ("/shop", filtered, "/"):
        for browser, pressed, count, header in (
            (client, True, "1 item", "Account"),
            (guest, False, "0 items", "Sign in"),
            (client, True, "1 item", "Account"),
        ):
            for response in (browser.get(url), browser.get(url, headers=HTMX)):
                if url == "/" and response.request.headers.get("HX-Request"):
                    continue  # the home page has no fragment
                states = hearts(response)
                assert states.get(ring_id) is pressed, (url, header)
                assert sum(states.values()) == (1 if pressed else 0)
                tokens = {
                    field["value"]
                    for field in elements(response, "form.wishlist-heart input[name=csrf_token]")
                }
                assert {secret_of(token) for token in tokens} == {secret_of(browser.csrf_token)}
                if not response.request.headers.get("HX-Request"):
                    assert text_of(response, "#bag-count") == count
                    assert header in text_of(response, ".header-actions")


def test_the_kept_listing_shows_the_filters_as_each_shopper_typed_them(app, client, catalogue):
    """The listing's region is kept under the filters as sent: what one shopper typed (and
    the notes on what was ignored) never shows on another's page."""
    typed = "/shop?min_price=abc&q=halo"
    other = "/shop?min_price=100&q=solitaire"
    for url in (typed, other, typed):
        for browser in (client, app.test_client()):
            page = browser.get(url)
            fields = form_fields(page, "#filters")
            if url == typed:
                assert (fields["q"], fields["min_price"]) == ("halo", "abc")
                assert "We ignored “abc” for from" in page_text(page)
            else:
                assert (fields["q"], fields["min_price"]) == ("solitaire", "100")
                assert "We ignored" not in page_text(page)


IN_STOCK_PRICE = f"/shop/{RING}/price?metal=white-gold&diamond=0.50ct&size=6"


@pytest.mark.parametrize(
    ("asked", "shows"),
    [
        (f"/shop/{RING}?metal=platinum&diamond=0.50ct&size=6&engraving=Ada+{{n}}", "Ada {n}"),
        (f"/shop/{RING}?metal=unobtainium-{{n}}", "Aurelia Solitaire Ring"),
        ("/shop?q=solitaire+{n}", "pieces"),
        ("/shop?category=ring&min_price={n}00", "pieces"),
        (f"{IN_STOCK_PRICE}&quantity={{n}}&add_to_bag_state=available", "£"),
        (f"{IN_STOCK_PRICE}&engraving=Ada+{{n}}&add_to_bag_state=available", "£"),
        # Spaces around a choice: the piece reads it without them, but the key had them.
        (f"/shop/{RING}?metal=platinum{{pad}}&diamond=0.50ct", "Aurelia Solitaire Ring"),
        (f"{IN_STOCK_PRICE}{{pad}}&add_to_bag_state=available", "£"),
        # Filter values the listing doesn't offer are dropped (with a note), or only spaces.
        ("/shop?category=made-up-{n}&sort=nonsense-{n}", "pieces"),
        ("/shop?category=ring&q={pad}", "pieces"),
        ("/shop?category=ring&page={zeros}1", "pieces"),
    ],
    ids=[
        "engraving",
        "made-up-metal",
        "search-words",
        "price-bound",
        "quantity",
        "price-engraving",
        "padded-metal",
        "padded-size",
        "made-up-filters",
        "blank-search",
        "page-spelt-with-zeros",
    ],
)
def test_values_anyone_can_make_up_are_drawn_but_not_kept(app, client, catalogue, asked, shows):
    """An engraving, a made-up choice, search words, a price bound, a quantity: any text or
    number at all. Each one kept a page (or five blocks of one) in the shared cache, so a
    stream of them filled Redis, which the rate limits share, and pushed out of every
    process's copies what shoppers ask for. They are drawn for their request alone."""
    client.get(f"/shop/{RING}")
    client.get("/shop")  # a listing kept under the filters as read: made-up values read as none
    client.get("/shop?category=ring")
    client.htmx("GET", f"{IN_STOCK_PRICE}&add_to_bag_state=available")
    with app.test_request_context():
        entries = near_cache(app)._entries
    before = set(entries)

    for n in range(1, 6):
        url = asked.format(n=n, pad="+" * n, zeros="0" * n)
        page = client.htmx("GET", url) if "/price" in url else client.get(url)
        assert page.status_code in (200, 422)
        assert shows.format(n=n) in page_text(page)

    assert set(entries) - before == set()


def test_a_listing_with_parameters_the_filters_dont_know_is_drawn_but_not_kept(
    app, client, catalogue
):
    """Made-up parameters can't fill the cache: a listing asked with any is drawn afresh
    (and its page links keep them)."""
    with app.test_request_context():
        entries = near_cache(app)._entries
    before = len(entries)
    for number in range(5):
        page = client.get(f"/shop?campaign=winter-{number}&per_page=2")
        assert page.status_code == 200
        assert "pieces" in text_of(page, "#results-count")
    kept_regions = [key for key in entries if ":markup:listing-region:" in key]
    assert len(entries) - before <= 2
    assert kept_regions == []
    client.get("/shop?category=ring")
    assert [key for key in entries if ":markup:listing-region:" in key]


def test_markup_drawn_once_is_drawn_once_per_key_and_never_grows_past_its_bound():
    """The header, the footer and the listing's filter fields are drawn once per process; a
    search typed once must not keep the memory growing, nor keep out what every page shows."""
    memo = Memo(3)
    drawn: list[str] = []

    def draw(key: str):
        def drawing() -> Markup:
            drawn.append(key)
            return Markup("<p>%s</p>") % key

        return drawing

    assert memo.get("header", draw("header")) == Markup("<p>header</p>")
    assert memo.get("header", draw("header")) == Markup("<p>header</p>")
    assert drawn == ["header"]
    for typed in ("a", "b", "c"):
        memo.get(("search", typed), draw(typed))
    assert memo.get(("search", "c"), draw("c")) == Markup("<p>c</p>")
    assert drawn == ["header", "a", "b", "c"]
    assert memo.get("header", draw("header")) == Markup("<p>header</p>")
    assert drawn == ["header", "a", "b", "c", "header"]
    assert memo.get("header", draw("header")) == Markup("<p>header</p>")
    assert drawn == ["header", "a", "b", "c", "header"]


def test_a_product_page_draws_a_block_it_no_longer_keeps_from_the_piece_itself(
    app, client, catalogue
):
    """What a product page works out for its choices is kept apart from the blocks it draws:
    with the first still kept and a block gone (pushed out of the cache), the page reads the
    piece again and draws the same page."""
    page = f"/shop/{RING}?metal=platinum&diamond=0.50ct"
    kept(client, page)
    before = client.get(page)
    with app.test_request_context():
        entries = near_cache(app)._entries
        lost = [key for key in entries if ":markup:product-" in key]
        assert len(lost) == 4
        assert [key for key in entries if ":product-page:" in key]
        for key in lost:
            del entries[key]
            cache.delete(key)
    with count_queries(app) as statements:
        after = client.get(page)
    assert after.status_code == 200
    assert not [statement for statement in statements if "inventory" in statement]
    for part in ("head title", "nav.breadcrumbs", "article.product", "#price-panel"):
        assert text_of(after, part) == text_of(before, part)
    assert elements(after, "input[name=metal][checked]")[0]["value"] == "platinum"
    assert elements(after, 'meta[property="og:image"]') == elements(
        before, 'meta[property="og:image"]'
    )


def test_the_code_digest_is_of_the_code_a_process_loaded_not_of_files_put_in_place_later(
    tmp_path,
):
    """A release put in place beside a running one: a worker of the last release, its files
    replaced under it before its first kept page, read the digest only then, filed what its
    code drew under the new release's, and the new release's servers showed the old prices
    for five minutes (found by review). The digest is read as the app is made."""
    probe = TEMPLATES / f"_release_probe_{os.getpid()}.html"
    script = "\n".join(
        [
            "from pathlib import Path",
            "from elysium import create_app",
            "from elysium.web import fragments",
            "create_app()",
            "as_loaded = fragments.code_version.__wrapped__()",
            f"Path({str(probe)!r}).write_text('the next release')",
            "print(fragments.code_version() == as_loaded)",
        ]
    )
    env = {
        **os.environ,
        "ELYSIUM_ENV": "testing",
        "ELYSIUM_INSTANCE_PATH": str(tmp_path),
        "SECRET_KEY": "test-secret-key-not-for-production",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'shop.db'}",
    }
    try:
        ran = subprocess.run(  # noqa: S603 (this interpreter, a script of the test's own)
            [sys.executable, "-c", script],
            cwd=TEMPLATES.parent,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        probe.unlink(missing_ok=True)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip().splitlines()[-1] == "True"
