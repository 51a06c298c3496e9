"""Orders: their numbers and the state machine every status change goes through."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import current_app
from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from elysium import house_time
from elysium.models.orders import Order, OrderEvent, OrderStatus, RefundStatus
from elysium.money import format_money
from elysium.services import shipping
from elysium.services.accounts import normalise_email
from elysium.services.outbox import queue_email
from elysium.services.sql import AnySession
from elysium.urls import absolute_url

S = OrderStatus

# PAYMENT_FAILED -> PENDING ("retry") is left out on purpose: nothing would ever make that
# move, and an order taken back to PENDING would reserve its stock a second time under the
# ledger keys its first reservation already used (so reserving nothing). A shopper whose bank
# payment failed checks out again: a new order, from their bag or the shop (the email says
# which), with another payment method if they like.
ALLOWED_TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    S.PENDING: frozenset({S.PROCESSING, S.PAID, S.PAYMENT_FAILED, S.CANCELLED}),
    S.PROCESSING: frozenset({S.PAID, S.PAYMENT_FAILED, S.CANCELLED}),
    S.PAYMENT_FAILED: frozenset({S.CANCELLED}),
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
    actor_user_id: int | None = None,
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
        actor_user_id=actor_user_id,
    )
    order.status = to_status
    order.events.append(event)
    return event


def flagged_for(order: Order) -> list[str]:
    """Why staff are asked to look at the order, one reason a line, as ``checkout.flag`` wrote
    them (none once the flag is off)."""
    return attention_reasons(order.needs_attention, order.attention_reason)


def attention_seen(order: Order) -> str:
    """What the order's warning says, as a short digest: a form that acts on the order sends
    back the one its page showed (settling the warning, fulfilling, shipping, delivering), and
    is refused if the warning changed since: staff act on what they read."""
    return warning_digest(order.attention_reason if order.needs_attention else "")


def warning_digest(shown: str) -> str:
    """:func:`attention_seen` of a page that showed the warning ``shown`` ("" for none)."""
    return hashlib.sha256(shown.encode()).hexdigest()[:16]


def attention_reasons(needs_attention: bool, attention_reason: str | None) -> list[str]:
    """:func:`flagged_for`, from the two columns (a listing reads them without the order)."""
    if not needs_attention:
        return []
    return [line for line in (attention_reason or "").split("\n") if line.strip()]


def add_note(
    order: Order,
    note: str,
    *,
    actor: str,
    stripe_event_id: str | None = None,
    actor_user_id: int | None = None,
) -> OrderEvent:
    """A timeline entry that changes nothing (a failed card attempt, a staff remark)."""
    event = OrderEvent(
        actor=actor,
        note=readable(note),
        stripe_event_id=stripe_event_id,
        actor_user_id=actor_user_id,
    )
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
    S.FULFILLED: "Being prepared in our workshop",
    S.SHIPPED: "Shipped",
    S.DELIVERED: "Delivered",
    S.CANCELLED: "Cancelled",
    S.REFUNDED: "Refunded in full",
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
    S.REFUNDED: "Refunded in full",
}

# Where a shipment is still worth showing: a refunded order's parcel is old news.
ON_ITS_WAY = frozenset({S.SHIPPED, S.DELIVERED})


@dataclass(frozen=True)
class Shipment:
    """How a shipped order travels, as the shopper reads it."""

    carrier_name: str | None
    tracking_number: str | None
    tracking_link: str | None
    shipped_at: datetime | None


@dataclass(frozen=True)
class RefundNote:
    """Money given back: its amount, the day it was refunded when the shop knows it, whether
    Stripe is still sending it, and whether it was the shopper's bank that took it back (a
    dispute lost), not a refund of ours."""

    amount: int
    on: datetime | None
    in_progress: bool = False
    by_bank: bool = False


def carrier_name(order: Order) -> str | None:
    carrier = shipping.carrier_named(order.carrier)
    return carrier.name if carrier else None


def tracking_link_for(order: Order) -> str | None:
    """The courier's tracking page for this order, when it names a carrier and a number."""
    return shipping.tracking_link(order.carrier, order.tracking_number)


