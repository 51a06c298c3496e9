"""On PostgreSQL a shop-window page reads without a transaction (no BEGIN, no ROLLBACK round
trip), a product page reads and records its view in one transaction on one connection, and
everything else keeps its transaction (``elysium.db_routing``)."""

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


def test_a_product_page_reads_and_records_its_view_in_one_transaction(app, client, catalogue):
    seen = run(app, client, f"/shop/{RING}")
    assert [statement for statement, _, _ in seen if "INSERT INTO product_views" in statement]
    assert not any(autocommit for _, autocommit, _ in seen)
    assert len({connection for _, _, connection in seen}) == 1


def test_a_shoppers_own_pages_keep_their_transaction(app, client, catalogue):
    client.submit(
        f"/shop/{RING}",
        {"product": RING, "quantity": "1", "size": "6", "metal": "platinum", "diamond": "0.50ct"},
        action="/cart/items",
    )
    assert not any(autocommit for _, autocommit, _ in run(app, client, "/cart"))
