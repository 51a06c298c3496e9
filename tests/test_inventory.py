"""Stock operations: atomic, idempotent, never negative, and safe under concurrency."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime

import pytest
import time_machine
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from elysium.extensions import db
from elysium.models import Inventory, OutboxEmail, Product, StockMovement
from elysium.services import inventory
from elysium.services.inventory import OutOfStockError
from tests.support.orders import make_order


@pytest.fixture
def variant(catalogue, app_context):
    """A variant with exactly 3 units and a low-stock threshold of 2."""
    row = db.session.scalars(
        select(Inventory)
        .join(Product)
        .where(Product.slug == "aurelia-fine-chain", Inventory.variant_key == "yellow-gold")
    ).one()
    row.stock_level, row.reserved, row.low_stock_threshold = 3, 0, 1
    db.session.commit()
    return row.id


def counts(inventory_id: int) -> tuple[int, int]:
    db.session.expire_all()
    row = db.session.get(Inventory, inventory_id)
    return row.stock_level, row.reserved


def test_reserve_holds_units_and_running_it_again_changes_nothing(variant):
    order_id = make_order()
    assert inventory.reserve(db.session, variant, 2, order_id=order_id) is True
    assert inventory.reserve(db.session, variant, 2, order_id=order_id) is False
    db.session.commit()
    assert counts(variant) == (3, 2)


def test_reserving_more_than_is_available_fails_and_changes_nothing(variant):
    order_id = make_order()
    db.session.commit()
    with pytest.raises(OutOfStockError) as error:
        inventory.reserve(db.session, variant, 4, order_id=order_id)
    assert "Just sold out" in error.value.message
    db.session.rollback()
    assert counts(variant) == (3, 0)
    assert db.session.scalar(select(func.count()).select_from(StockMovement)) == 0


def test_commit_takes_reserved_units_out_of_stock_once(variant):
    order_id = make_order()
    inventory.reserve(db.session, variant, 2, order_id=order_id)
    assert inventory.commit(db.session, variant, 2, order_id=order_id) is True
    assert inventory.commit(db.session, variant, 2, order_id=order_id) is False
    db.session.commit()
    assert counts(variant) == (1, 0)


def test_release_gives_units_back_and_a_later_commit_is_a_no_op(variant):
    order_id = make_order()
    inventory.reserve(db.session, variant, 3, order_id=order_id)
    assert inventory.release(db.session, variant, 3, order_id=order_id) is True
    assert inventory.commit(db.session, variant, 3, order_id=order_id) is False
    assert inventory.release(db.session, variant, 3, order_id=order_id) is False
    db.session.commit()
    assert counts(variant) == (3, 0)


def test_settling_a_reservation_that_was_never_made_does_nothing(variant):
    order_id = make_order()
    assert inventory.commit(db.session, variant, 1, order_id=order_id) is False
    assert inventory.release(db.session, variant, 1, order_id=order_id) is False
    db.session.commit()
    assert counts(variant) == (3, 0)


def test_restock_with_the_same_key_counts_once(variant):
    assert inventory.restock(db.session, variant, 5, key="delivery:2026-11-26:1") is True
    assert inventory.restock(db.session, variant, 5, key="delivery:2026-11-26:1") is False
    db.session.commit()
    assert counts(variant) == (8, 0)


def test_adjust_never_goes_below_what_is_reserved(variant):
    order_id = make_order()
    inventory.reserve(db.session, variant, 2, order_id=order_id)
    db.session.commit()
    with pytest.raises(OutOfStockError):
        inventory.adjust(db.session, variant, -2, key="count:1", note="stocktake")
    db.session.rollback()
    assert inventory.adjust(db.session, variant, -1, key="count:2", note="one scratched") is True
    db.session.commit()
    assert counts(variant) == (2, 2)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_quantities_must_be_positive_whole_numbers(variant, bad):
    with pytest.raises(ValueError, match="positive whole number"):
        inventory.reserve(db.session, variant, bad, order_id=1)


def test_every_change_is_in_the_ledger(variant):
    order_id = make_order()
    inventory.reserve(db.session, variant, 1, order_id=order_id)
    inventory.commit(db.session, variant, 1, order_id=order_id)
    inventory.restock(db.session, variant, 4, key="delivery:7", note="from the workshop")
    db.session.commit()
    ledger = db.session.scalars(select(StockMovement).order_by(StockMovement.id)).all()
    assert [(m.kind.value, m.stock_delta, m.reserved_delta) for m in ledger] == [
        ("reserve", 0, 1),
        ("commit", -1, -1),
        ("restock", 4, 0),
    ]
    assert ledger[2].note == "from the workshop"


def low_stock_emails() -> list[OutboxEmail]:
    return db.session.scalars(
        select(OutboxEmail).where(OutboxEmail.template == "low_stock").order_by(OutboxEmail.id)
    ).all()


def test_crossing_the_low_stock_threshold_emails_staff_once(app, variant):
    first, second, third = make_order(), make_order(), make_order()
    inventory.reserve(db.session, variant, 1, order_id=first)
    db.session.commit()
    assert low_stock_emails() == []
    inventory.reserve(db.session, variant, 1, order_id=second)
    db.session.commit()
    [email] = low_stock_emails()
    assert email.to_address == app.config["STAFF_EMAIL"]
    assert "Aurelia Fine Chain" in email.subject
    assert "1 left to sell" in email.body_text
    inventory.reserve(db.session, variant, 1, order_id=third)
    db.session.commit()
    assert len(low_stock_emails()) == 1
    inventory.restock(db.session, variant, 5, key="delivery:8")
    fourth = make_order()
    inventory.reserve(db.session, variant, 5, order_id=fourth)
    db.session.commit()
    assert len(low_stock_emails()) == 2


def test_a_checkout_abandoned_and_made_again_emails_staff_no_second_time(app, variant):
    """A shopper leaves the payment page and checks out again: the units go back and are
    reserved again, and the threshold was crossed again, so staff were emailed again about the
    same piece. Only units coming in, or a new threshold, make the next crossing news."""
    abandoned, again = make_order(), make_order()
    inventory.reserve(db.session, variant, 2, order_id=abandoned)  # 1 left: the threshold
    db.session.commit()
    assert len(low_stock_emails()) == 1
    inventory.release(db.session, variant, 2, order_id=abandoned)
    inventory.reserve(db.session, variant, 2, order_id=again)
    db.session.commit()
    assert len(low_stock_emails()) == 1

    inventory.release(db.session, variant, 2, order_id=again)
    inventory.restock(db.session, variant, 2, key="delivery:9")  # 5 left
    after_the_delivery = make_order()
    inventory.reserve(db.session, variant, 4, order_id=after_the_delivery)
    db.session.commit()
    assert len(low_stock_emails()) == 2
    assert "1 left to sell" in low_stock_emails()[-1].body_text

    inventory.release(db.session, variant, 4, order_id=after_the_delivery)  # 5 left
    inventory.set_low_stock_threshold(db.session, variant, seen=1, new_threshold=3, key="t:1")
    inventory.reserve(db.session, variant, 2, order_id=make_order())
    db.session.commit()
    assert len(low_stock_emails()) == 3
    assert "3 left to sell (threshold 3)" in low_stock_emails()[-1].body_text


def test_a_made_to_order_piece_ships_by_a_date_counted_from_londons_today(variant):
    row = db.session.get(Inventory, variant)
    row.stock_level, row.lead_time_weeks = 0, 2
    db.session.commit()
    with time_machine.travel(datetime(2026, 7, 6, 23, 30, tzinfo=UTC)):  # 7 July in London
        shown = inventory.variant_availability(row.product, row.variant_key).message
    assert shown == "Made to order — ships in about 2 weeks, by 21 July"


def run_together(app, workers: int, work) -> list:
    """Start ``workers`` threads at the same instant, each with its own session."""
    barrier = threading.Barrier(workers)
    results: list = [None] * workers
    engine = db.engine

    def run(index: int) -> None:
        with app.app_context(), Session(engine) as session:
            barrier.wait()
            try:
                results[index] = work(session, index)
                session.commit()
            except Exception as error:
                session.rollback()
                results[index] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_twenty_shoppers_racing_for_the_last_three_units(app, variant):
    orders = [make_order() for _ in range(20)]
    db.session.commit()

    results = run_together(
        app, 20, lambda session, i: inventory.reserve(session, variant, 1, order_id=orders[i])
    )

    outcomes = Counter(type(result).__name__ for result in results)
    assert outcomes == {"bool": 3, "OutOfStockError": 17}, results
    assert all(r is True for r in results if isinstance(r, bool))
    assert counts(variant) == (3, 3)
    assert db.session.scalar(select(func.count()).select_from(StockMovement)) == 3


def test_the_same_reservation_retried_at_once_is_made_once(app, variant):
    order_id = make_order()
    db.session.commit()
    results = run_together(
        app, 10, lambda session, i: inventory.reserve(session, variant, 2, order_id=order_id)
    )
    assert sorted(map(repr, results)) == ["False"] * 9 + ["True"]
    assert counts(variant) == (3, 2)


def test_release_and_commit_racing_on_one_reservation_leave_consistent_counts(app, variant):
    order_ids = [make_order() for _ in range(3)]
    for order_id in order_ids:
        inventory.reserve(db.session, variant, 1, order_id=order_id)
    db.session.commit()

    def settle(session, index: int) -> str:
        order_id = order_ids[index // 2]
        operation = inventory.commit if index % 2 == 0 else inventory.release
        return operation.__name__ if operation(session, variant, 1, order_id=order_id) else "-"

    results = run_together(app, 6, settle)

    assert all(isinstance(result, str) for result in results), results
    for pair in range(3):
        assert sorted(results[pair * 2 : pair * 2 + 2]).count("-") == 1
    committed = results.count("commit")
    assert counts(variant) == (3 - committed, 0)
