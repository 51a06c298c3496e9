"""Reads from a streaming replica (``DATABASE_REPLICA_URL``), writes to the primary.

A real PostgreSQL primary and a hot standby streaming from it. While the standby's replay is
paused it keeps the catalogue as it was, so a page showing the old price was read from the
replica, and one showing the new price from the primary.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from flask import Flask
from flask_migrate import upgrade
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from elysium.config import ConfigurationError, normalise_database_url, settings_from_environment
from elysium.db_routing import EXTENSION as REPLICA
from elysium.db_routing import plain_read
from elysium.extensions import db
from elysium.models import Product
from elysium.models.engagement import ProductView
from elysium.money import format_money
from elysium.services.seeding import load_demo_catalogue, seed_catalogue
from elysium.web.fragments import forget_kept
from tests.conftest import PASSWORD, create_user, make_app, page_text
from tests.html import Page, text_of
from tests.support.meanwhile import meanwhile
from tests.support.pg_cluster import PostgresCluster
from tests.support.pg_replica import Replica, primary_and_replica

PIECE = "aurelia-fine-chain"
PIECE_NAME = "Aurelia Fine Chain"
COOKIE = "elysium_primary"
RISE = 10_000  # £100, in pence
DATABASE = "shop"
KEY = 8_675_309
ADVISORY_LOCKS = f"SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = {KEY}"


@dataclass
class Shop:
    app: Flask
    primary: PostgresCluster
    replica: Replica
    base_price: int  # the piece's base price as seeded
    price: int  # the price its page shows as seeded, in pence

    def set_base_price(self, amount: int) -> None:
        """Change the piece's price on the primary."""
        self.primary.psql(
            f"UPDATE products SET base_price = {amount} WHERE slug = '{PIECE}'", DATABASE
        )

    def count(self, server: PostgresCluster, table: str) -> int:
        return int(server.psql(f"SELECT count(*) FROM {table}", DATABASE).strip())


def shown_price(response) -> int:
    """The price on a product page, in pence."""
    assert response.status_code == 200
    text = text_of(Page(response), ".price-total__amount")
    return round(float(text.lstrip("£").replace(",", "")) * 100)


def add_to_bag(client):
    client.get(f"/shop/{PIECE}")
    return client.htmx(
        "POST", "/cart/items", data={"product": PIECE, "quantity": "1", "metal": "yellow-gold"}
    )


def the_cookie(response) -> str | None:
    return next(
        (line for line in response.headers.getlist("Set-Cookie") if line.startswith(COOKIE)),
        None,
    )


@pytest.fixture(scope="module")
def shop() -> Iterator[Shop]:
    with primary_and_replica() as (primary, replica):
        primary.create_database(DATABASE)
        app = make_app(
            normalise_database_url(primary.url(DATABASE)),
            DATABASE_REPLICA_URL=replica.url(DATABASE),
        )
        with app.app_context():
            upgrade()
            seed_catalogue(db.session, load_demo_catalogue())
            db.session.commit()
            base_price = db.session.scalar(select(Product.base_price).where(Product.slug == PIECE))
            db.session.remove()
        replica.catch_up(primary)
        price = shown_price(app.test_client().get(f"/shop/{PIECE}"))
        yield Shop(app, primary, replica, base_price, price)


@pytest.fixture
def paused(shop: Shop) -> Iterator[Shop]:
    """The replica stops replaying, and the piece's price rises by ``RISE`` on the primary
    only. Afterwards the replica catches up and the price is put back."""
    shop.replica.pause_replay()
    try:
        shop.set_base_price(shop.base_price + RISE)
        yield shop
    finally:
        shop.replica.resume_replay()
        shop.set_base_price(shop.base_price)
        shop.replica.catch_up(shop.primary)


def test_a_visitor_reads_the_catalogue_from_the_replica(paused: Shop):
    visitor = paused.app.test_client()

    assert shown_price(visitor.get(f"/shop/{PIECE}")) == paused.price
    listing = page_text(visitor.get("/shop", query_string={"q": PIECE_NAME}))
    assert format_money(paused.price, "GBP") in listing
    assert format_money(paused.price + RISE, "GBP") not in listing

    paused.replica.resume_replay()
    paused.replica.catch_up(paused.primary)
    assert shown_price(visitor.get(f"/shop/{PIECE}")) == paused.price + RISE


