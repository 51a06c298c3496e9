"""What staff do to an order after it is paid: fulfil, ship, deliver, cancel and refund.

Every action moves the order only through the state machine (an illegal move is refused with
its reason, :class:`ActionRefusedError`), writes who did it on the timeline, and queues the
shopper's email only when staff ask for it (``notify``).

Refunds go through Stripe's Refunds API in three steps, so no row lock is held while Stripe
answers: the refund is recorded (PENDING, with an idempotency key from the staff member's
form, so a double submit or two tabs refund once), Stripe is asked, and the answer is applied
under the order's lock. Pieces put back on sale with a refund or a cancellation are restocked
exactly once (the stock ledger's unique keys). The ``charge.refunded`` webhook that follows
finds the refund already counted (``refunded_amount`` is never summed twice: it is the larger
of what Stripe reports and what succeeded here).

A refund Stripe could not confirm stays PENDING and holds the money it asked for: while any
refund of an order is PENDING the order is never cancelled or marked refunded, and the refund
is retried (:func:`refund_to_retry`) with its own idempotency key, whichever form asks.

Services never commit, except that the refund steps are units of work of their own: the
caller commits after each step it calls (see ``staff/fulfilment.py``).
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import TypeVar

from flask import current_app
from sqlalchemy import select

from elysium import house_time
from elysium.integrations import stripe_gateway
from elysium.models.inventory import StockReason
from elysium.models.orders import Order, OrderStatus, Refund, RefundStatus
from elysium.models.outbox import OutboxEmail
from elysium.models.types import utcnow
from elysium.money import format_money
from elysium.services import checkout, inventory, orders, payments, quotes, shipping
from elysium.services.errors import InvalidInputError
from elysium.services.sql import AnySession, insert_unless_exists

T = TypeVar("T")
S = OrderStatus
REFUNDABLE = frozenset({S.PAID, S.FULFILLED, S.SHIPPED, S.DELIVERED})
UNPAID = frozenset({S.PENDING, S.PROCESSING, S.PAYMENT_FAILED})
ENDED = payments.ENDED
# The flags that say an ended order's money is still with the shop (``held_after_it_ended``):
# whichever status it has ended in since (a failed bank payment may be cancelled after).
HELD_AFTER_IT_ENDED = (*payments.PAID_TOO_LATE.values(), payments.REFUND_FAILED_FLAG)
REASON_MAX = 500
# Stripe keeps an idempotency key's answer for at least 24 hours; a refund first asked longer
# ago than this is looked up before it is asked for again (``ask_stripe``).
STRIPE_KEY_MEMORY = timedelta(hours=23)
REFUND_KEY = payments.REFUND_KEY
CANCEL_REFUND_KEY = payments.CANCEL_REFUND_KEY
UNACCEPTED_REFUND_KEY = payments.UNACCEPTED_REFUND_KEY
is_plain_refund = payments.is_plain_refund
# How the flag raised when Stripe refuses a refund begins.
REFUND_REFUSED = "Stripe refused a refund of"
CANCEL_TO_FINISH_FLAG = payments.CANCEL_TO_FINISH_FLAG
REFUND_AWAITED_FLAG = payments.REFUND_AWAITED_FLAG
# Flags that the step they wait for takes off, never a note settling them by hand.
STEP_FLAGS = frozenset({CANCEL_TO_FINISH_FLAG, REFUND_AWAITED_FLAG})


class Action(enum.StrEnum):
    FULFIL = "fulfil"
    SHIP = "ship"
    DELIVER = "deliver"
    CANCEL = "cancel"
    REFUND = "refund"


# What is done to a piece; a deposit order has none of these.
TO_MAKE = frozenset({Action.FULFIL, Action.SHIP, Action.DELIVER})

# The move each action makes (refunding moves to REFUNDED only when it gives back the rest).
MOVES: dict[Action, OrderStatus] = {
    Action.FULFIL: S.FULFILLED,
    Action.SHIP: S.SHIPPED,
    Action.DELIVER: S.DELIVERED,
    Action.CANCEL: S.CANCELLED,
}


class ActionRefusedError(Exception):
    """Not possible for this order now; ``message`` says why (the answer is a 409)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class StripeUnreachableError(ActionRefusedError):
    """Stripe could not be asked, so nothing was done (the answer is a 503)."""


class InvalidActionError(InvalidInputError):
    """The staff member's input can't be used; ``errors`` by field (the answer is a 422)."""


class RefundsChangedError(InvalidActionError):
    """A refund was made on the order since the form's page was drawn, and the message says
    so; ``refunds``: how many the order has now, which the form drawn with it counts."""

    def __init__(self, errors: dict[str, str], *, refunds: int):
        super().__init__(errors)
        self.refunds = refunds


@dataclass(frozen=True)
class Staff:
    """Who acts: kept on every timeline entry and stock movement."""

    user_id: int
    name: str


def dispute_lost(order: Order) -> bool:
    """Whether a dispute of the order's payment was lost (the webhook flagged it): Stripe then
    refuses any refund of what is left of the payment."""
    return any(line.startswith(payments.DISPUTE_LOST_FLAG) for line in orders.flagged_for(order))


def available(order: Order) -> list[Action]:
    """The actions the state machine allows for the order as it is."""
    actions = [
        action
        for action, status in MOVES.items()
        if orders.can_transition(order.status, status)
        # A deposit on a commission is money, not a piece: never made, shipped or delivered.
        and not (order.bespoke_quote_id is not None and action in TO_MAKE)
        and not (action in TO_MAKE and _all_given_back(order))
    ]
    if order.status in REFUNDABLE and refundable_amount(order) > 0 and not dispute_lost(order):
        actions.append(Action.REFUND)
    return actions


def _all_given_back(order: Order) -> bool:
    """Whether all the order's money is given back, or being given back (a refund asked of
    Stripe, the first half of a cancel that did not finish, say): nothing is made, shipped or
    delivered that is no longer paid for."""
    return order.status in REFUNDABLE and refundable_amount(order) == 0


def refundable_amount(order: Order) -> int:
    """What can still be given back: what was paid less what has been (or is being: a PENDING
    refund may have reached Stripe, so it is retried, never asked again under a new key)."""
    asked = sum(r.amount for r in order.refunds if r.status is not RefundStatus.FAILED)
    return max(order.total - max(order.refunded_amount, asked), 0)


