"""Browsing memory: a product page records who looked (an account, or a guest's random visitor
id), once per 30 minutes, never for robots or prefetches, never at the page's expense; and what
the shop makes of it: "Recently viewed", "Trending now", the dashboard's most viewed, pruning,
and the shopper's own data."""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Engine, select, text, update
from sqlalchemy.orm import Session

from elysium.config import cache_settings
from elysium.extensions import cache, db
from elysium.models import Order, OrderStatus, Product
from elysium.models.cart import Cart, CartLine
from elysium.models.engagement import ProductView
from elysium.models.orders import OrderLine
from elysium.models.types import utcnow
from elysium.services import views
from elysium.web.fragments import forget_kept
from tests.conftest import PASSWORD, ShopClient, count_queries, make_app, page_text
from tests.html import csrf_token, elements, text_of
from tests.support.checkout import CHAIN, add_chain, check_out, session_id_from
from tests.support.staff import staff_client
from tests.test_staff_fulfilment import act, buy

PIECE = "aurelia-solitaire-ring"
COOKIE = "elysium_visitor"


@pytest.fixture(autouse=True)
def _empty_cache(app: Flask):
    with app.app_context():
        forget_kept()
    yield
    with app.app_context():
        forget_kept()


def slugs(catalogue: dict) -> list[str]:
    return [product["slug"] for product in catalogue["products"]]


def view_rows(app: Flask) -> list[dict[str, Any]]:
    with app.app_context():
        rows = db.session.execute(
            select(ProductView, Product.slug)
            .join(Product, Product.id == ProductView.product_id)
            .order_by(ProductView.id)
        ).all()
        found = [
            {
                "slug": slug,
                "user_id": view.user_id,
                "visitor": view.visitor,
                "viewed_at": view.viewed_at,
            }
            for view, slug in rows
        ]
        db.session.remove()
    return found


def age_views(app: Flask, by: timedelta, slug: str | None = None) -> None:
    """Move views back in time (as if they had been made ``by`` ago)."""
    with app.app_context():
        rows = db.session.scalars(select(ProductView)).all()
        for view in rows:
            if slug is None or view.product_id == product_id(slug):
                view.viewed_at = view.viewed_at - by
        db.session.commit()
        db.session.remove()


def product_id(slug: str) -> int:
    return db.session.scalars(select(Product.id).where(Product.slug == slug)).one()


def add_views(app: Flask, slug: str, count: int, *, ago: timedelta = timedelta(0)) -> None:
    """``count`` views of a piece by as many guests, ``ago`` in the past."""
    with app.app_context():
        piece = product_id(slug)
        for number in range(count):
            db.session.add(
                ProductView(
                    product_id=piece, visitor=f"guest-{slug}-{number}", viewed_at=utcnow() - ago
                )
            )
        db.session.commit()
        db.session.remove()


def set_published(app: Flask, slug: str, published: bool) -> None:
    with app.app_context():
        db.session.execute(update(Product).where(Product.slug == slug).values(published=published))
        db.session.commit()
        db.session.remove()


def visitor_cookie(response) -> str:
    [header] = [
        value
        for value in response.headers.getlist("Set-Cookie")
        if value.split("=", 1)[0].endswith(COOKIE)
    ]
    return header


def recent_names(client: ShopClient, exclude: str | None = None) -> list[str]:
    url = "/recently-viewed" + (f"?exclude={exclude}" if exclude else "")
    response = client.htmx("GET", url)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    return [text_of(name) for name in elements(response, ".recently-viewed__name")]


def names_of(catalogue: dict, chosen: list[str]) -> list[str]:
    by_slug = {product["slug"]: product["name"] for product in catalogue["products"]}
    return [by_slug[slug] for slug in chosen]


# Recording ------------------------------------------------------------------------------------


def test_a_guest_view_is_recorded_under_a_random_id_in_a_signed_http_only_cookie(
    app, client, catalogue
):
    response = client.get(f"/shop/{PIECE}?metal=platinum&utm_source=newsletter")
    assert response.status_code == 200

    cookie = visitor_cookie(response)
    assert cookie.startswith(f"{COOKIE}=")
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Path=/" in cookie
    assert "Domain" not in cookie
    [row] = view_rows(app)
    assert row["slug"] == PIECE
    assert row["user_id"] is None
    # The id is random, not the query string or anything about the browser.
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", row["visitor"])
    assert row["visitor"] not in cookie  # signed, not the bare id
    with app.app_context():
        columns = {column.name for column in ProductView.__table__.columns}
    assert columns == {"id", "product_id", "user_id", "visitor", "viewed_at"}

    # The same browser is the same visitor on its next piece.
    client.get("/shop/lumiere-halo-ring")
    assert {row["visitor"] for row in view_rows(app)} == {row["visitor"]}


