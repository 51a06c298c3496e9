"""On PostgreSQL every page (a GET) reads without a transaction (no BEGIN, no ROLLBACK round
trip), a product page records a first view in a transaction of its own, and a change (a POST)
keeps its transaction (``elysium.db_routing``)."""

from __future__ import annotations

import pytest
from flask import Flask
from sqlalchemy import event

from elysium.extensions import db
from tests.conftest import ShopClient

RING = "aurelia-solitaire-ring"


def run(app: Flask, client: ShopClient, path: str, **headers: str) -> list[tuple[str, bool, int]]:
    """Each statement the request ran, whether its connection was in autocommit, and which
    connection it was."""
    seen: list[tuple[str, bool, int]] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        driver = conn.connection.dbapi_connection
        seen.append((statement, driver.autocommit, id(driver)))

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        response = client.get(path, headers=headers)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert response.status_code == 200, path
    assert seen, path
    return seen


@pytest.fixture(autouse=True)
def _postgres(app: Flask) -> None:
    if not app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        pytest.skip("SQLite's reads cost no round trip: they stay in the transaction")


def test_shop_window_pages_read_without_a_transaction(app, client, catalogue, auth):
    for path in ("/", "/shop", "/shop?category=ring", "/collections/aurelia"):
        assert all(autocommit for _, autocommit, _ in run(app, client, path)), path
    price = f"/shop/{RING}/price?metal=platinum&diamond=0.50ct&size=6&add_to_bag_state=available"
    assert all(autocommit for _, autocommit, _ in run(app, client, price, **{"HX-Request": "true"}))

    # Signed in: who it is comes from the primary without a transaction as well.
    auth.create_user()
    auth.login()
    seen = run(app, client, "/shop")
    assert [statement for statement, _, _ in seen if "FROM users" in statement]
    assert all(autocommit for _, autocommit, _ in seen)


def test_a_product_page_reads_without_a_transaction_and_records_a_first_view_in_one(
    app, client, catalogue
):
    first = run(app, client, f"/shop/{RING}")
    writes = [(s, autocommit) for s, autocommit, _ in first if not s.startswith("SELECT")]
    # The view is recorded under its lock, in a transaction: the lock, then the insert.
    locked = [autocommit for s, autocommit, _ in first if "pg_try_advisory_xact_lock" in s]
    assert locked == [False]
    assert [w for w in writes if "INSERT INTO product_views" in w[0]] == [writes[0]]
    assert writes[0][1] is False
    reads = [s for s, autocommit, _ in first if autocommit]
    assert reads
    assert all(s.startswith("SELECT") for s in reads)

    # Seen again within the half hour: the page only reads, so it sends no BEGIN and no
    # COMMIT, and records nothing.
    again = run(app, client, f"/shop/{RING}")
    assert all(autocommit and s.startswith("SELECT") for s, autocommit, _ in again)
    assert not any("product_views" in s and "INSERT" in s for s, _, _ in again)


def test_a_shoppers_own_pages_read_without_a_transaction_and_a_change_keeps_its_own(
    app, client, catalogue
):
    """The bag only reads: no BEGIN and no ROLLBACK. Add to bag is a change: every statement
    of it, its reads too, runs in its transaction."""
    client.get(f"/shop/{RING}")
    seen: list[bool] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        seen.append(conn.connection.dbapi_connection.autocommit)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        added = client.htmx(
            "POST",
            "/cart/items",
            data={"product": RING, "quantity": "1", "size": "6", "metal": "yellow-gold"}
            | {"diamond": "0.30ct"},
        )
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert added.status_code == 200
    assert seen
    assert not any(seen)

    bag = run(app, client, "/cart")
    assert [statement for statement, _, _ in bag if "FROM cart_lines" in statement]
    assert all(autocommit for _, autocommit, _ in bag)