def shipment(order: Order) -> Shipment | None:
    """The parcel, while it matters to the shopper (shipped or delivered), else None."""
    if order.status not in ON_ITS_WAY:
        return None
    return Shipment(
        carrier_name=carrier_name(order),
        tracking_number=order.tracking_number or None,
        tracking_link=tracking_link_for(order),
        shipped_at=order.shipped_at,
    )


def headline(order: Order) -> str:
    """The order's state in a few words: "Shipped with Royal Mail Special Delivery"."""
    name = carrier_name(order)
    if order.status is S.SHIPPED and name:
        return f"Shipped with {name}"
    if refund_turned_back(order):
        return "Refund to be arranged"
    if order.status is S.REFUNDED and (by_bank := returned_by_bank(order)):
        return "Payment returned by your bank" if by_bank >= order.total else "Given back in full"
    return STATUS_LABELS[order.status]


def refund_turned_back(order: Order) -> bool:
    """A REFUNDED order whose refund failed at Stripe since (a closed card): the money is
    back with the shop, and staff give it back another way (the back office's give-back)."""
    return order.status is S.REFUNDED and order.refunded_amount < order.total


def returned_by_bank(order: Order) -> int:
    """What the shopper's bank took back of the order's payment (disputes lost), of what the
    order counts as given back."""
    return min(order.charged_back_amount, order.refunded_amount)


def shopper_refunds(order: Order) -> list[RefundNote]:
    """The money given back, oldest first: each refund staff made, with its date (one Stripe
    is still sending says so; a refused one is not shown), then whatever else the order
    records as refunded (made in Stripe's dashboard and reported by the webhook), undated,
    then what the shopper's bank took back (``by_bank``)."""
    notes = [
        RefundNote(refund.amount, refund.created_at, refund.status is RefundStatus.PENDING)
        for refund in order.refunds
        if refund.status is not RefundStatus.FAILED
    ]
    rest = order.refunded_amount - sum(note.amount for note in notes)
    by_bank = min(returned_by_bank(order), max(rest, 0))
    if rest - by_bank > 0:
        notes.append(RefundNote(rest - by_bank, None))
    if by_bank > 0:
        notes.append(RefundNote(by_bank, None, by_bank=True))
    return notes


def money_taken(order: Order) -> bool:
    """Whether the shopper's money was taken for the order: it was paid, its payment came
    after it had ended unpaid, or some was given back (a payment the shop refused, then
    refunded, was taken all the same)."""
    return (
        order.paid_at is not None
        or order.late_payment_at is not None
        or bool(shopper_refunds(order))
    )


def held_after_cancelling(order: Order) -> int:
    """What a paid order that was cancelled still holds of its payment. Cancel gives all of
    it back first, unless Stripe refuses any refund (a dispute of it was lost): the rest is
    then with the shop, which gives it back another way."""
    if order.status is not S.CANCELLED or order.paid_at is None:
        return 0
    return max(order.total - sum(note.amount for note in shopper_refunds(order)), 0)


def email_cancelled(session: AnySession, order: Order, *, back_in_bag: bool) -> None:
    """The shopper's cancellation email, saying what is so: whether money was taken and how
    much was given back, and whether the pieces are back in their bag (``back_in_bag``: the
    caller reads it before the cancel thaws the bag, ``checkout.holds_its_cart``)."""
    notes = shopper_refunds(order)
    ours = [note for note in notes if not note.by_bank]
    refunded = sum(note.amount for note in ours)
    by_bank = sum(note.amount for note in notes if note.by_bank)
    still_held = held_after_cancelling(order)
    # Refunded in parts (one told before, the rest now): each part, so the total reads as
    # what came back in all, never as more to come.
    parts = [
        format_money(note.amount, order.currency)
        + (f" on {house_time.date_of(note.on):%-d %B %Y}" if note.on else "")
        for note in ours
    ]
    email_shopper(
        session,
        order,
        "order_cancelled",
        f"Your ELYSIUM order {order.number} was cancelled",
        money_taken=money_taken(order),
        refunded_amount=format_money(refunded, order.currency) if refunded else None,
        refund_parts=parts if len(parts) > 1 else None,
        returned_by_bank=format_money(by_bank, order.currency) if by_bank else None,
        still_held=format_money(still_held, order.currency) if still_held else None,
        back_in_bag=back_in_bag,
    )