def test_the_visitor_cookie_is_renewed_as_it_came_and_a_forged_one_is_replaced(
    app, client, catalogue
):
    first = visitor_cookie(client.get(f"/shop/{PIECE}")).split(";")[0]
    # Renewed on the next piece (its lifetime starts again), the same signed id.
    assert visitor_cookie(client.get("/shop/lumiere-halo-ring")).split(";")[0] == first
    [visitor] = {row["visitor"] for row in view_rows(app)}

    name, _, value = first.partition("=")
    forged = value[:-2] + ("AA" if not value.endswith("AA") else "BB")
    client.set_cookie(name, forged)
    renewed = visitor_cookie(client.get(f"/shop/{PIECE}")).split(";")[0]
    assert renewed not in (f"{name}={forged}", first)
    assert {row["visitor"] for row in view_rows(app)} - {visitor}  # a new visitor's view


def test_in_production_the_visitor_cookie_is_a_host_cookie(app, catalogue):
    shop = make_app(app.config["SQLALCHEMY_DATABASE_URI"], SESSION_COOKIE_SECURE=True)
    response = shop.test_client().get(f"/shop/{PIECE}", base_url="https://localhost")
    cookie = visitor_cookie(response)
    assert cookie.startswith(f"__Host-{COOKIE}=")
    assert "Secure" in cookie
    assert "Path=/" in cookie


def test_a_signed_in_view_is_the_accounts_and_sets_no_visitor_cookie(app, client, auth, catalogue):
    user_id = auth.create_user()
    auth.login()
    response = client.get(f"/shop/{PIECE}")
    assert response.status_code == 200
    assert not [v for v in response.headers.getlist("Set-Cookie") if COOKIE in v]
    [row] = view_rows(app)
    assert (row["slug"], row["user_id"], row["visitor"]) == (PIECE, user_id, None)


@pytest.mark.parametrize(
    ("method", "headers"),
    [
        ("GET", {"User-Agent": "Mozilla/5.0 (compatible; Googlebot/2.1)"}),
        ("GET", {"User-Agent": "Mozilla/5.0 (compatible; bingbot/2.0)"}),
        ("GET", {"User-Agent": "Mozilla/5.0 (compatible; Yahoo! Slurp)"}),
        ("GET", {"User-Agent": "facebookexternalhit/1.1"}),
        ("GET", {"User-Agent": "Mozilla/5.0 HeadlessChrome/120.0"}),
        ("GET", {"User-Agent": "Some-Crawler/1.0"}),
        ("GET", {"User-Agent": "Mozilla/5.0 (compatible; SlackBot-LinkExpanding; Preview)"}),
        ("GET", {"User-Agent": ""}),
        ("GET", {"Purpose": "prefetch"}),
        ("GET", {"Sec-Purpose": "prefetch;prerender"}),
        ("HEAD", {}),
    ],
)
def test_robots_heads_and_prefetches_are_not_views(app, client, catalogue, method, headers):
    response = client.open(f"/shop/{PIECE}", method=method, headers=headers)
    assert response.status_code == 200
    assert view_rows(app) == []
    assert not [v for v in response.headers.getlist("Set-Cookie") if COOKIE in v]


def test_a_repeat_within_30_minutes_counts_once_and_after_it_again(app, client, catalogue):
    for _ in range(3):
        client.get(f"/shop/{PIECE}")
    client.htmx("GET", f"/shop/{PIECE}")
    assert len(view_rows(app)) == 1

    age_views(app, timedelta(minutes=29))
    client.get(f"/shop/{PIECE}")
    assert len(view_rows(app)) == 1

    age_views(app, timedelta(minutes=2))  # the view is now 31 minutes old
    client.get(f"/shop/{PIECE}")
    assert len(view_rows(app)) == 2

    # Another visitor's view of the same piece is theirs.
    ShopClient(app).get(f"/shop/{PIECE}")
    assert len(view_rows(app)) == 3