def pending_refunds(order: Order) -> list[Refund]:
    """Refunds asked of Stripe whose answer never came: each must be retried with its key."""
    return sorted(
        (r for r in order.refunds if r.status is RefundStatus.PENDING), key=lambda r: r.id
    )


def _refunds_now(session: AnySession, order: Order) -> None:
    """Read the order's refunds again under its lock (another request may have added one)."""
    session.refresh(order, attribute_names=["refunds"])


def _refuse_while_pending(order: Order, doing: str) -> None:
    if pending := pending_refunds(order):
        amounts = ", ".join(format_money(r.amount, r.currency) for r in pending)
        raise ActionRefusedError(
            f"Order {order.number} can't be {doing}: Stripe has not confirmed the refund of "
            f"{amounts}. Retry it first (it will never refund twice)."
        )


def _locked(session: AnySession, order_id: int) -> Order:
    order = checkout.lock_order(session, order_id)
    if order is None:
        raise ActionRefusedError("This order no longer exists.")
    return order


def refuse_unless(order: Order, action: Action) -> None:
    """Raise :class:`ActionRefusedError` unless ``action`` is possible for the order now."""
    if action not in available(order):
        if action is Action.REFUND and dispute_lost(order):
            raise ActionRefusedError(
                f"Order {order.number} can't be refunded: Stripe refuses refunds of a payment "
                "once a dispute of it is lost. Give the money back to the shopper another way."
            )
        if action in TO_MAKE and _all_given_back(order):
            # Only an order that can still be cancelled is told to be (not one shipped).
            cancel = (
                " Cancel it to put its pieces back on sale."
                if (Action.CANCEL in available(order))
                else ""
            )
            raise ActionRefusedError(
                f"Order {order.number} can't be {_PAST[action]}: its payment is given back, "
                f"or being given back.{cancel}"
            )
        if action is Action.REFUND and _all_given_back(order):
            raise ActionRefusedError(
                f"Order {order.number} can't be refunded: all of its payment is given back, "
                "or being given back."
            )
        if order.bespoke_quote_id is not None and action in TO_MAKE:
            raise ActionRefusedError(
                f"Order {order.number} is a deposit on a commission: there is no piece in it "
                f"to be {_PAST[action]}."
            )
        label = orders.STATUS_LABELS[order.status].lower()
        raise ActionRefusedError(f"Order {order.number} can't be {_PAST[action]}: it is {label}.")


_PAST = {
    Action.FULFIL: "marked fulfilled",
    Action.SHIP: "shipped",
    Action.DELIVER: "marked delivered",
    Action.CANCEL: "cancelled",
    Action.REFUND: "refunded",
}


def _move(order: Order, status: OrderStatus, staff: Staff, note: str) -> None:
    orders.transition_to(order, status, actor=staff.name, note=note, actor_user_id=staff.user_id)


def as_seen(order: Order, action: Action, seen: str | None) -> None:
    """Staff make the piece, ship it or hand it over on what their page showed: a warning
    raised or changed since (a dispute of the payment, come while they looked) is read first.
    ``seen``: the digest of the warning the order's page showed (``orders.attention_seen``);
    ``None`` from a list, which shows that an order needs attention but not why, so an order
    whose payment is disputed is opened and decided on its own."""
    if seen is None:
        if any(reason.startswith(payments.DISPUTE_FLAG) for reason in orders.flagged_for(order)):
            raise ActionRefusedError(
                f"Order {order.number} has a disputed payment: open it to decide whether it "
                f"should be {_PAST[action]}."
            )
        return
    if seen != orders.attention_seen(order):
        raise ActionRefusedError(
            f"What needs attention on order {order.number} changed while you looked: read it, "
            f"then ask again if it should still be {_PAST[action]}."
        )


def fulfil(session: AnySession, order_id: int, staff: Staff, *, seen: str | None) -> Order:
    """The piece is finished and packed in the workshop."""
    order = _locked(session, order_id)
    refuse_unless(order, Action.FULFIL)
    as_seen(order, Action.FULFIL, seen)
    _move(order, S.FULFILLED, staff, "Finished and packed")
    session.flush()
    return order


def ship(
    session: AnySession,
    order_id: int,
    staff: Staff,
    *,
    carrier: str,
    tracking_number: str,
    notify: bool,
    seen: str | None,
) -> Order:
    """Handed to the courier: the carrier and tracking number are required. The warning the
    page showed is checked first: a form sent back to correct would show the new one no more."""
    order = _locked(session, order_id)
    refuse_unless(order, Action.SHIP)
    as_seen(order, Action.SHIP, seen)
    errors: dict[str, str] = {}
    courier = shipping.carrier_named(carrier)
    if courier is None:
        errors["carrier"] = "Choose the courier."
    number = shipping.clean_tracking_number(tracking_number)
    if number is None:
        errors["tracking_number"] = (
            "Enter the tracking number as the courier printed it (letters and digits)."
        )
    if errors:
        raise InvalidActionError(errors)
    assert courier is not None
    assert number is not None
    order.carrier, order.tracking_number, order.shipped_at = courier.code, number, utcnow()
    _move(order, S.SHIPPED, staff, f"Shipped with {courier.name}, tracking number {number}")
    if notify:
        orders.email_shopper(
            session,
            order,
            "order_shipped",
            f"Your ELYSIUM order {order.number} is on its way",
            carrier_name=courier.name,
            tracking_link=courier.tracking_link(number),
            sent=pieces_to_send(order),
        )
    session.flush()
    return order


def deliver(
    session: AnySession, order_id: int, staff: Staff, *, notify: bool, seen: str | None
) -> Order:
    order = _locked(session, order_id)
    refuse_unless(order, Action.DELIVER)
    as_seen(order, Action.DELIVER, seen)
    order.delivered_at = utcnow()
    _move(order, S.DELIVERED, staff, "Delivered")
    if notify:
        orders.email_shopper(
            session,
            order,
            "order_delivered",
            f"Your ELYSIUM order {order.number} has arrived",
            delivered_on=house_time.date_of(order.delivered_at),
            sent=pieces_to_send(order),
        )
    session.flush()
    return order


def _reason(text: str, *, required: bool) -> str:
    reason = " ".join((text or "").split())
    if required and not reason:
        raise InvalidActionError({"reason": "Say why, for the order's record."})
    if len(reason) > REASON_MAX:
        raise InvalidActionError({"reason": f"Use at most {REASON_MAX} characters."})
    return reason


