"""Orders: their numbers and the state machine every status change goes through."""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Sequence

from flask import current_app
from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import select
from sqlalchemy.orm import selectinload

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
        note=readable(note),
        stripe_event_id=stripe_event_id,
    )
    order.status = to_status
    order.events.append(event)
    return event


def add_note(
    order: Order, note: str, *, actor: str, stripe_event_id: str | None = None
) -> OrderEvent:
    """A timeline entry that changes nothing (a failed card attempt, a staff remark)."""
    event = OrderEvent(actor=actor, note=readable(note), stripe_event_id=stripe_event_id)
    order.events.append(event)
    return event


def readable(text: str) -> str:
    """A note as it can be stored and shown: words quoted from outside (a card issuer's
    decline message, a dispute reason) may hold control characters no text column takes."""
    return "".join(char for char in text if char in "\n\t" or char.isprintable())


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


STATUS_LABELS: dict[OrderStatus, str] = {
    S.PENDING: "Awaiting payment",
    S.PROCESSING: "Awaiting your bank transfer",
    S.PAYMENT_FAILED: "Payment failed",
    S.PAID: "Paid",
    S.FULFILLED: "Being prepared",
    S.SHIPPED: "Shipped",
    S.DELIVERED: "Delivered",
    S.CANCELLED: "Cancelled",
    S.REFUNDED: "Refunded",
}

EVENT_WORDS: dict[OrderStatus, str] = {
    S.PENDING: "Waiting for your payment",
    S.PROCESSING: "Order placed: awaiting your bank transfer",
    S.PAYMENT_FAILED: "Your payment didn't go through",
    S.PAID: "Payment received, thank you",
    S.FULFILLED: "Your piece is being finished and packed in our workshop",
    S.SHIPPED: "Sent by insured courier",
    S.DELIVERED: "Delivered",
    S.CANCELLED: "The order was cancelled",
    S.REFUNDED: "Refunded",
}


def describe(event: OrderEvent) -> str:
    """An order event in plain words for the shopper (staff notes stay in the back office)."""
    if event.to_status is not None:
        return EVENT_WORDS[event.to_status]
    return ""


def shopper_timeline(order: Order) -> list[tuple[OrderEvent, str]]:
    """The status changes a shopper should see, oldest first, in plain words."""
    return [(event, describe(event)) for event in order.events if event.to_status is not None]


def _with_details(statement):
    return statement.options(selectinload(Order.lines), selectinload(Order.events))


def orders_for_user(session: AnySession, user_id: int) -> Sequence[Order]:
    statement = (
        select(Order)
        .where(Order.user_id == user_id)
        .order_by(Order.created_at.desc(), Order.id.desc())
        .options(selectinload(Order.lines))
    )
    return session.scalars(statement).all()


def order_for_user(session: AnySession, user_id: int, number: str) -> Order | None:
    statement = _with_details(select(Order).where(Order.user_id == user_id, Order.number == number))
    return session.scalar(statement)


def _link_serializer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt="elysium.order-link")


def guest_link_token(order: Order) -> str:
    """A token for the order page link in emails: it names the order and its email address."""
    return _link_serializer().dumps({"n": order.number, "e": order.email})


def order_for_guest_token(session: AnySession, number: str, token: str) -> Order | None:
    """The order a link is for, while the order still carries the address it was sent to."""
    try:
        data = _link_serializer().loads(token)
    except BadSignature:
        return None
    if not isinstance(data, dict) or data.get("n") != number or not data.get("e"):
        return None
    order = session.scalar(_with_details(select(Order).where(Order.number == number)))
    if order is None or not hmac.compare_digest(order.email, str(data["e"])):
        return None
    return order