def piece_on_postgres(app: Flask, why_not_sqlite: str) -> tuple[int, Engine]:
    """The piece's id and the app's engine, for sessions of a test's own; skipped on SQLite."""
    if not app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        pytest.skip(why_not_sqlite)
    with app.app_context():
        piece = product_id(PIECE)
        engine = db.engine
        db.session.remove()
    return piece, engine


@pytest.mark.postgres_only
def test_two_simultaneous_views_by_one_visitor_record_one_and_neither_waits(app, catalogue):
    piece, engine = piece_on_postgres(
        app, "SQLite has one writer at a time: the single statement is enough"
    )
    with Session(engine) as first, Session(engine) as second:
        second.execute(text("SET LOCAL lock_timeout = '1s'"))
        assert views.record_view(first, piece, visitor="same-browser") is True
        # The first request hasn't committed: the second neither waits nor inserts.
        assert views.record_view(second, piece, visitor="same-browser") is False
        assert views.record_view(second, piece, visitor="another-browser") is True
        first.commit()
        second.commit()
    assert sorted(row["visitor"] for row in view_rows(app)) == ["another-browser", "same-browser"]


def test_a_repeat_view_that_recently_viewed_has_just_read_costs_no_write(
    app, client, catalogue, queries
):
    """The product page's "Recently viewed" reads when the visitor last saw each of their
    newest pieces, the one on screen included: a repeat inside the window is known from it,
    so the page neither locks nor inserts (and sends the same page). A piece viewed longer
    ago than its newest ones are still counted once, by the statement itself."""
    pieces = slugs(catalogue)

    def statements_of(slug: str) -> list[str]:
        with queries() as statements:
            assert client.get(f"/shop/{slug}").status_code == 200
        return [statement.lower() for statement in statements]

    first = statements_of(PIECE)
    assert any("insert into product_views" in statement for statement in first)
    repeat = statements_of(PIECE)
    assert not any("product_views (" in s or "advisory" in s for s in repeat)
    assert len(repeat) < len(first)
    assert len(view_rows(app)) == 1

    # Nine other pieces later, the first is no longer among the newest the page reads: the
    # statement runs again, and still finds the repeat.
    for slug in [slug for slug in pieces if slug != PIECE][:9]:
        client.get(f"/shop/{slug}")
    assert any("insert into product_views" in s for s in statements_of(PIECE))
    assert len(view_rows(app)) == 10

    # Outside the window it is a new view, though the page has just read the old one.
    age_views(app, timedelta(minutes=31))
    client.get(f"/shop/{PIECE}")
    assert len(view_rows(app)) == 11


def test_recording_a_view_says_whether_it_wrote_one(app, catalogue):
    """``record_view`` answers True for a view it wrote and False for a repeat it didn't (an
    INSERT's row count, which the driver leaves at -1 unless it is asked to keep it)."""
    with app.app_context():
        piece = product_id(PIECE)
        assert views.record_view(db.session, piece, visitor="a-browser") is True
        db.session.commit()
        assert views.record_view(db.session, piece, visitor="a-browser") is False
        db.session.commit()
        assert views.record_view(db.session, piece, visitor="another-browser") is True
        db.session.commit()
        db.session.remove()
    assert sorted(row["visitor"] for row in view_rows(app)) == ["a-browser", "another-browser"]


@pytest.mark.postgres_only
def test_a_views_commit_alone_skips_waiting_for_the_disk_and_nothing_else_does(app, catalogue):
    """A view is a statistic: its transaction commits without waiting for the WAL to reach the
    disk. Only that transaction: the connection's setting is back for the next one."""
    piece, engine = piece_on_postgres(app, "SQLite has no such setting")
    # One connection throughout, set to wait for the disk (the test database doesn't).
    with engine.connect() as connection, Session(bind=connection) as session:
        session.execute(text("SET SESSION synchronous_commit = on"))
        session.commit()
        assert views.record_view(session, piece, visitor="a-browser") is True
        assert session.scalar(text("SHOW synchronous_commit")) == "off"
        session.commit()
        assert session.scalar(text("SHOW synchronous_commit")) == "on"
        session.rollback()
        # A repeat writes nothing; after its commit the setting is back as well.
        assert views.record_view(session, piece, visitor="a-browser") is False
        session.commit()
        assert session.scalar(text("SHOW synchronous_commit")) == "on"
    assert [row["visitor"] for row in view_rows(app)] == ["a-browser"]