def add_note(session: AnySession, order_id: int, staff: Staff, text: str) -> Order:
    """An internal note on the timeline (never shown to the shopper)."""
    note = _reason(text, required=True)
    order = _locked(session, order_id)
    orders.add_note(order, note, actor=staff.name, actor_user_id=staff.user_id)
    session.flush()
    return order


@dataclass(frozen=True)
class RefundRequest:
    """A refund as the staff member asked for it; ``request_key`` comes from their form, so
    the same form sent twice is one refund. ``for_cancelling``: the rest of the payment, given
    back before the order is cancelled (:func:`cancel_paid`)."""

    amount: int
    reason: str
    restock: dict[int, int] = field(default_factory=dict)  # order line id -> pieces
    notify: bool = True
    request_key: str = ""
    for_cancelling: bool = False
    # How many refunds the order had on the page the form came from (None: not known).
    refunds_seen: int | None = None


def restockable(order: Order) -> dict[int, int]:
    """Per order line (stocked pieces only): how many pieces may still go back on sale.

    A refund's pieces count as back once Stripe accepted it (they went back then), or while
    it is still being asked: only a refund Stripe refused put nothing back. One that failed
    after Stripe had accepted it (``refund.failed``) put its pieces back all the same."""
    done: Counter[int] = Counter()
    for refund in order.refunds:
        if refund.status is not RefundStatus.FAILED or refund.stripe_refund_id is not None:
            for entry in refund.restock:
                done[int(entry["line_id"])] += int(entry["quantity"])
    return {
        line.id: line.quantity - done[line.id]
        for line in order.lines
        if line.inventory_id is not None and not line.made_to_order
    }


def pieces_to_send(order: Order) -> dict[int, int]:
    """Per order line, how many pieces go in the parcel: those a refund put back on sale
    before it was packed stay here (they may be sold again)."""
    back_on_sale = restockable(order)
    return {line.id: back_on_sale.get(line.id, line.quantity) for line in order.lines}


def _check_request(order: Order, request: RefundRequest) -> None:
    errors: dict[str, str] = {}
    left = refundable_amount(order)
    if request.amount < 1:
        errors["amount"] = "Enter an amount to refund."
    elif request.amount > left:
        errors["amount"] = f"At most {format_money(left, order.currency)} can be refunded."
    allowed = restockable(order)
    for line_id, quantity in request.restock.items():
        if quantity < 0 or quantity > allowed.get(line_id, 0):
            errors[f"restock-{line_id}"] = (
                f"At most {allowed.get(line_id, 0)} of these can go back on sale."
            )
    if errors:
        raise InvalidActionError(errors)


def begin_refund(
    session: AnySession, order_id: int, staff: Staff, request: RefundRequest
) -> Refund | None:
    """Step 1: record the refund (PENDING) under the order's lock. The caller commits, then
    calls :func:`ask_stripe`. The same ``request_key`` again returns the refund already made
    for it, whatever became of it.

    Cancelling's refund gives back the rest of the payment as it is under the lock (a refund
    that landed since the cancel was sent leaves less; None when it left nothing), and its
    reason is the cancel's, as staff typed it, kept as "Order cancelled: …"."""
    reason = _reason(request.reason, required=False)
    order = _locked(session, order_id)
    template = CANCEL_REFUND_KEY if request.for_cancelling else REFUND_KEY
    key = template.format(number=order.number, request_key=request.request_key)
    existing = session.scalar(select(Refund).where(Refund.idempotency_key == key))
    if existing is not None:
        return existing
    refuse_unless(order, Action.CANCEL if request.for_cancelling else Action.REFUND)
    if not order.stripe_payment_intent_id:
        raise ActionRefusedError(f"Order {order.number} has no Stripe payment to refund.")
    _refunds_now(session, order)
    # Read again: the same form, sent from another tab, may have written it meanwhile.
    if same := next((r for r in order.refunds if r.idempotency_key == key), None):
        return same
    if request.refunds_seen is not None and len(order.refunds) != request.refunds_seen:
        # Two tabs, or two of the staff, each sending a refund the customer asked for once.
        raise RefundsChangedError(
            {
                "": f"Another refund was made on order {order.number} since this page was "
                "drawn, so this one was not sent: open the order again to see it, then refund "
                "again if more is owed."
            },
            refunds=len(order.refunds),
        )
    if request.for_cancelling:
        request = replace(request, amount=refund_before_cancelling(order))
        if request.amount < 1:
            return None
        reason = f"Order cancelled: {reason}"
    _check_request(order, request)
    lines = {line.id: line for line in order.lines}
    restock = [
        {"line_id": line_id, "inventory_id": lines[line_id].inventory_id, "quantity": quantity}
        for line_id, quantity in sorted(request.restock.items())
        if quantity > 0
    ]
    return _record_refund(
        session,
        order,
        staff,
        key=key,
        amount=request.amount,
        currency=order.currency,
        reason=reason,
        restock=restock,
        notify=request.notify and not request.for_cancelling,
    )


def _record_refund(
    session: AnySession,
    order: Order,
    staff: Staff,
    *,
    key: str,
    amount: int,
    currency: str,
    reason: str,
    restock: list[dict[str, int | None]],
    notify: bool = False,
) -> Refund:
    """The PENDING refund under ``key``, written once (a racing request finds it written)."""
    refund_id = insert_unless_exists(
        session,
        Refund,
        {
            "order_id": order.id,
            "amount": amount,
            "currency": currency,
            "reason": reason,
            "status": RefundStatus.PENDING,
            "idempotency_key": key,
            "failure_reason": "",
            "restock": restock,
            "notify": notify,
            "actor_user_id": staff.user_id,
            "created_at": utcnow(),
            "updated_at": utcnow(),
        },
        Refund.idempotency_key,
    )
    refund = session.scalar(select(Refund).where(Refund.idempotency_key == key))
    assert refund is not None
    if refund_id is not None:
        checkout.flag(order, REFUND_AWAITED_FLAG, actor=staff.name, on_timeline=False)
        orders.add_note(
            order,
            f"Refund of {format_money(amount, currency)} asked of Stripe"
            + (f": {reason}" if reason else ""),
            actor=staff.name,
            actor_user_id=staff.user_id,
        )
    session.flush()
    return refund


