"""Stock is counted per variant, never per line: a ring in two sizes, or a plain and an engraved
bangle, share one variant's units in every cap, reservation, commit and release."""

from __future__ import annotations

import threading
import time

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from elysium.extensions import db
from elysium.models import Inventory, Order, OrderStatus, Product, StockMovement
from tests.conftest import ShopClient, page_text
from tests.support.checkout import DETAILS, Shop, bags, session_id_from
from tests.support.meanwhile import waiting_for_a_lock

BANGLE = "aurelia-bangle"
RING = "aurelia-solitaire-ring"
RING_VARIANT = "yellow-gold/0.30ct"
RING_CHOICES = {"metal": "yellow-gold", "diamond": "0.30ct"}


def set_stock(app: Flask, slug: str, variant: str, level: int) -> int:
    with app.app_context():
        row = _row(slug, variant)
        row.stock_level, row.reserved = level, 0
        db.session.commit()
        row_id = row.id
        db.session.remove()
        return row_id


def _row(slug: str, variant: str) -> Inventory:
    product = db.session.scalars(select(Product).where(Product.slug == slug)).one()
    return next(row for row in product.inventory if row.variant_key == variant)


def stock_of(app: Flask, slug: str, variant: str) -> tuple[int, int]:
    with app.app_context():
        row = _row(slug, variant)
        counts = (row.stock_level, row.reserved)
        db.session.remove()
        return counts


def add(client: ShopClient, slug: str, quantity: int = 1, **choices: str):
    data = {"product": slug, "quantity": str(quantity), **choices}
    return client.submit(f"/shop/{slug}", data, action="/cart/items")


def add_bangle(client: ShopClient, engraving: str = "", quantity: int = 1):
    return add(client, BANGLE, quantity, metal="platinum", engraving=engraving)


def add_ring(client: ShopClient, size: str, quantity: int = 1):
    return add(client, RING, quantity, size=size, **RING_CHOICES)


def quantities(app: Flask) -> list[int]:
    return [quantity for _, lines in bags(app) for quantity in lines]


def test_the_last_piece_cannot_go_in_the_bag_twice_as_two_lines(app, client, catalogue):
    set_stock(app, BANGLE, "platinum", 1)
    assert add_bangle(client).status_code == 303

    refused = add_bangle(client, engraving="For Ada")

    assert refused.status_code == 409
    assert "Your bag already holds the last 1 piece in platinum." in page_text(refused)
    assert 'value="For Ada"' in page_text(refused)  # what the shopper typed stays
    assert quantities(app) == [1]


def test_sizes_of_one_ring_share_its_stock_when_adding_and_changing(app, client, catalogue):
    set_stock(app, RING, RING_VARIANT, 3)
    add_ring(client, "6", 2)

    response = add_ring(client, "7", 2)

    text = page_text(client.get(response.location))
    assert "and your bag already holds 2 in another size or engraving" in text
    assert quantities(app) == [2, 1]
    assert "Checkout is paused" not in page_text(client.get("/cart"))


def test_raising_one_size_is_capped_by_what_the_other_sizes_hold(app, client, catalogue):
    set_stock(app, RING, RING_VARIANT, 3)
    add_ring(client, "6", 2)
    add_ring(client, "7", 1)
    with app.app_context():
        from elysium.models import CartLine

        second = db.session.scalars(select(CartLine.id).order_by(CartLine.id)).all()[1]
        db.session.remove()

    response = client.submit("/cart", {"quantity": "3"}, action=f"/cart/items/{second}")

    assert response.status_code == 303
    assert quantities(app) == [2, 1]
    assert "your bag already holds 2 in another size or engraving" in page_text(client.get("/cart"))


def test_lines_on_one_variant_above_its_stock_block_checkout_with_how_many_are_left(
    shop: Shop, app: Flask
) -> None:
    client = shop.client()
    set_stock(app, RING, RING_VARIANT, 2)
    add_ring(client, "6")
    add_ring(client, "7")
    set_stock(app, RING, RING_VARIANT, 1)

    bag = page_text(client.get("/cart"))
    assert (
        "Only 1 left in 18k yellow gold with 0.30 ct, G colour, VS1, and your bag asks for 2 "
        "across 2 sizes or engravings" in bag
    )
    assert "Checkout is paused" in bag
    assert client.get("/checkout").status_code == 303
    refused = client.post("/checkout", data={"csrf_token": client.csrf_token, **DETAILS})
    assert refused.status_code == 409
    assert "Aurelia Solitaire Ring: Only 1 left in 18k yellow gold" in page_text(refused)
    with app.app_context():
        assert db.session.scalars(select(Order)).all() == []
    assert quantities(app) == [1, 1]
    assert stock_of(app, RING, RING_VARIANT) == (1, 0)