def test_the_configurators_price_fragment_records_nothing(app, client, catalogue):
    response = client.htmx("GET", f"/shop/{PIECE}/price?metal=platinum")
    assert response.status_code == 200
    assert view_rows(app) == []


def test_a_failed_recording_is_logged_and_the_page_still_renders(app, client, catalogue, caplog):
    with app.app_context(), db.engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(
                text(
                    "CREATE FUNCTION refuse_view() RETURNS trigger LANGUAGE plpgsql AS "
                    "$$ BEGIN RAISE EXCEPTION 'views are refused'; END $$"
                )
            )
            connection.execute(
                text(
                    "CREATE TRIGGER refuse_view BEFORE INSERT ON product_views "
                    "FOR EACH ROW EXECUTE FUNCTION refuse_view()"
                )
            )
        else:
            connection.execute(
                text(
                    "CREATE TRIGGER refuse_view BEFORE INSERT ON product_views "
                    "BEGIN SELECT RAISE(ABORT, 'views are refused'); END"
                )
            )
    try:
        with caplog.at_level(logging.ERROR):
            response = client.get(f"/shop/{PIECE}")
        assert response.status_code == 200
        assert text_of(response, "h1.product__name") == "Aurelia Solitaire Ring"
        assert "Could not record a view" in caplog.text
        # The session is usable again: the bag still works in the same browser.
        assert client.get("/cart").status_code == 200
    finally:
        with app.app_context(), db.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(text("DROP TRIGGER refuse_view ON product_views"))
                connection.execute(text("DROP FUNCTION refuse_view()"))
            else:
                connection.execute(text("DROP TRIGGER refuse_view"))
    assert view_rows(app) == []


# Recently viewed ------------------------------------------------------------------------------


def test_recently_viewed_lists_eight_newest_first_without_the_current_or_unpublished(
    app, client, catalogue
):
    seen = slugs(catalogue)[:11]
    for slug in seen:
        client.get(f"/shop/{slug}")
        age_views(app, timedelta(seconds=1))  # each earlier than the next
    set_published(app, seen[8], False)

    newest_first = [slug for slug in reversed(seen) if slug != seen[8]]
    # On the last piece's page: the others, newest first, at most eight.
    expected = names_of(catalogue, newest_first[1:9])
    assert recent_names(client, exclude=seen[-1]) == expected
    page = client.get(f"/shop/{seen[-1]}")
    [slot] = elements(page, "#recently-viewed")
    assert slot["hx-get"] == f"/recently-viewed?exclude={seen[-1]}"
    assert slot["hx-trigger"] == "revealed"
    # Without JavaScript, the same list is in the page.
    assert [text_of(name) for name in elements(slot, "noscript .recently-viewed__name")] == (
        expected
    )
    # The bag shows everything, the current piece included.
    bag = client.get("/cart")
    names = [text_of(name) for name in elements(bag, "#recently-viewed .recently-viewed__name")]
    assert names == names_of(catalogue, newest_first[:8])
    assert all(img["src"].startswith("/art/") for img in elements(bag, ".recently-viewed img"))


def test_a_visitor_with_no_history_gets_no_section(app, client, catalogue):
    assert recent_names(client) == []
    page = client.get(f"/shop/{PIECE}")
    assert elements(page, "#recently-viewed noscript section") == []
    # A plain request for the fragment goes home.
    assert client.get("/recently-viewed").status_code == 303


def test_a_guests_history_follows_them_when_they_sign_in(app, client, auth, catalogue):
    user_id = auth.create_user()
    first, second = slugs(catalogue)[:2]
    client.get(f"/shop/{first}")
    client.get(f"/shop/{second}")
    auth.login()
    assert recent_names(client) == names_of(catalogue, [second, first])
    assert {row["user_id"] for row in view_rows(app)} == {user_id}
    assert {row["visitor"] for row in view_rows(app)} == {None}
    overview = client.get("/account")
    names = [
        text_of(name) for name in elements(overview, "#recently-viewed .recently-viewed__name")
    ]
    assert names == names_of(catalogue, [second, first])
    # A product page's copy for a browser without JavaScript, read with the page's first
    # statement, is the account's too.
    third = client.get(f"/shop/{slugs(catalogue)[2]}")
    names = [
        text_of(name)
        for name in elements(third, "#recently-viewed noscript .recently-viewed__name")
    ]
    assert names == names_of(catalogue, [second, first])

    # Another browser, never signed in, doesn't see them.
    assert recent_names(ShopClient(app)) == []


