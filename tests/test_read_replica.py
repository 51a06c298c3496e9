"""Reads from a streaming replica (``DATABASE_REPLICA_URL``), writes to the primary.

A real PostgreSQL primary and a hot standby streaming from it. While the standby's replay is
paused it keeps the catalogue as it was, so a page showing the old price was read from the
replica, and one showing the new price from the primary.
"""

from __future__ import annotations

import contextlib
import threading
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
from tests.support.pg_cluster import OWNER, PostgresCluster
from tests.support.pg_replica import Replica, primary_and_replica
from tests.support.tcp_proxy import TcpProxy

PIECE = "aurelia-fine-chain"
PIECE_NAME = "Aurelia Fine Chain"
COLLECTION = "aurelia"
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
            # These tests pause the replica as long as they need it behind.
            DATABASE_REPLICA_MAX_LAG_SECONDS=0,
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


@contextlib.contextmanager
def shop_through(
    shop: Shop, replica_url: str, primary_url: str | None = None, **settings
) -> Iterator[Flask]:
    """Another server of the shop, its replica at ``replica_url`` (and its primary at
    ``primary_url``), its connections pooled (kept from one request to the next)."""
    app = make_app(
        normalise_database_url(primary_url or shop.primary.url(DATABASE)),
        pooled=True,
        DATABASE_REPLICA_URL=replica_url,
        **settings,
    )
    try:
        yield app
    finally:
        with app.app_context():
            db.engine.dispose()
        replica = app.extensions[REPLICA]
        replica.engine.dispose()
        if replica.primary is not None:
            replica.primary.dispose()


def timed_page(app: Flask, path: str, give_up_after: float = 15) -> tuple[int, float]:
    """The page's status and how long it took; a page still waiting after ``give_up_after``
    seconds fails the test (its thread is freed when the proxy is cut)."""
    answered: list[int] = []
    started = time.monotonic()
    asking = threading.Thread(
        target=lambda: answered.append(app.test_client().get(path).status_code), daemon=True
    )
    asking.start()
    asking.join(give_up_after)
    assert answered, f"{path} still waiting after {give_up_after} s"
    return answered[0], time.monotonic() - started


# How long the hanging replica is waited for: long enough that a page not waiting for it can't
# be taken for one that did, on a loaded machine.
REPLICA_WAIT = 3


def test_a_replica_that_stops_answering_mid_page_leaves_the_page_to_the_primary(shop: Shop):
    """A replica (or the network to it) that hangs: a connection taken from the pool sent its
    query and waited for ever, the worker killed by gunicorn's timeout (and, with threads,
    never): only a refused connection fell back (found by review)."""
    with (
        TcpProxy(("127.0.0.1", shop.replica.port)) as proxy,
        shop_through(
            shop,
            replica_url=f"postgresql://{OWNER}@127.0.0.1:{proxy.port}/{DATABASE}",
            DATABASE_REPLICA_TIMEOUT_SECONDS=REPLICA_WAIT,
            DATABASE_REPLICA_MAX_LAG_SECONDS=0,
        ) as app,
    ):
        assert timed_page(app, f"/shop/{PIECE}")[0] == 200  # a replica connection, pooled
        with app.app_context():
            forget_kept(app)
        proxy.hang()

        status, took = timed_page(app, f"/shop/{PIECE}")
        assert status == 200
        assert took < REPLICA_WAIT + 4
        # The primary, without waiting for the replica again: each page well within the
        # replica's wait (a page drawn afresh on a loaded machine can take most of a second).
        for path in ("/shop", "/", f"/collections/{COLLECTION}"):
            status, took = timed_page(app, path)
            assert (status, took < REPLICA_WAIT - 0.5) == (200, True), path


def test_a_replica_that_fails_a_statement_leaves_it_to_the_primary(shop: Shop):
    """The replica had not replayed a release's migration yet: every shop-window page was a
    500 while /healthz said all was well (found by review). Here the piece's name column is
    called otherwise on the replica, as a column a new release adds is missing there."""
    shop.primary.psql("ALTER TABLE products RENAME COLUMN name TO title", DATABASE)
    shop.replica.catch_up(shop.primary)
    shop.replica.pause_replay()
    shop.primary.psql("ALTER TABLE products RENAME COLUMN title TO name", DATABASE)
    try:
        forget_kept(shop.app)
        for path in (f"/shop/{PIECE}", "/shop", "/"):
            response = shop.app.test_client().get(path)
            assert response.status_code == 200, path
        assert PIECE_NAME in page_text(shop.app.test_client().get(f"/shop/{PIECE}"))
        health = shop.app.test_client().get("/healthz")
        assert (health.status_code, health.json["replica"]) == (200, "failing")
    finally:
        shop.app.extensions[REPLICA].down_until = 0.0
        shop.replica.resume_replay()
        shop.replica.catch_up(shop.primary)


def test_a_shopper_reads_from_the_primary_as_long_as_the_replica_may_lag(shop: Shop):
    """The replica serves while it is up to DATABASE_REPLICA_MAX_LAG_SECONDS (10) behind, but
    a shopper who changed something read from the primary for 5 s only: between 5 and 10 s
    of lag, her next pages could miss what she just did (found by review)."""
    with shop_through(
        shop,
        shop.replica.url(DATABASE),
        DATABASE_REPLICA_MAX_LAG_SECONDS=10,
        DATABASE_PRIMARY_AFTER_WRITE_SECONDS=5,
    ) as app:
        cookie = the_cookie(add_to_bag(app.test_client()))
    assert cookie is not None
    assert "Max-Age=11" in cookie