def test_after_a_change_the_shopper_reads_from_the_primary_for_a_few_seconds(paused: Shop):
    shopper = paused.app.test_client()
    browsing = paused.app.test_client()

    added = add_to_bag(shopper)
    assert added.status_code == 200
    cookie = the_cookie(added)
    assert cookie is not None
    assert "Max-Age=5" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie

    # Neither the bag nor the new price has reached the replica.
    assert shown_price(shopper.get(f"/shop/{PIECE}")) == paused.price + RISE
    assert PIECE_NAME in page_text(shopper.get("/cart"))
    assert shown_price(browsing.get(f"/shop/{PIECE}")) == paused.price
    assert the_cookie(browsing.get(f"/shop/{PIECE}")) is None  # a GET changes nothing

    # Once the cookie has expired the shop window reads from the replica again; the bag, a
    # personal page, always reads from the primary.
    shopper.delete_cookie(COOKIE)
    assert shown_price(shopper.get(f"/shop/{PIECE}")) == paused.price
    bag = page_text(shopper.get("/cart"))
    assert PIECE_NAME in bag
    assert format_money(paused.price + RISE, "GBP") in bag


def test_a_session_ended_on_the_primary_is_over_on_every_page_while_the_replica_lags(
    shop: Shop,
):
    """Signed out everywhere (or the password changed): a copy of the session cookie, sent
    without the after-a-write cookie, is nobody at once, though the replica still holds the
    old session version."""
    email = "lag@example.com"
    with shop.app.app_context():
        create_user(email)
        db.session.remove()
    shop.replica.catch_up(shop.primary)
    shopper = shop.app.test_client()
    assert shopper.submit("/auth/login", {"email": email, "password": PASSWORD}).status_code == 303
    copied = shop.app.test_client()
    for name in ("session", "remember_token"):
        if (cookie := shopper.get_cookie(name)) is not None:
            copied.set_cookie(name, cookie.value)
    assert "Account" in text_of(Page(copied.get("/shop")), ".header-actions")

    shop.replica.pause_replay()
    try:
        shop.primary.psql(
            f"UPDATE users SET session_version = session_version + 1 WHERE email = '{email}'",
            DATABASE,
        )
        for url in ("/shop", f"/shop/{PIECE}", "/"):
            header = text_of(Page(copied.get(url)), ".header-actions")
            assert "Sign in" in header, url
            assert "Account" not in header, url
    finally:
        shop.replica.resume_replay()
        shop.replica.catch_up(shop.primary)


def test_every_write_goes_to_the_primary(paused: Shop):
    primary_views = paused.count(paused.primary, "product_views")
    replica_views = paused.count(paused.replica, "product_views")
    primary_lines = paused.count(paused.primary, "cart_lines")

    # A product page read from the replica records its view on the primary.
    assert shown_price(paused.app.test_client().get(f"/shop/{PIECE}")) == paused.price
    assert paused.count(paused.primary, "product_views") == primary_views + 1
    assert paused.count(paused.replica, "product_views") == replica_views

    assert add_to_bag(paused.app.test_client()).status_code == 200
    assert paused.count(paused.primary, "cart_lines") == primary_lines + 1

    with pytest.raises(RuntimeError, match="read-only transaction"):
        paused.replica.psql("DELETE FROM product_views", DATABASE)


def test_only_a_plain_read_while_showing_the_shop_window_uses_the_replica(paused: Shop):
    app = paused.app
    on_primary, on_replica = paused.base_price + RISE, paused.base_price
    piece = select(Product.base_price).where(Product.slug == PIECE)

    def base_price(statement=piece) -> int:
        return db.session.scalar(statement)

    with app.app_context():  # no request (a command, a worker): the primary
        assert base_price() == on_primary
        db.session.remove()
    with app.test_request_context(f"/shop/{PIECE}"):
        assert base_price() == on_replica
        assert base_price(piece.with_for_update()) == on_primary
        assert base_price() == on_primary  # from the first write or lock on: the primary
    with app.test_request_context(f"/shop/{PIECE}"):
        assert db.session.scalar(select(func.pg_try_advisory_xact_lock(KEY)))
        assert paused.primary.psql(ADVISORY_LOCKS, DATABASE).strip() == "1"
        assert base_price() == on_primary
    with app.test_request_context(f"/shop/{PIECE}", method="HEAD"):
        assert base_price() == on_replica
        db.session.add(ProductView(product_id=db.session.scalar(select(Product.id).limit(1))))
        db.session.flush()
        assert base_price() == on_primary
        db.session.rollback()
    with app.test_request_context(f"/shop/{PIECE}", method="POST"):
        assert base_price() == on_primary
    with app.test_request_context(f"/shop/{PIECE}", headers={"Cookie": f"{COOKIE}=1"}):
        assert base_price() == on_primary
    personal = ["/cart", "/checkout", "/checkout/success", "/account", "/orders/EL-1"]
    for path in [*personal, "/wishlist", "/auth/login", "/staff", "/staff/inventory"]:
        with app.test_request_context(path):
            assert base_price() == on_primary, path