def test_recently_viewed_takes_the_same_queries_for_2_or_10_pieces(app, client, catalogue, queries):
    def count(url: str, htmx: bool = False) -> int:
        with app.app_context():
            forget_kept()  # the cards as the page reads them, not as they were kept
        with queries() as statements:
            response = client.htmx("GET", url) if htmx else client.get(url)
            assert response.status_code == 200
        return len(statements)

    pieces = slugs(catalogue)
    for slug in pieces[:2]:
        client.get(f"/shop/{slug}")
    # A first view of a piece on each side (a repeat it has just seen records nothing).
    few = (count("/recently-viewed", htmx=True), count("/cart"), count(f"/shop/{pieces[20]}"))
    for slug in pieces[2:12]:
        client.get(f"/shop/{slug}")
    many = (count("/recently-viewed", htmx=True), count("/cart"), count(f"/shop/{pieces[21]}"))
    assert few == many
    # The catalogue's version, the pieces' ids, and their cards (with their options).
    assert few[0] == 4


def test_recently_viewed_reads_no_card_it_has_kept(app, client, catalogue, queries):
    """Each card is kept per catalogue version: once a piece has been shown, "Recently viewed"
    only asks which pieces, however many; a change to a piece shows at once."""
    for slug in slugs(catalogue)[:5]:
        client.get(f"/shop/{slug}")
    assert len(recent_names(client)) == 5
    with queries() as statements:
        names = recent_names(client)
    assert len(statements) == 2  # the catalogue's version and the pieces' ids
    first = slugs(catalogue)[4]
    with app.app_context():
        product = db.session.scalars(select(Product).where(Product.slug == first)).one()
        product.name = "Renamed Piece"
        db.session.commit()
        db.session.remove()
    assert recent_names(client) == ["Renamed Piece", *names[1:]]


# Trending -------------------------------------------------------------------------------------


def trending_names(response) -> list[str]:
    return [text_of(name) for name in elements(response, "#trending .product-card__name")]


def test_trending_is_the_weeks_most_viewed_published_pieces(app, client, catalogue):
    pieces = slugs(catalogue)
    add_views(app, pieces[5], 3)
    add_views(app, pieces[6], 5)
    add_views(app, pieces[7], 2)
    add_views(app, pieces[8], 4)
    add_views(app, pieces[9], 1)
    add_views(app, pieces[10], 9, ago=timedelta(days=8))  # too old to count

    response = client.get("/")
    assert trending_names(response) == names_of(catalogue, [pieces[i] for i in (6, 8, 5, 7)])
    assert text_of(response, "#trending-heading") == "Trending now"


def test_with_too_few_viewed_pieces_the_home_page_shows_its_featured_pieces(app, client, catalogue):
    pieces = slugs(catalogue)
    for slug in pieces[:3]:
        add_views(app, slug, 2)
    response = client.get("/")
    assert elements(response, "#trending") == []
    featured = sorted(
        (p for p in catalogue["products"] if p["featured"]), key=lambda p: p["featured"]
    )
    names = [text_of(name) for name in elements(response, ".product-card__name")]
    assert names == [p["name"] for p in featured][:4]


def test_trending_is_one_cached_query_and_never_shows_an_unpublished_piece(
    app, client, catalogue, queries
):
    pieces = slugs(catalogue)
    for number, slug in enumerate(pieces[:5]):
        add_views(app, slug, 10 - number)

    with queries() as statements:
        first = client.get("/")
        second = client.get("/")
    aggregates = [s for s in statements if "product_views" in s]
    assert len(aggregates) == 1
    assert "GROUP BY" in aggregates[0].upper()
    assert trending_names(first) == trending_names(second) == names_of(catalogue, pieces[:4])

    set_published(app, pieces[0], False)
    with queries() as statements:
        third = client.get("/")
    assert [s for s in statements if "product_views" in s] == []  # still from the cache
    assert trending_names(third) == names_of(catalogue, pieces[1:4])

    with app.app_context():
        assert cache.get(views.TRENDING_CACHE_KEY) == [
            product_id(slug) for slug in pieces[:4]
        ]  # ids, not objects


# The dashboard -------------------------------------------------------------------------------


