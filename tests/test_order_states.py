"""The order state machine of DESIGN.md, and order numbers."""

from __future__ import annotations

import itertools
import re

import pytest

from elysium.extensions import db
from elysium.models import Order, OrderStatus
from elysium.services import orders
from elysium.services.orders import IllegalTransitionError

S = OrderStatus
LEGAL = {
    (S.PENDING, S.PROCESSING),
    (S.PENDING, S.PAID),
    (S.PENDING, S.PAYMENT_FAILED),
    (S.PENDING, S.CANCELLED),
    (S.PROCESSING, S.PAID),
    (S.PROCESSING, S.PAYMENT_FAILED),
    (S.PROCESSING, S.CANCELLED),
    (S.PAYMENT_FAILED, S.CANCELLED),
    (S.PAID, S.FULFILLED),
    (S.PAID, S.CANCELLED),
    (S.PAID, S.REFUNDED),
    (S.FULFILLED, S.SHIPPED),
    (S.FULFILLED, S.REFUNDED),
    (S.SHIPPED, S.DELIVERED),
    (S.SHIPPED, S.REFUNDED),
    (S.DELIVERED, S.REFUNDED),
}


def order_in(status: OrderStatus) -> Order:
    return Order(
        number="ELY-TESTTEST",
        email="a@example.com",
        currency="GBP",
        subtotal=1000,
        total=1000,
        shipping_address={},
        billing_address={},
        status=status,
        events=[],
    )


@pytest.mark.parametrize(("from_status", "to_status"), sorted(LEGAL))
def test_legal_moves_change_the_status_and_write_an_event(from_status, to_status):
    order = order_in(from_status)
    event = orders.transition_to(
        order, to_status, actor="stripe", note="paid by card", stripe_event_id="evt_1"
    )
    assert order.status is to_status
    assert order.events == [event]
    assert (event.from_status, event.to_status, event.actor, event.note, event.stripe_event_id) == (
        from_status,
        to_status,
        "stripe",
        "paid by card",
        "evt_1",
    )


ILLEGAL = sorted(set(itertools.product(S, S)) - LEGAL)


@pytest.mark.parametrize(("from_status", "to_status"), ILLEGAL)
def test_every_other_move_is_refused_and_changes_nothing(from_status, to_status):
    order = order_in(from_status)
    with pytest.raises(IllegalTransitionError):
        orders.transition_to(order, to_status, actor="staff:1")
    assert order.status is from_status
    assert order.events == []


def test_an_order_can_never_move_backwards_from_paid():
    order = order_in(S.PAID)
    for earlier in (S.PENDING, S.PROCESSING, S.PAYMENT_FAILED):
        with pytest.raises(IllegalTransitionError):
            orders.transition_to(order, earlier, actor="stripe")


def test_order_numbers_are_prefixed_random_and_unambiguous(app_context):
    numbers = {orders.new_order_number(db.session) for _ in range(200)}
    assert len(numbers) == 200
    for number in numbers:
        assert re.fullmatch(r"ELY-[2-9A-HJKMNP-Z]{8}", number)


def test_events_are_saved_with_the_order(app_context):
    order = order_in(S.PENDING)
    order.number = orders.new_order_number(db.session)
    db.session.add(order)
    orders.transition_to(order, S.PAID, actor="stripe", stripe_event_id="evt_9")
    orders.add_note(order, "Card declined once before success", actor="stripe")
    db.session.commit()
    db.session.expire_all()
    saved = db.session.get(Order, order.id)
    assert [(e.from_status, e.to_status, e.note) for e in saved.events] == [
        (S.PENDING, S.PAID, ""),
        (None, None, "Card declined once before success"),
    ]