def email_refund(
    session: AnySession, order: Order, amount: int, *, full: bool, dedupe_key: str | None = None
) -> None:
    """The shopper's refund email: ``amount`` given back (in minor units), and whether the
    order is now refunded in full; once per ``dedupe_key`` (a refund, an amount reached)."""
    email_shopper(
        session,
        order,
        "order_refunded",
        f"Your refund for {order.number}",
        amount=format_money(amount, order.currency),
        full=full,
        dedupe_key=dedupe_key,
    )


def needs_signature(total: int, above: int | None) -> bool:
    """Whether the insured courier asks a signature on delivery: for a total over ``above``
    (``SIGNATURE_REQUIRED_ABOVE``), as the checkout page says."""
    return above is not None and total > above


def signed_for(order: Order) -> bool:
    """Whether the order travels signed for: what its pages and emails may promise."""
    return needs_signature(order.total, current_app.config.get("SIGNATURE_REQUIRED_ABOVE"))


def describe(event: OrderEvent) -> str:
    """An order event in plain words for the shopper. Only the status is told: the note is
    the shop's own (a staff member's reason, a Stripe event id), never the shopper's."""
    if event.to_status is None:
        return ""
    if event.to_status is S.SHIPPED and (name := carrier_name(event.order)):
        return f"Sent with {name}, insured{' and signed for' if signed_for(event.order) else ''}"
    if event.to_status is S.REFUNDED and (by_bank := returned_by_bank(event.order)):
        if by_bank >= event.order.total:
            return "Your bank gave your payment back to you"
        return "Given back in full, by us and by your bank"
    return EVENT_WORDS[event.to_status]


def shopper_timeline(order: Order) -> list[tuple[OrderEvent, str]]:
    """The status changes a shopper should see, oldest first, in plain words; notes (staff
    remarks, payment details) stay in the back office."""
    return [(event, describe(event)) for event in order.events if event.to_status is not None]


def _with_details(statement):
    return statement.options(
        selectinload(Order.lines), selectinload(Order.events), selectinload(Order.refunds)
    )


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
    # As accounts compare addresses: a link sent before the order's address was kept in lower
    # case and composed (migration 0029) still opens it. As bytes: compare_digest refuses
    # text outside ASCII, and an address may hold some.
    if order is None or not order.email:
        return None
    sent_to = normalise_email(str(data["e"])).encode()
    if not hmac.compare_digest(normalise_email(order.email).encode(), sent_to):
        return None
    return order


def email_payment_received(
    session: AnySession, order: Order, *, commission: str | None = None
) -> None:
    """A receipt alone, for money the order can't simply take: a payment that came after the
    order ended unpaid, or a deposit (``commission``, its reference) whose quote or commission
    changed meanwhile. The money is acknowledged and nothing promised, neither the piece nor
    the quote's terms, since staff decide what becomes of it."""
    about = f"commission {commission}" if commission else f"order {order.number}"
    email_shopper(
        session,
        order,
        "payment_received",
        f"Your payment for {about} is received",
        name=order.shipping_address.get("full_name", ""),
        commission=commission,
    )


def email_shopper(
    session: AnySession,
    order: Order,
    template: str,
    subject: str,
    *,
    dedupe_key: str | None = None,
    **context: Any,
) -> None:
    """Queue an email about the order to its shopper, with the link to its page; once per
    order and template unless ``dedupe_key`` says otherwise (a second refund, say). An order
    whose shopper closed their account keeps no address: nobody is emailed."""
    if not order.email:
        current_app.logger.info(
            "Order %s: no %s email, its shopper closed their account", order.number, template
        )
        return
    queue_email(
        session,
        to=order.email,
        subject=subject,
        template=template,
        context={
            "order": order,
            "total": format_money(order.total, order.currency),
            "order_url": absolute_url(
                "orders.detail", number=order.number, token=guest_link_token(order)
            ),
            "signed_for": signed_for(order),
            **context,
        },
        user_id=order.user_id,
        order_id=order.id,
        dedupe_key=dedupe_key or f"order:{order.id}:{template}",
    )