def refund_to_retry(session: AnySession, order_id: int, refund_id: int) -> Refund:
    """Step 1 of retrying a refund Stripe never answered: the same refund, to be asked again
    with its own idempotency key (so it can never refund twice), whatever the order's status
    now. The caller commits, then calls :func:`ask_stripe` and :func:`finish_refund`."""
    order = _locked(session, order_id)
    refund = session.get(Refund, refund_id, populate_existing=True)
    if refund is None or refund.order_id != order.id:
        raise ActionRefusedError(f"Order {order.number} has no such refund.")
    if refund.status is not RefundStatus.PENDING:
        amount = format_money(refund.amount, refund.currency)
        raise ActionRefusedError(f"The refund of {amount} is already {refund.status.value}.")
    return refund


@dataclass(frozen=True)
class StripeAnswer:
    refund_id: str | None = None
    accepted: bool = False
    refused: str = ""  # Stripe's reason when it refused
    unreachable: bool = False
    # What Stripe listed as given back outside the shop (its dashboard), when it was asked:
    # each refund's id and amount.
    given_elsewhere: tuple[tuple[str, int], ...] = ()


def ask_stripe(refund: Refund, order: Order) -> StripeAnswer:
    """Step 2: ask Stripe (no database work; hold no lock). Same key, same answer.

    The payment's refunds at Stripe are looked through first (for the key in their metadata)
    when Stripe may have forgotten the key (the refund was first asked longer ago than
    ``STRIPE_KEY_MEMORY``), or when Stripe has reported more refunded than the shop's
    accepted refunds explain: that report may have been this refund, or one made in Stripe's
    dashboard instead of it. So a retry can never refund twice: a refund found under its key
    is that answer; one made outside the shop since this one was asked, while Stripe never
    had this one, refuses it, for staff to check and refund again if more is owed. The
    answer also says what the list shows given back outside the shop."""
    if refund.status is not RefundStatus.PENDING:
        return StripeAnswer(refund.stripe_refund_id, refund.status is RefundStatus.SUCCEEDED)
    payment_intent = order.stripe_payment_intent_id or ""
    accepted = sum(r.amount for r in order.refunds if r.status is RefundStatus.SUCCEEDED)
    unexplained = order.refunded_amount > accepted
    elsewhere: tuple[tuple[str, int], ...] = ()
    try:
        answer = None
        if unexplained or utcnow() - refund.created_at > STRIPE_KEY_MEMORY:
            made = stripe_gateway.refunds_of(payment_intent)
            elsewhere = tuple(
                (each.refund_id, each.amount)
                for each in made
                if each.key is None and each.status not in ("failed", "canceled")
            )
            answer = next(
                (
                    stripe_gateway.RefundAnswer(each.refund_id, each.status)
                    for each in made
                    if each.key == refund.idempotency_key
                ),
                None,
            )
            asked = int(refund.created_at.timestamp())  # Stripe's times are to the second
            outside = [
                each
                for each in made
                if each.key is None
                and each.created > asked
                and each.status not in ("failed", "canceled")
            ]
            if answer is None and unexplained and outside:
                money = format_money(sum(each.amount for each in outside), order.currency)
                return StripeAnswer(
                    refused=f"{money} was refunded in Stripe's dashboard after this refund was "
                    "asked, and Stripe never had this one. If that was this refund, nothing "
                    "more is owed; if not, refund again",
                    given_elsewhere=elsewhere,
                )
        answer = answer or stripe_gateway.create_refund(
            payment_intent=payment_intent,
            amount=refund.amount,
            idempotency_key=refund.idempotency_key,
            order_number=order.number,
        )
    except stripe_gateway.RefundRefusedError as error:
        return StripeAnswer(refused=str(error) or "Stripe refused the refund.")
    except stripe_gateway.PaymentProviderError as error:
        current_app.logger.warning("Refund %s: Stripe unreachable: %s", refund.id, error)
        return StripeAnswer(unreachable=True)
    if answer.status in ("failed", "canceled"):
        return StripeAnswer(answer.refund_id, refused=f"Stripe says the refund {answer.status}.")
    return StripeAnswer(answer.refund_id, accepted=True, given_elsewhere=elsewhere)


def finish_refund(
    session: AnySession,
    refund_id: int,
    staff: Staff,
    answer: StripeAnswer,
    *,
    for_cancelling: bool = False,
) -> Refund:
    """Step 3: apply Stripe's answer under the order's lock. An accepted refund counts
    towards ``refunded_amount`` (never twice, whatever the webhook did meanwhile), puts the
    chosen pieces back on sale once, and makes the order REFUNDED when nothing is left and no
    other refund is still PENDING (unless the refund is the first half of cancelling it, by
    its key or ``for_cancelling``: a cancellation follows)."""
    refund = session.get(Refund, refund_id)
    assert refund is not None
    order = _locked(session, refund.order_id)
    session.refresh(refund)
    if refund.status is not RefundStatus.PENDING or answer.unreachable:
        return refund
    for_cancelling = for_cancelling or not is_plain_refund(refund)
    if not answer.accepted:
        refund.status, refund.failure_reason = RefundStatus.FAILED, answer.refused
        session.flush()
        _answered(session, order, staff)
        if not for_cancelling and answer.refund_id is None:
            _refunded_elsewhere_meanwhile(session, order, answer)
        # Refused because everything was given back meanwhile (the dashboard's refund): then
        # there is nothing to look into, and no warning is left on the order for it.
        if for_cancelling or order.refunded_amount < order.total:
            checkout.flag(
                order,
                f"{REFUND_REFUSED} {format_money(refund.amount, order.currency)}: {answer.refused}",
                actor=staff.name,
            )
            session.flush()
        return refund
    refund.status, refund.stripe_refund_id = RefundStatus.SUCCEEDED, answer.refund_id
    session.flush()
    _answered(session, order, staff)
    refunded = sum(
        r.amount
        for r in order.refunds
        if r.status is RefundStatus.SUCCEEDED and r.currency == order.currency
    )
    # With what Stripe listed as given back in its dashboard: a part refunded there, the rest
    # here, is the whole given back now, not when Stripe next reports it. Less any of those
    # that failed since (the list was read before this lock was taken).
    failed = {r.stripe_refund_id for r in order.refunds if r.status is RefundStatus.FAILED}
    elsewhere = sum(amount for made, amount in answer.given_elsewhere if made not in failed)
    order.refunded_amount = max(order.refunded_amount, min(refunded + elsewhere, order.total))
    payments.put_refunds_pieces_back(session, order, refund, actor_id=staff.user_id)
    amount = format_money(refund.amount, order.currency)
    full = order.refunded_amount >= order.total and not pending_refunds(order)
    unaccepted = refund.idempotency_key.startswith(UNACCEPTED_REFUND_KEY.split("{", 1)[0])
    if order.refunded_amount >= order.total and not unaccepted:
        # A refund that failed before is given back by this one: nothing is held any more.
        # (Giving back money held takes its own warnings off, once its refund is through.)
        payments.nothing_held_any_more(
            order,
            actor=staff.name,
            note="Refunded in full since: the failed refund's warning is cleared",
        )
    note = f"Refunded {amount}" + _because(refund.reason)
    if for_cancelling and order.status in REFUNDABLE:
        checkout.flag(order, CANCEL_TO_FINISH_FLAG, actor=staff.name, on_timeline=False)
    if full and not for_cancelling and orders.can_transition(order.status, S.REFUNDED):
        _move(order, S.REFUNDED, staff, note)
        _deposit_given_back(session, order, staff, "refunded in full" + _because(refund.reason))
    else:
        orders.add_note(order, note, actor=staff.name, actor_user_id=staff.user_id)
        if order.bespoke_quote_id is not None and not for_cancelling:
            quotes.part_of_deposit_given_back(
                session,
                order,
                actor=staff.name,
                actor_user_id=staff.user_id,
                note=f"{amount} of the deposit given back (order {order.number})"
                + _because(refund.reason),
            )
    session.flush()
    return refund