def test_after_a_quiet_spell_a_replica_past_its_lag_still_leaves_the_shopper_to_the_primary(
    shop: Shop,
):
    """The lag was measured against the primary's position at the last look, however old:
    after a quiet spell, a replica far past the lag allowed served, and a shopper whose
    "read from the primary" had just run out saw a page without what she did (found by
    review)."""
    with shop_through(
        shop,
        shop.replica.url(DATABASE),
        DATABASE_REPLICA_MAX_LAG_SECONDS=2,
        DATABASE_PRIMARY_AFTER_WRITE_SECONDS=1,
    ) as app:
        assert app.test_client().get(f"/shop/{PIECE}").status_code == 200  # a look: all fine
        shop.replica.pause_replay()
        try:
            shopper = app.test_client()
            assert add_to_bag(shopper).status_code == 200
            time.sleep(3.2)  # a quiet spell: her "read from the primary" runs out
            shopper.delete_cookie(COOKIE)
            page = Page(shopper.get(f"/shop/{PIECE}"))
            assert text_of(page, "#bag-count").split()[0] == "1"
        finally:
            shop.replica.resume_replay()
            shop.replica.catch_up(shop.primary)


def test_a_replica_a_moment_behind_is_never_taken_for_one_far_behind(shop: Shop, caplog):
    """Measured against the primary's position of that instant (a process's first look, or
    the first after a quiet spell), a replica a moment behind a busy primary was called more
    than the lag behind: a warning each time, /healthz "behind", and the primary serving
    (found by review). Here it replayed a commit a moment ago and not the next one yet."""
    shop.primary.psql("CREATE TABLE lag_probe (n int)", DATABASE)
    shop.replica.catch_up(shop.primary)
    shop.replica.pause_replay()
    try:
        shop.primary.psql("INSERT INTO lag_probe VALUES (1)", DATABASE)
        with shop_through(
            shop, shop.replica.url(DATABASE), DATABASE_REPLICA_MAX_LAG_SECONDS=10
        ) as app:
            client = app.test_client()
            assert client.get(f"/shop/{PIECE}").status_code == 200
            health = client.get("/healthz").json["replica"]
    finally:
        shop.replica.resume_replay()
        shop.primary.psql("DROP TABLE lag_probe", DATABASE)
        shop.replica.catch_up(shop.primary)
    assert health == "ok"
    assert not [r for r in caplog.records if "has not replayed" in r.getMessage()]


def test_a_replica_far_behind_leaves_the_shop_window_to_the_primary(paused: Shop):
    """Its replay stopped: the shop window showed what it held, for ever and silently (found
    by review). Once it is more than the bound behind, the primary serves."""
    with shop_through(
        paused, paused.replica.url(DATABASE), DATABASE_REPLICA_MAX_LAG_SECONDS=1
    ) as app:
        shown = []
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            shown.append(shown_price(app.test_client().get(f"/shop/{PIECE}")))
            if shown[-1] == paused.price + RISE:
                break
            time.sleep(0.2)
        assert shown[-1] == paused.price + RISE, shown
        health = app.test_client().get("/healthz")
        assert (health.status_code, health.json["replica"]) == (200, "behind")


@contextlib.contextmanager
def primary_through_a_proxy(shop: Shop, max_lag_seconds: int) -> Iterator[tuple[Flask, TcpProxy]]:
    """A server of the shop whose primary is reached through a proxy a test can hang or cut
    (its replica directly), waiting a second at most for either."""
    with (
        TcpProxy(("127.0.0.1", shop.primary.port)) as proxy,
        shop_through(
            shop,
            replica_url=shop.replica.url(DATABASE),
            primary_url=f"postgresql://{OWNER}@127.0.0.1:{proxy.port}/{DATABASE}",
            DATABASE_REPLICA_TIMEOUT_SECONDS=1,
            DATABASE_REPLICA_MAX_LAG_SECONDS=max_lag_seconds,
        ) as app,
    ):
        yield app, proxy


@pytest.mark.parametrize("fault", ["hangs", "is_down"])
def test_a_primary_that_cant_say_how_far_behind_the_replica_is_leaves_it_serving(
    shop: Shop, fault: str
):
    """The lag check asked the primary with no bound, and took a primary's failure for the
    replica's: with the primary down, the shop window (which the replica could serve) was a
    503; with it hanging, a page hung (found by review)."""
    with primary_through_a_proxy(shop, max_lag_seconds=10) as (app, proxy):
        assert timed_page(app, "/shop")[0] == 200
        time.sleep(1.1)  # the next shop-window page asks the primary again
        if fault == "hangs":
            proxy.hang()
        else:
            proxy.cut()

        for path in ("/shop", f"/collections/{COLLECTION}", "/shop", "/"):
            status, took = timed_page(app, path)
            assert (status, took < 5) == (200, True), (path, status, took)


def test_a_replica_found_behind_serves_once_the_primary_cant_be_asked(paused: Shop):
    """Found behind, then the primary failed: the last answer stood, and the shop window read
    from the primary, down, though the replica answered (found by review)."""
    with primary_through_a_proxy(paused, max_lag_seconds=1) as (app, proxy):
        deadline = time.monotonic() + 8
        while app.extensions[REPLICA].behind is False and time.monotonic() < deadline:
            assert timed_page(app, f"/shop/{PIECE}")[0] == 200
            time.sleep(0.2)
        assert app.extensions[REPLICA].behind is True
        proxy.cut()
        time.sleep(1.1)

        for path in (f"/shop/{PIECE}", "/shop", "/"):
            status, took = timed_page(app, path)
            assert (status, took < 5) == (200, True), (path, status, took)


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