def test_the_dashboard_shows_the_weeks_most_viewed_with_their_ratios(app, catalogue):
    staff = staff_client(app)
    pieces = slugs(catalogue)
    with app.app_context():
        ring, pendant = product_id(pieces[0]), product_id(pieces[1])
        now = utcnow()
        # Ring: 4 views by 3 visitors (one an account) this week, 1 old view; pendant: 1 view.
        for visitor, user in (("a", None), ("a", None), ("b", None)):
            db.session.add(ProductView(product_id=ring, visitor=visitor, user_id=user))
        db.session.add(
            ProductView(product_id=ring, visitor="old", viewed_at=now - timedelta(days=9))
        )
        db.session.add(ProductView(product_id=pendant, visitor="a"))
        db.session.flush()
        # Two bags took the ring this week (one of them twice), one long ago.
        for token, created in (("t1", now), ("t2", now), ("t3", now - timedelta(days=30))):
            cart = Cart(token=token, currency="GBP")
            db.session.add(cart)
            db.session.flush()
            for variant in ("a", "b") if token == "t1" else ("a",):
                db.session.add(
                    CartLine(
                        cart_id=cart.id,
                        product_id=ring,
                        variant_key=variant,
                        configuration={},
                        configuration_hash=variant,
                        created_at=created,
                    )
                )
        # The ring was in one paid order this week; an unpaid order doesn't count.
        for number, paid_at in (("ELY-VIEW0001", now), ("ELY-VIEW0002", None)):
            order = Order(
                number=number,
                email="shopper@example.com",
                status=OrderStatus.PAID if paid_at else OrderStatus.PENDING,
                currency="GBP",
                subtotal=1000,
                total=1000,
                shipping_address={},
                billing_address={},
                paid_at=paid_at,
            )
            db.session.add(order)
            db.session.flush()
            db.session.add(
                OrderLine(
                    order_id=order.id,
                    product_id=ring,
                    product_name="Ring",
                    product_slug=pieces[0],
                    variant_key="a",
                    configuration={},
                    unit_price=1000,
                    quantity=1,
                )
            )
        db.session.commit()
        db.session.add(ProductView(product_id=ring, user_id=_a_user()))
        db.session.commit()

        [top, other] = views.most_viewed(db.session, since=now - timedelta(days=7))
        db.session.remove()
    assert (top.slug, top.views, top.viewers, top.bags, top.ordered) == (pieces[0], 4, 3, 2, 1)
    assert top.view_to_bag == pytest.approx(2 / 3)
    assert top.view_to_order == pytest.approx(1 / 4)
    assert (other.slug, other.views, other.bags, other.view_to_bag) == (pieces[1], 1, 0, 0.0)

    page = staff.get("/staff")
    assert page.status_code == 200
    rows = elements(page, "#dashboard-most-viewed tbody tr")
    assert [" ".join(text_of(cell) for cell in row.select("th, td")) for row in rows] == [
        f"{names_of(catalogue, [pieces[0]])[0]} 4 3 67% 25%",
        f"{names_of(catalogue, [pieces[1]])[0]} 1 1 0% 0%",
    ]


def test_a_bag_the_piece_went_into_still_counts_once_it_is_paid_for(shop, app) -> None:
    """A bag's lines go when it is paid for: a piece whose every bag was bought showed a
    view-to-bag of 0% (found by review)."""
    shopper = shop.client()
    assert shopper.get(f"/shop/{CHAIN}").status_code == 200
    add_chain(shopper)
    shop.fake.pay(session_id_from(check_out(shopper).location))
    with app.app_context():
        [piece] = views.most_viewed(db.session, since=utcnow() - timedelta(days=7))
        db.session.remove()

    assert (piece.slug, piece.viewers, piece.bags, piece.ordered) == (CHAIN, 1, 1, 1)
    assert piece.view_to_bag == 1.0


def test_a_bag_emptied_by_a_bank_payment_staff_then_cancelled_still_counts(shop, app) -> None:
    """Her bank payment began (her bag's lines went), then staff cancelled the order before
    the money came: the piece did go into her bag, as with a bank payment that failed (found
    by review)."""
    number, _ = buy(shop, pay="bank")  # her view of the piece, her bag and its bank payment
    cancelled = act(staff_client(shop.app), number, "cancel", reason="No transfer", request_key="c")
    assert cancelled.status_code == 303
    with app.app_context():
        [piece] = views.most_viewed(db.session, since=utcnow() - timedelta(days=7))
        db.session.remove()

    assert (piece.slug, piece.viewers, piece.bags) == (CHAIN, 1, 1)