def _refunded_elsewhere_meanwhile(session: AnySession, order: Order, answer: StripeAnswer) -> None:
    """After a refund Stripe refused and never had (not one of the shop's that failed there):
    Stripe's report of what was given back came while it waited (a refund made in Stripe's
    dashboard at the same time, which is why it was refused), and was taken for it. Nothing
    of the shop's is left to explain it: the order counts what Stripe listed, and the whole
    payment given back refunds the order in full at Stripe, as the report would have. (The
    shopper hears of each refund made there from its own event.)"""
    if payments.refund_unfinished(order):
        return
    given_here = sum(r.amount for r in order.refunds if r.status is RefundStatus.SUCCEEDED)
    failed = {r.stripe_refund_id for r in order.refunds if r.status is RefundStatus.FAILED}
    listed = sum(amount for made, amount in answer.given_elsewhere if made not in failed)
    order.refunded_amount = max(order.refunded_amount, min(given_here + listed, order.total))
    if order.refunded_amount >= order.total and order.refunded_amount > given_here:
        payments.refunded_in_full_at_stripe(session, order)


def _answered(session: AnySession, order: Order, staff: Staff) -> None:
    """A refund has Stripe's answer: the order's refunds read again, and the flag that a
    refund awaits one off once none does."""
    _refunds_now(session, order)
    if not pending_refunds(order):
        checkout.clear_flag(order, REFUND_AWAITED_FLAG, actor=staff.name, on_timeline=False)


def notify_refund(session: AnySession, refund: Refund) -> None:
    """The refund email, once per refund (the caller decides whether the shopper is told).
    None once the order's cancellation was emailed: that told every refund of the order, one
    still waiting for Stripe's answer (this, retried after the cancel) among them."""
    order = refund.order
    cancellation_told = select(OutboxEmail.id).where(
        OutboxEmail.order_id == order.id, OutboxEmail.template == "order_cancelled"
    )
    if order.status is S.CANCELLED and session.scalar(cancellation_told.limit(1)):
        return
    orders.email_refund(
        session,
        order,
        refund.amount,
        full=order.refunded_amount >= order.total,
        dedupe_key=f"order:{order.id}:refund:{refund.id}",
    )


def cancel_unpaid(
    session: AnySession,
    order_id: int,
    staff: Staff,
    *,
    reason: str,
    notify: bool,
) -> Order:
    """Cancel an order that was never paid (its checkout still open, a bank payment still on
    its way, or failed): its reserved pieces go back on sale.

    An open payment page is closed at Stripe first, so call it holding no lock; if Stripe
    then says the customer has paid, nothing is cancelled (the payment event will follow).
    The page closed is the one read before the lock: if the shopper's checkout has since given
    the order another (or a first) page, nothing is cancelled either.
    """
    note = _reason(reason, required=True)
    checkout_session_id = session.scalar(
        select(Order.stripe_checkout_session_id).where(
            Order.id == order_id, Order.status == S.PENDING
        )
    )
    page = checkout.close_payment_page(checkout_session_id) if checkout_session_id else None
    order = _locked(session, order_id)
    if (
        order.status is S.CANCELLED
        and page is not None
        and page.state is checkout.PageState.EXPIRED
        and order.stripe_checkout_session_id == checkout_session_id
    ):
        # Closing the page made Stripe announce its expiry, and that event cancelled the
        # order (stock released, bag thawed) before this took the lock: what staff asked for
        # is done; their reason goes on the timeline.
        orders.add_note(order, f"Cancelled: {note}", actor=staff.name, actor_user_id=staff.user_id)
        session.flush()
        return order
    refuse_unless(order, Action.CANCEL)
    if order.status not in UNPAID:
        raise ActionRefusedError(f"Order {order.number} is paid: cancelling it refunds it.")
    if order.status is S.PENDING and order.stripe_checkout_session_id != checkout_session_id:
        raise ActionRefusedError(
            f"The customer of order {order.number} has just opened the payment page: nothing "
            "was cancelled. Cancel again to close that page too."
        )
    paid = page is not None and page.state in (
        checkout.PageState.PAID,
        checkout.PageState.AWAITING_BANK,
    )
    if paid and order.status is S.PENDING:
        raise ActionRefusedError(
            f"Stripe says the customer of order {order.number} has just paid: wait for the "
            "payment to arrive here, then cancel it with a refund."
        )
    if page is not None and page.state is checkout.PageState.UNREACHABLE:
        # Its payment page may still be open: a payment after the cancel would find its
        # pieces back on sale, perhaps sold again.
        raise StripeUnreachableError(
            f"Stripe could not be reached to close the payment page of order {order.number}, "
            "where the customer could still pay: nothing was cancelled. Try again in a moment."
        )
    if page is not None and page.state is checkout.PageState.OPEN:
        # Stripe answered, but did not close it (an error of its own), and says it is open.
        raise StripeUnreachableError(
            f"Stripe did not close the payment page of order {order.number}, where the "
            "customer could still pay: nothing was cancelled. Try again in a moment."
        )
    back_in_bag = checkout.holds_its_cart(order)
    was_on_its_way = order.status is S.PROCESSING
    checkout.close_unpaid(
        session,
        order,
        S.CANCELLED,
        actor=staff.name,
        note=f"Cancelled: {note}",
        actor_user_id=staff.user_id,
    )
    if was_on_its_way and order.bespoke_quote_id is not None:
        # A deposit on its way held the commission's: one paid meanwhile was flagged as the
        # second, and is its only one now, as when the bank's payment fails.
        quotes.deposit_never_came(session, order, actor=staff.name)
    if notify:
        orders.email_cancelled(session, order, back_in_bag=back_in_bag)
    session.flush()
    return order