def test_a_page_that_read_the_version_from_the_primary_reads_nothing_from_the_replica(
    paused: Shop,
):
    """The replica was unreachable a moment ago, so a page reads the catalogue's version from
    the primary; its retry window ends as the page goes on. Were the piece read from the
    replica (still behind, with the old price), the page would show it, and keep it under the
    primary's version for every shopper of every server. It reads everything from the primary.
    """
    forget_kept(paused.app)
    replica = paused.app.extensions[REPLICA]
    replica.down_until = time.monotonic() + 60

    def answering_again() -> None:
        replica.down_until = 0.0

    with meanwhile(paused.app, "SELECT", answering_again) as raced:
        page = paused.app.test_client().get(f"/shop/{PIECE}")

    assert raced
    assert shown_price(page) == paused.price + RISE
    # What it kept under the primary's version: a shopper who reads from the primary (who has
    # just changed something) is shown it.
    after_a_change = paused.app.test_client()
    after_a_change.set_cookie(COOKIE, "1")
    assert shown_price(after_a_change.get(f"/shop/{PIECE}")) == paused.price + RISE


def test_a_stopped_replica_leaves_every_read_to_the_primary(shop: Shop):
    shop.replica.stop("fast")
    try:
        visitor = shop.app.test_client()
        assert shown_price(visitor.get(f"/shop/{PIECE}")) == shop.price
        assert visitor.get("/shop").status_code == 200
        assert visitor.get("/").status_code == 200
        assert add_to_bag(visitor).status_code == 200
    finally:
        shop.replica.start()
        shop.replica.catch_up(shop.primary)


def test_without_a_replica_nothing_changes(app: Flask, client, catalogue):
    assert "elysium.replica" not in app.extensions
    added = add_to_bag(client)
    assert added.status_code == 200
    assert the_cookie(added) is None


@pytest.mark.parametrize(
    "statement",
    [
        select(func.pg_try_advisory_xact_lock(KEY)),
        select(func.pg_try_advisory_xact_lock(KEY).label("locked"), func.now()),
        select(Product.id, func.nextval("products_id_seq")),
        select(func.setval("products_id_seq", 1).label("moved")),
        select(Product).with_for_update(),
        select(Product.id).union(select(Product.id).with_for_update()),
    ],
)
def test_a_lock_or_a_sequence_labelled_or_not_is_no_plain_read(statement):
    """What must run in the primary's transaction, however the statement names its columns."""
    assert not plain_read(statement)


def test_a_select_of_pieces_with_their_stock_and_a_count_is_a_plain_read():
    assert plain_read(select(Product).options(selectinload(Product.inventory)))
    assert plain_read(select(Product.category, func.count()).group_by(Product.category))


def test_the_replica_url_is_read_like_database_url(tmp_path):
    settings = settings_from_environment(
        {"DATABASE_REPLICA_URL": "postgres://shop@replica.internal/elysium"}, str(tmp_path)
    )
    assert settings["DATABASE_REPLICA_URL"] == "postgresql+psycopg://shop@replica.internal/elysium"
    assert settings["DATABASE_PRIMARY_AFTER_WRITE_SECONDS"] == 5
    assert settings_from_environment({}, str(tmp_path))["DATABASE_REPLICA_URL"] is None
    with pytest.raises(ConfigurationError, match="DATABASE_REPLICA_URL"):
        make_app(f"sqlite:///{tmp_path / 'a.db'}", DATABASE_REPLICA_URL="sqlite:///replica.db")