def _a_user() -> int:
    from tests.conftest import create_user

    return create_user("viewer@example.com")


def test_the_dashboards_most_viewed_is_one_query_however_many_pieces(app, catalogue, queries):
    pieces = slugs(catalogue)
    since = utcnow() - timedelta(days=7)

    def count() -> int:
        with app.app_context(), queries() as statements:
            views.most_viewed(db.session, since=since)
            db.session.remove()
        return len(statements)

    add_views(app, pieces[0], 2)
    few = count()
    for slug in pieces[1:10]:
        add_views(app, slug, 3)
    assert count() == few == 1


# Pruning and the shopper's data ---------------------------------------------------------------


def test_prune_deletes_views_older_than_asked(app, client, catalogue, runner):
    add_views(app, PIECE, 2, ago=timedelta(days=200))
    add_views(app, "lumiere-halo-ring", 1, ago=timedelta(days=10))

    result = runner.invoke(args=["analytics", "prune", "--older-than", "180d"])
    assert result.exit_code == 0, result.output
    assert "Removed 2 product views" in result.output
    assert [row["slug"] for row in view_rows(app)] == ["lumiere-halo-ring"]

    refused = runner.invoke(args=["analytics", "prune", "--older-than", "soon"])
    assert refused.exit_code != 0
    assert "is not an age like 60d or 12h" in refused.output
    assert len(view_rows(app)) == 1


def test_export_includes_views_and_closing_the_account_deletes_them(app, client, auth, catalogue):
    auth.create_user()
    auth.login()
    client.get(f"/shop/{PIECE}")
    ShopClient(app).get(f"/shop/{PIECE}")  # somebody else's view stays

    export = client.get("/account/export").get_json()
    [viewed] = export["viewed"]
    assert viewed["product"] == PIECE
    assert viewed["viewed_at"].startswith(str(utcnow().date()))
    assert set(viewed) == {"product", "viewed_at"}

    response = client.submit("/account/delete", {"password": PASSWORD})
    assert response.status_code == 303, page_text(response)
    [left] = view_rows(app)
    assert left["user_id"] is None
    assert left["visitor"]


def test_the_cache_is_redis_when_redis_url_is_set_and_memory_otherwise():
    assert cache_settings({"REDIS_URL": None})["CACHE_TYPE"] == "SimpleCache"
    shared = cache_settings({"REDIS_URL": "redis://cache:6379/0", "REDIS_KEY_PREFIX": "shop"})
    assert shared["CACHE_TYPE"] == "RedisCache"
    assert shared["CACHE_REDIS_URL"] == "redis://cache:6379/0"
    assert shared["CACHE_KEY_PREFIX"] == "shop:cache:"
    assert shared["CACHE_DEFAULT_TIMEOUT"] == 60


def test_with_redis_unreachable_each_process_keeps_what_it_worked_out(app, catalogue):
    """Redis down: the shop keeps selling, and each process keeps its own copy of what it
    worked out (filed under the catalogue's version, as good as the shared entry). Before,
    every request worked out every block again, and asked the unreachable Redis each time."""
    shop = make_app(
        app.config["SQLALCHEMY_DATABASE_URI"],
        REDIS_URL="redis://127.0.0.1:1/0",  # nothing listens there
        RATELIMIT_STORAGE_URI="memory://",
    )
    client = shop.test_client()
    first = client.get("/shop?category=ring")
    with count_queries(shop) as statements:
        again = client.get("/shop?category=ring")

    assert first.status_code == again.status_code == 200
    # The same page, but for the CSRF token, signed with the second it was drawn in.
    assert page_text(again).replace(csrf_token(again), "") == page_text(first).replace(
        csrf_token(first), ""
    )
    assert len(statements) == 1  # the catalogue's version, and nothing else


def test_trending_still_shows_when_redis_cannot_be_reached(app, catalogue):
    for number, slug in enumerate(slugs(catalogue)[:4]):
        add_views(app, slug, 5 - number)
    shop = make_app(
        app.config["SQLALCHEMY_DATABASE_URI"],
        REDIS_URL="redis://127.0.0.1:1/0",  # nothing listens there
        RATELIMIT_STORAGE_URI="memory://",  # the rate limits' own fallback is tested elsewhere
    )
    response = shop.test_client().get("/")
    assert response.status_code == 200
    assert trending_names(response) == names_of(catalogue, slugs(catalogue)[:4])
