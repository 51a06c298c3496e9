"""Orders: their numbers and the state machine every status change goes through."""

from __future__ import annotations

import secrets

from sqlalchemy import select

from elysium.models.orders import Order, OrderEvent, OrderStatus
from elysium.services.sql import AnySession

S = OrderStatus

ALLOWED_TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    S.PENDING: frozenset({S.PROCESSING, S.PAID, S.PAYMENT_FAILED, S.CANCELLED}),
    S.PROCESSING: frozenset({S.PAID, S.PAYMENT_FAILED, S.CANCELLED}),
    S.PAYMENT_FAILED: frozenset({S.PENDING, S.CANCELLED}),
    S.PAID: frozenset({S.FULFILLED, S.CANCELLED, S.REFUNDED}),
    S.FULFILLED: frozenset({S.SHIPPED, S.REFUNDED}),
    S.SHIPPED: frozenset({S.DELIVERED, S.REFUNDED}),
    S.DELIVERED: frozenset({S.REFUNDED}),
    S.CANCELLED: frozenset(),
    S.REFUNDED: frozenset(),
}

# No 0/O or 1/I/L: an order number is read aloud over the phone.
NUMBER_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
NUMBER_PREFIX = "ELY-"
NUMBER_LENGTH = 8
NUMBER_ATTEMPTS = 5


class IllegalTransitionError(Exception):
    """A move the state machine does not allow; nothing was changed."""

    def __init__(self, order: Order, to_status: OrderStatus):
        super().__init__(f"order {order.number}: {order.status.value} -> {to_status.value}")
        self.from_status = order.status
        self.to_status = to_status


def can_transition(from_status: OrderStatus, to_status: OrderStatus) -> bool:
    return to_status in ALLOWED_TRANSITIONS[from_status]


def transition_to(
    order: Order,
    to_status: OrderStatus,
    *,
    actor: str,
    note: str = "",
    stripe_event_id: str | None = None,
) -> OrderEvent:
    """Move the order and record who moved it, when, from where and why.

    Raises :class:`IllegalTransitionError` for any move not in ``ALLOWED_TRANSITIONS``, so a
    late or repeated event can never move an order backwards.
    """
    if not can_transition(order.status, to_status):
        raise IllegalTransitionError(order, to_status)
    event = OrderEvent(
        from_status=order.status,
        to_status=to_status,
        actor=actor,
        note=note,
        stripe_event_id=stripe_event_id,
    )
    order.status = to_status
    order.events.append(event)
    return event


def add_note(
    order: Order, note: str, *, actor: str, stripe_event_id: str | None = None
) -> OrderEvent:
    """A timeline entry that changes nothing (a failed card attempt, a staff remark)."""
    event = OrderEvent(actor=actor, note=note, stripe_event_id=stripe_event_id)
    order.events.append(event)
    return event


def new_order_number(session: AnySession) -> str:
    """``ELY-7K3M9QX2``: random, unguessable, and checked against existing orders."""
    for _ in range(NUMBER_ATTEMPTS):
        number = NUMBER_PREFIX + "".join(
            secrets.choice(NUMBER_ALPHABET) for _ in range(NUMBER_LENGTH)
        )
        if session.scalar(select(Order.id).where(Order.number == number)) is None:
            return number
    raise RuntimeError(
        "could not find a free order number"
    )  # 31^8 makes this practically impossible