def _because(reason: str | None) -> str:
    return f": {reason}" if reason else ""


def _deposit_given_back(session: AnySession, order: Order, staff: Staff, what: str) -> None:
    """A deposit order's money went back: its commission hears of it (``quotes``)."""
    if order.bespoke_quote_id is not None:
        quotes.deposit_given_back(
            session,
            order,
            actor=staff.name,
            actor_user_id=staff.user_id,
            note=f"Deposit order {order.number} {what}",
        )


def _kept_after_dispute(amount: int, currency: str) -> str:
    return (
        f"{format_money(amount, currency)} of it is still with the shop: Stripe refuses "
        "refunds of a payment once a dispute of it is lost, so give it back to the shopper "
        "another way"
    )


def _clear_dispute_flags(order: Order, staff: Staff, note: str) -> None:
    for flagged in orders.flagged_for(order):
        if flagged.startswith(payments.DISPUTE_FLAG):
            checkout.clear_flag(order, flagged, actor=staff.name, note=note)


def what_cancel_does(order: Order) -> str:
    """What Cancel does to the order now, in a word its form carries: refund a payment the
    shop did not accept, refund the rest of a payment, or put reserved pieces back on sale.
    A cancel drawn as one is refused as another (the page said it gives back no money, and
    the shopper has paid since)."""
    if payment_not_accepted(order):
        return "refund-not-accepted"
    if order.status in UNPAID:
        return "release"
    return "refund-rest"


def cancel_changed_since(order: Order, seen: str) -> str | None:
    """Why a cancel whose page said ``seen`` (:func:`what_cancel_does`; empty for a form that
    doesn't say) must be read again before it is sent: what cancelling does has changed."""
    now = what_cancel_does(order)
    if not seen or seen == now:
        return None
    if now == "release":
        doing = "it would now put its reserved pieces back on sale, refunding nothing"
    elif now == "refund-rest":
        doing = "it has been paid since, and cancelling it now refunds the payment"
    else:
        doing = "a payment the shop did not accept has come since, and cancelling refunds it"
    return (
        f"Nothing was cancelled: order {order.number} changed since this page was drawn, and "
        f"{doing}. Open the order again, then cancel it if you still mean to."
    )


def refund_before_cancelling(order: Order) -> int:
    """What Cancel gives back through Stripe before cancelling a paid order: the rest of its
    payment, unless a dispute of it was lost (Stripe then refuses any refund)."""
    if not order.stripe_payment_intent_id or dispute_lost(order):
        return 0
    return refundable_amount(order)


def cancel_paid(
    session: AnySession, order_id: int, staff: Staff, *, reason: str, notify: bool
) -> Order:
    """After the rest of the payment has been refunded: CANCELLED, and every piece the order
    took from stock (less any a refund already put back) back on sale, exactly once. Never
    while a refund is PENDING: Stripe may not have given that money back. Once a dispute of
    the payment was lost, Stripe refuses any refund: what is left is not asked for, and the
    timeline says the shop still holds it."""
    note = _reason(reason, required=True)
    order = _locked(session, order_id)
    refuse_unless(order, Action.CANCEL)
    _refunds_now(session, order)
    _refuse_while_pending(order, "cancelled")
    if refund_before_cancelling(order) > 0:
        raise ActionRefusedError(f"Order {order.number} still has money to refund first.")
    if dispute_lost(order):
        if left := refundable_amount(order):
            kept = _kept_after_dispute(left, order.currency)
            note = f"{note}. Its payment was not all given back: {kept}"
        _clear_dispute_flags(
            order, staff, "The order is cancelled: the dispute's warning is cleared"
        )
    _move(order, S.CANCELLED, staff, f"Cancelled: {note}")
    checkout.clear_flag(order, CANCEL_TO_FINISH_FLAG, actor=staff.name, on_timeline=False)
    _deposit_given_back(session, order, staff, f"cancelled and refunded: {note}")
    for line_id, quantity in restockable(order).items():
        line = next(line for line in order.lines if line.id == line_id)
        if quantity > 0 and line.inventory_id is not None:
            inventory.restock(
                session,
                line.inventory_id,
                quantity,
                key=f"order:{order.id}:cancel-restock:{line_id}",
                note=f"Order {order.number} cancelled",
                actor_id=staff.user_id,
                reason=StockReason.ORDER_CANCELLED,
                order_id=order.id,
            )
    if notify:
        orders.email_cancelled(session, order, back_in_bag=False)
    session.flush()
    return order


@dataclass(frozen=True)
class UnacceptedPayment:
    """Money Stripe took on an order's own payment page that the shop can't keep (the webhook
    refused its amount, or the order had ended): what to give back, as Stripe reports it."""

    checkout_session_id: str
    payment_intent: str
    amount: int
    currency: str
    # What Stripe lists as given back already by other means (its dashboard, say).
    refunded_elsewhere: int = 0
    # What the cardholder's bank took back in disputes the shop lost.
    taken_back: int = 0
    # False once a dispute of the payment is lost: Stripe then refuses any refund of it.
    refundable: bool = True
    # What the shop's own refunds gave back of it before the order ended (an order refunded
    # in part, then in full by a refund that failed at Stripe).
    refunded_before: int = 0

    @property
    def left(self) -> int:
        given = self.refunded_elsewhere + self.taken_back + self.refunded_before
        return max(self.amount - given, 0)

    @property
    def to_refund(self) -> int:
        """What the shop gives back through Stripe before cancelling."""
        return self.left if self.refundable else 0


def payment_not_accepted(order: Order) -> bool:
    """Whether the order waits, unpaid, because the webhook refused its payment (the amount
    or currency did not match): still PENDING (a card), or PROCESSING (a bank payment whose
    money then came in the wrong amount). The sweeper leaves it to staff, who refund what
    Stripe took and cancel; a plain cancel would keep the money."""
    if order.status not in (S.PENDING, S.PROCESSING):
        return False
    reasons = orders.flagged_for(order)
    return any(reason.endswith(payments.AMOUNT_MISMATCH_FLAG) for reason in reasons)