@pytest.mark.parametrize("ending", ["paid", "cancelled"])
def test_two_lines_on_one_variant_are_reserved_paid_and_released_together(
    shop: Shop, app: Flask, ending: str
) -> None:
    client = shop.client()
    set_stock(app, BANGLE, "platinum", 2)
    add_bangle(client)
    add_bangle(client, engraving="For Ada")

    session_id = session_id_from(
        client.post("/checkout", data={"csrf_token": client.csrf_token, **DETAILS}).location
    )

    assert stock_of(app, BANGLE, "platinum") == (2, 2)
    with app.app_context():
        reserved = db.session.scalars(
            select(StockMovement.reserved_delta).where(StockMovement.kind == "reserve")
        ).all()
        db.session.remove()
    assert reserved == [2]
    if ending == "paid":
        shop.fake.pay(session_id)
        assert stock_of(app, BANGLE, "platinum") == (0, 0)
    else:
        client.submit("/cart", {}, action="/checkout/cancel")
        assert stock_of(app, BANGLE, "platinum") == (2, 0)
        assert bags(app) == [(False, [1, 1])]


def test_shoppers_racing_with_two_lines_each_for_the_last_two_pieces_make_one_order(
    shop: Shop, app: Flask
) -> None:
    set_stock(app, RING, RING_VARIANT, 2)
    clients = [shop.client() for _ in range(8)]
    for client in clients:
        add_ring(client, "6")
        add_ring(client, "7")
        client.get("/checkout")
    barrier = threading.Barrier(len(clients))
    outcomes: list[tuple[int, str]] = []
    lock = threading.Lock()

    def attempt(client: ShopClient) -> None:
        barrier.wait()
        response = client.post("/checkout", data={"csrf_token": client.csrf_token, **DETAILS})
        with lock:
            outcomes.append((response.status_code, response.location or page_text(response)))

    threads = [threading.Thread(target=attempt, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    statuses = sorted(status for status, _ in outcomes)
    assert statuses == [303] + [409] * 7, statuses
    refusals = [body for status, body in outcomes if status == 409]
    # Each is told which piece, and that it is gone or how many are left for their two.
    assert all("Aurelia Solitaire Ring" in body for body in refusals)
    assert all(
        "your bag asks for 2" in body or "Sold out in 18k yellow gold" in body for body in refusals
    ), refusals
    assert stock_of(app, RING, RING_VARIANT) == (2, 2)
    with app.app_context():
        statuses_in_db = db.session.scalars(select(Order.status)).all()
        db.session.remove()
    assert statuses_in_db == [OrderStatus.PENDING]


@pytest.mark.postgres_only
def test_two_checkouts_holding_the_same_variants_in_opposite_order_never_deadlock(
    shop: Shop, app: Flask
) -> None:
    if not app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        pytest.skip("SQLite has one writer at a time: there are no row locks to order")
    first_row = set_stock(app, BANGLE, "platinum", 5)
    second_row = set_stock(app, "aurelia-fine-chain", "yellow-gold", 5)
    low, high = sorted([(first_row, "bangle"), (second_row, "chain")])
    add_piece = {
        "bangle": lambda client: add_bangle(client),
        "chain": lambda client: add(client, "aurelia-fine-chain", metal="yellow-gold"),
    }
    forwards, backwards = shop.client(), shop.client()
    for name in (low[1], high[1]):
        add_piece[name](forwards)
    for name in (high[1], low[1]):
        add_piece[name](backwards)
    for client in (forwards, backwards):
        client.get("/checkout")

    results: list[int] = []

    def check_out(client: ShopClient) -> None:
        response = client.post("/checkout", data={"csrf_token": client.csrf_token, **DETAILS})
        results.append(response.status_code)

    with app.app_context(), Session(db.engine) as holder:
        # Someone else (a staff stock count, say) holds the lower row for a moment.
        holder.execute(select(Inventory).where(Inventory.id == low[0]).with_for_update()).all()
        threads = [threading.Thread(target=check_out, args=(c,)) for c in (forwards, backwards)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 20
        while waiting_for_a_lock(app) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        holder.rollback()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(results) == [303, 303]
    assert stock_of(app, BANGLE, "platinum") == (5, 2)
    assert stock_of(app, "aurelia-fine-chain", "yellow-gold") == (5, 2)