def held_after_it_ended(order: Order) -> bool:
    """Whether the shop holds money of an order that has ended, and nobody has dealt with it
    yet (its flag is still on): a payment that came after the order had ended unpaid
    (cancelled, or its bank payment failed; in any amount), or a refund that failed at
    Stripe after the order was refunded or cancelled with it. Staff give it back
    (:func:`give_back_held_money`), or settle the flag by hand if the shopper is to have
    the piece after all."""
    if order.status not in ENDED:
        return False
    return any(
        reason.startswith(HELD_AFTER_IT_ENDED) or reason.endswith(payments.AMOUNT_MISMATCH_FLAG)
        for reason in orders.flagged_for(order)
    )


def payment_to_give_back(order: Order) -> bool:
    """Whether Stripe holds money for the order that the shop can't keep as its payment: one
    it refused (:func:`payment_not_accepted`), or one it still holds after the order ended
    (:func:`held_after_it_ended`)."""
    return payment_not_accepted(order) or held_after_it_ended(order)


def _refuse_unless_not_accepted(order: Order) -> None:
    if not payment_not_accepted(order):
        label = orders.STATUS_LABELS[order.status].lower()
        raise ActionRefusedError(
            f"Order {order.number} has no payment that the shop refused: it is {label}."
        )


def _refuse_unless_to_give_back(order: Order) -> None:
    if not payment_to_give_back(order):
        label = orders.STATUS_LABELS[order.status].lower()
        raise ActionRefusedError(
            f"Order {order.number} has no payment to give back: it is {label}."
        )


def unaccepted_payment(session: AnySession, order_id: int) -> UnacceptedPayment:
    """Step 0 of giving back a payment the shop can't keep (:func:`payment_to_give_back`):
    ask Stripe what the order's payment page took, and what of it was given back already by
    a refund made elsewhere or by a dispute lost (no lock held). Refused unless Stripe says
    the page was paid, and while a dispute of the payment is open: Stripe refuses any refund
    of it until the dispute closes."""
    order = session.get(Order, order_id, populate_existing=True)
    if order is None:
        raise ActionRefusedError("This order no longer exists.")
    _refuse_unless_to_give_back(order)
    checkout_session_id = order.stripe_checkout_session_id
    if not checkout_session_id:
        raise ActionRefusedError(f"Order {order.number} has no payment page at Stripe.")
    page = _looked_up(
        order, "payment", lambda: stripe_gateway.retrieve_checkout_session(checkout_session_id)
    )
    intent = page.payment_intent
    intent_id = intent if isinstance(intent, str) else getattr(intent, "id", None)
    if page.status != "complete" or page.payment_status != "paid" or not intent_id:
        raise ActionRefusedError(
            f"Stripe does not say that order {order.number} was paid: nothing was refunded."
        )
    ours = _unaccepted_key(order.number, intent_id)
    refunds = _looked_up(order, "refunds", lambda: stripe_gateway.refunds_of(intent_id))
    disputes = _looked_up(order, "disputes", lambda: stripe_gateway.disputes_of(intent_id))
    if any(dispute.open and not dispute.charge_refundable for dispute in disputes):
        raise ActionRefusedError(
            f"The cardholder disputes the payment of order {order.number}, and Stripe refuses "
            "any refund of it until the dispute closes: nothing was done. Cancel it once "
            "Stripe has decided the dispute."
        )
    return UnacceptedPayment(
        checkout_session_id=checkout_session_id,
        payment_intent=intent_id,
        amount=int(page.amount_total or 0),
        currency=str(page.currency or "").upper(),
        refunded_elsewhere=sum(
            refund.amount for refund in refunds if refund.status == "succeeded" and not refund.key
        ),
        taken_back=sum(dispute.amount for dispute in disputes if dispute.lost),
        refundable=all(dispute.charge_refundable for dispute in disputes),
        refunded_before=sum(
            refund.amount
            for refund in refunds
            if refund.status == "succeeded" and refund.key and not refund.key.startswith(ours)
        ),
    )


def _looked_up(order: Order, what: str, ask: Callable[[], T]) -> T:
    """Stripe's answer to ``ask``; :class:`StripeUnreachableError` when it can't be reached."""
    try:
        return ask()
    except stripe_gateway.PaymentProviderError as error:
        current_app.logger.warning("Order %s: Stripe unreachable: %s", order.number, error)
        raise StripeUnreachableError(
            f"Stripe could not be reached to look at the {what} of order {order.number}: "
            "nothing was done. Try again in a moment."
        ) from error


def _unaccepted_key(number: str, payment_intent: str) -> str:
    return UNACCEPTED_REFUND_KEY.format(number=number, payment_intent=payment_intent)


def _unaccepted_refunds(order: Order, payment_intent: str) -> list[Refund]:
    """The shop's refunds of the payment it refused: the first under the payment's key, any
    asked again after Stripe refused one under that key and a number."""
    ours = _unaccepted_key(order.number, payment_intent)
    return sorted(
        (r for r in order.refunds if r.idempotency_key.startswith(ours)), key=lambda r: r.id
    )


def begin_unaccepted_refund(
    session: AnySession,
    order_id: int,
    staff: Staff,
    payment: UnacceptedPayment,
    *,
    reason: str,
    ended: bool = False,
    notify: bool = False,
) -> Refund | None:
    """Step 1: record the refund of what is left of the payment (PENDING) under the order's
    lock; its key is the payment's, so any form, tab or retry asks Stripe for it once. One that
    Stripe refused moved no money, so the next cancel asks again under a new key; so does one
    for what is held again after an earlier give-back (a second refund failed), less what
    that gave. None when
    Stripe lists the whole payment given back already (in its dashboard, say, or by the
    cardholder's bank), or refuses any refund of it (a dispute of it lost). The caller
    commits, then calls :func:`ask_stripe` and :func:`finish_refund`, then
    :func:`cancel_not_accepted` (or, ``ended``, :func:`give_back_held_money`, which tells the
    shopper of it if ``notify``)."""
    note = _reason(reason, required=True)
    order = _locked(session, order_id)
    _refunds_now(session, order)
    asked = _unaccepted_refunds(order, payment.payment_intent)
    if pending := [r for r in asked if r.status is RefundStatus.PENDING]:
        return pending[0]
    given = [r for r in asked if r.status is RefundStatus.SUCCEEDED]
    if given and sum(r.amount for r in given) >= payment.to_refund:
        return given[-1]  # all of it given back already, by this form or another
    _refuse_unless_to_give_back(order)
    if ended and not held_after_it_ended(order):
        raise ActionRefusedError(nothing_held(order))
    why = "Held after the order had ended" if ended else "Payment not accepted"
    if order.stripe_checkout_session_id != payment.checkout_session_id or (
        order.stripe_payment_intent_id not in (None, payment.payment_intent)
    ):
        raise ActionRefusedError(
            f"Order {order.number}'s payment changed while Stripe was asked: try again."
        )
    if payment.amount < 1:
        raise ActionRefusedError(f"Stripe reports no money taken for order {order.number}.")
    order.stripe_payment_intent_id = payment.payment_intent
    # Less what an earlier give-back refunded of it (one of two failed refunds, say).
    to_ask = payment.to_refund - sum(r.amount for r in given)
    if to_ask < 1:
        return None
    key = _unaccepted_key(order.number, payment.payment_intent)
    return _record_refund(
        session,
        order,
        staff,
        key=f"{key}:{len(asked) + 1}" if asked else key,
        amount=to_ask,
        currency=payment.currency,
        reason=f"{why}: {note}",
        restock=[],
        # Giving back money held, the shopper may be told of it once it is through.
        notify=notify and ended,
    )


def cancel_not_accepted(
    session: AnySession,
    order_id: int,
    staff: Staff,
    payment: UnacceptedPayment,
    *,
    reason: str,
    notify: bool,
) -> Order:
    """After its payment has been given back: cancel the order whose payment was not accepted
    (its reserved pieces go back on sale and the shopper's bag is thawed)."""
    note = _reason(reason, required=True)
    order = _locked(session, order_id)
    _refuse_unless_not_accepted(order)
    _refunds_now(session, order)
    note, given_back = _given_back(order, payment, note, "cancelled")
    amount = format_money(payment.amount, payment.currency)
    back_in_bag = checkout.holds_its_cart(order)
    checkout.close_unpaid(
        session,
        order,
        S.CANCELLED,
        actor=staff.name,
        note=f"Cancelled, its payment of {amount} {given_back}: {note}",
        actor_user_id=staff.user_id,
    )
    _deposit_given_back(
        session, order, staff, f"cancelled, the payment the shop refused ({amount}) refunded"
    )
    _clear_payment_flags(
        order, staff, "The payment the shop refused was refunded: the warning is cleared"
    )
    if notify:
        orders.email_cancelled(session, order, back_in_bag=back_in_bag)
    session.flush()
    return order


def give_back_held_money(
    session: AnySession,
    order_id: int,
    staff: Staff,
    payment: UnacceptedPayment,
    *,
    reason: str,
) -> str:
    """After it has been refunded: settle the money the shop held after the order had ended
    (:func:`held_after_it_ended`). The order stays as it ended (its pieces went back on sale
    then); its timeline says what became of the money, its flags come off, and the shopper is
    emailed each refund made for it that was to be told (``Refund.notify``, as the form that
    asked for it said), once. What to tell staff."""
    note = _reason(reason, required=True)
    order = _locked(session, order_id)
    if not held_after_it_ended(order):
        raise ActionRefusedError(nothing_held(order))
    _refunds_now(session, order)
    note, given_back = _given_back(order, payment, note, "settled")
    made = [
        r
        for r in _unaccepted_refunds(order, payment.payment_intent)
        if r.status is RefundStatus.SUCCEEDED
    ]
    if payment.left < 1:
        note = f"Nothing was held after all: Stripe lists the whole payment given back. {note}"
        told = f"Order {order.number} held nothing: Stripe lists its payment given back."
    else:
        note = f"The money held after the order had ended is {given_back}: {note}"
        told = f"The money held on order {order.number} is {given_back}."
    orders.add_note(order, note, actor=staff.name, actor_user_id=staff.user_id)
    _deposit_given_back(session, order, staff, "gave back the money it held after it ended")
    _clear_payment_flags(
        order, staff, "The money held was given back: the warning is cleared", *HELD_AFTER_IT_ENDED
    )
    for given in made:
        if given.notify:
            orders.email_refund(
                session,
                order,
                given.amount,
                full=True,
                dedupe_key=f"order:{order.id}:held-money-refund:{given.id}",
            )
    session.flush()
    return told


def nothing_held(order: Order) -> str:
    """Why there is nothing to give back (:func:`held_after_it_ended`)."""
    label = orders.STATUS_LABELS[order.status].lower()
    return f"Order {order.number} holds no money to give back: it is {label}."


def _given_back(order: Order, payment: UnacceptedPayment, note: str, doing: str) -> tuple[str, str]:
    """Once what Stripe could refund of ``payment`` is refunded here (refused otherwise, and
    while a refund awaits Stripe's answer): the note for the timeline, saying what was given
    back elsewhere or taken back by a dispute, and what became of the payment ("refunded",
    "not all given back")."""
    _refuse_while_pending(order, doing)
    refunded = sum(
        r.amount
        for r in _unaccepted_refunds(order, payment.payment_intent)
        if r.status is RefundStatus.SUCCEEDED
    )
    if refunded < payment.to_refund:
        raise ActionRefusedError(f"Order {order.number}'s payment must be refunded first.")
    if payment.refunded_elsewhere:
        elsewhere = format_money(payment.refunded_elsewhere, payment.currency)
        note = f"{note} ({elsewhere} of it refunded at Stripe, not through the shop)"
    if payment.taken_back:
        taken_back = format_money(payment.taken_back, payment.currency)
        note = f"{note} ({taken_back} of it taken back by the cardholder's bank: a dispute lost)"
    given_back = "refunded"
    if payment.left > payment.to_refund:
        given_back = "not all given back"
        kept = _kept_after_dispute(payment.left - payment.to_refund, payment.currency)
        note = f"{note}. {kept}"
    return note, given_back


def _clear_payment_flags(order: Order, staff: Staff, note: str, *also: str) -> None:
    """The payment's warnings off once it is given back: a wrong amount, a refund Stripe
    refused, a dispute, and ``also`` (flags beginning so)."""
    for flagged in orders.flagged_for(order):
        if flagged.endswith(payments.AMOUNT_MISMATCH_FLAG) or flagged.startswith(
            (REFUND_REFUSED, payments.DISPUTE_FLAG, *also)
        ):
            checkout.clear_flag(order, flagged, actor=staff.name, note=note)
