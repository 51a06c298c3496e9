"""What Stripe tells us about payments, applied to orders exactly once.

Each event is recorded in ``processed_payment_events`` in the same transaction as its
effect, so a replay is acknowledged and ignored. Every status change goes through the
order state machine, so events arriving late or out of order can never move an order
backwards; what cannot be applied is written on the order's timeline (and flagged for staff
when money is involved).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from flask import current_app
from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import selectinload

from elysium.models.inventory import StockReason
from elysium.models.orders import Order, OrderStatus, ProcessedPaymentEvent, Refund, RefundStatus
from elysium.models.types import utcnow
from elysium.money import format_money
from elysium.services import checkout, inventory, orders, quotes
from elysium.services.outbox import queue_email
from elysium.services.sql import AnySession, insert_unless_exists, storable
from elysium.urls import absolute_url

ACTOR = "stripe"
# The longest event type and Stripe id the shop keeps (``ProcessedPaymentEvent``'s columns).
EVENT_TYPE_MAX_LENGTH = ProcessedPaymentEvent.__table__.c.event_type.type.length
STRIPE_ID_MAX_LENGTH = ProcessedPaymentEvent.__table__.c.event_id.type.length
PAID_NOTE = "Payment received"
AWAITING_BANK_NOTE = "Checkout completed; waiting for the bank payment"
# Words the back office reads back from ``Order.attention_reason`` to show a flag (see
# services/staff_orders.py): a dispute starts with the first, an amount that doesn't match
# ends with the second, a payment for a cancelled order is the third.
DISPUTE_FLAG = "The payment is disputed"
# A lost dispute keeps the dispute's badge: the reason starts with the flag's words.
DISPUTE_LOST_FLAG = f"{DISPUTE_FLAG} and the dispute was lost"
AMOUNT_MISMATCH_FLAG = "not marked paid"
REFUND_FAILED_FLAG = "A refund failed after Stripe had accepted it"
# Worn, without a line on the timeline, from the refund that begins a cancel to the cancel:
# the two are committed one after the other, and a worker that stops between them leaves an
# order paid for and refunded that nobody would look at again.
CANCEL_TO_FINISH_FLAG = "Refunded to be cancelled, but not cancelled: cancel it again to finish"
# Worn, without a line on the timeline, from a refund's record (PENDING) to Stripe's answer:
# a worker stopped while Stripe was asked (or Stripe unreachable, the tab closed) left a
# refund that only its Retry finishes, on an order nothing else brought anyone back to.
REFUND_AWAITED_FLAG = (
    "A refund was asked of Stripe and its answer never came: retry it (it never refunds twice)"
)
FAILED_AT_STRIPE = "Failed at Stripe"
PAID_AFTER_CANCELLATION_FLAG = "Payment arrived after the order was cancelled: refund it or re-sell"
PAID_AFTER_FAILURE_FLAG = "Payment arrived after the bank payment had failed: refund it or re-sell"
PAID_TOO_LATE = {
    OrderStatus.CANCELLED: PAID_AFTER_CANCELLATION_FLAG,
    OrderStatus.PAYMENT_FAILED: PAID_AFTER_FAILURE_FLAG,
}
# Idempotency keys of refunds: the first half of cancelling a paid order is told apart from a
# refund by its key, so a retry of it never makes the order REFUNDED instead of CANCELLED.
REFUND_KEY = "refund:{number}:{request_key}"
CANCEL_REFUND_KEY = "cancel-refund:{number}:{request_key}"
UNACCEPTED_REFUND_KEY = "unaccepted-refund:{number}:{payment_intent}"
REFUNDED_BEFORE_PAID_NOTE = "Refunded in full at Stripe before its payment was applied here"
# Given back in full in Stripe's dashboard before it was sent: the shop can't know whether its
# pieces went anywhere, staff do. (A dispute lost is flagged already, not to be sent.)
PIECES_STILL_HERE_FLAG = (
    "Given back in full before it was sent: if its pieces are still here, put them back on "
    "sale from the stock page (reason Returned)"
)
REFUNDED_IN_PART_BEFORE_PAID_FLAG = (
    "Part of its payment was refunded at Stripe before the payment was applied here: "
    "check what is still to be sent"
)


class Outcome(enum.StrEnum):
    APPLIED = "applied"
    REPLAY = "replay"
    IGNORED = "ignored"
    NO_ORDER = "no_order"
    HELD = "held"
    MISMATCH = "mismatch"


class MalformedEventError(ValueError):
    """A correctly signed event we cannot read."""


def handle_event(session: AnySession, event: dict[str, Any]) -> Outcome:
    """Apply one verified Stripe event; the caller commits.

    An event from the other mode (a live event for a test key, or the reverse) is
    acknowledged and ignored. An event that names an order but is about another payment page
    or payment than the order's own is not applied (and flagged when money is involved).
    """
    event_id, event_type, obj = _parts(event)
    if not _same_mode(event):
        current_app.logger.warning(
            "Stripe event %s (%s) has livemode=%s, which the configured key does not match: "
            "ignored",
            event_id,
            event_type,
            event.get("livemode"),
        )
        return Outcome.IGNORED
    recorded = insert_unless_exists(
        session,
        ProcessedPaymentEvent,
        {
            "provider": "stripe",
            "event_id": event_id,
            "event_type": event_type,
            "processed_at": utcnow(),
        },
        ProcessedPaymentEvent.event_id,
    )
    if recorded is None:
        return Outcome.REPLAY
    if event_type not in HANDLERS:
        return Outcome.IGNORED
    order = _order_for(session, obj)
    intent = obj.get("payment_intent")
    if order is None and event_type in HELD_UNTIL_MATCHED and isinstance(intent, str):
        if check := KEEPABLE.get(event_type):
            check(obj)  # refused now, as it would be with its order, never kept
        _hold_payment(session, intent)
        order = _order_for(session, obj)  # its payment's report may have just committed
        if order is None:
            session.execute(
                update(ProcessedPaymentEvent)
                .where(ProcessedPaymentEvent.id == recorded)
                .values(held_for_payment=intent, held_object=obj, held_made_at=_made_at(event))
            )
            current_app.logger.info(
                "Stripe event %s (%s) kept until an order knows the payment %s",
                event_id,
                event_type,
                intent,
            )
            return Outcome.HELD
    if order is None:
        current_app.logger.warning("Stripe event %s (%s) matches no order", event_id, event_type)
        return Outcome.NO_ORDER
    session.execute(
        update(ProcessedPaymentEvent)
        .where(ProcessedPaymentEvent.id == recorded)
        .values(order_id=order.id)
    )
    if reason := _not_this_orders(order, event_type, obj):
        current_app.logger.warning(
            "Stripe event %s (%s) names order %s but %s: not applied",
            event_id,
            event_type,
            order.number,
            reason,
        )
        note = f"An event ({event_type}) names this order but {reason}: not applied"
        if event_type in MONEY_EVENTS:
            checkout.flag(
                order, f"{note}; check it in Stripe", actor=ACTOR, stripe_event_id=event_id
            )
        else:
            orders.add_note(order, note, actor=ACTOR, stripe_event_id=event_id)
        return Outcome.MISMATCH
    apply_held_events(session, order)  # what came before this event is applied before it
    _apply(session, event_type, order, obj, event_id, _made_at(event))
    return Outcome.APPLIED


def _apply(
    session: AnySession,
    event_type: str,
    order: Order,
    obj: dict[str, Any],
    event_id: str,
    made_at: datetime | None,
) -> None:
    """The event's handler, told when Stripe made the event where that matters."""
    if event_type in TIMED_EVENTS:
        HANDLERS[event_type](session, order, obj, event_id, made_at=made_at)
    else:
        HANDLERS[event_type](session, order, obj, event_id)


def _made_at(event: dict[str, Any]) -> datetime | None:
    """When Stripe made the event (its ``created``, to the second); None if it doesn't say."""
    return _stamped(event.get("created"))


def _stamped(created: Any) -> datetime | None:
    """A Stripe ``created`` (seconds since the epoch) as a time; None if it isn't one."""
    if not isinstance(created, int) or isinstance(created, bool) or created < 0:
        return None
    try:
        return datetime.fromtimestamp(created, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _same_mode(event: dict[str, Any]) -> bool:
    """Whether a live event meets a live key, and a test event a test key."""
    key = current_app.config.get("STRIPE_SECRET_KEY") or ""
    live_key = key.startswith(("sk_live_", "rk_live_"))
    return bool(event.get("livemode")) is live_key


def _not_this_orders(order: Order, event_type: str, obj: dict[str, Any]) -> str | None:
    """Why an object that names this order is about another payment, or None if it is its.

    A checkout event must be about the order's own payment page; an event about a payment
    must be about the order's payment once that is known.
    """
    if event_type.startswith("checkout.session."):
        if obj.get("id") != order.stripe_checkout_session_id:
            return f"is about the payment page {obj.get('id')!r}, not this order's"
        return None
    intent = obj.get("id") if obj.get("object") == "payment_intent" else obj.get("payment_intent")
    known = order.stripe_payment_intent_id
    if known and isinstance(intent, str) and intent != known:
        return f"is about the payment {intent!r}, not this order's"
    return None


def _parts(event: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    event_id, event_type = event.get("id"), event.get("type")
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if not (isinstance(event_id, str) and event_id and isinstance(event_type, str)):
        raise MalformedEventError("an event needs an id and a type")
    if not isinstance(obj, dict):
        raise MalformedEventError("an event needs data.object")
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    looked_up = (event_id, event_type, obj.get("id"), obj.get("client_reference_id"))
    looked_up += (obj.get("payment_intent"), metadata.get("order_number"))
    if any(isinstance(value, str) and not storable(value) for value in looked_up):
        # No database text column can hold it; such an event names nothing of ours.
        raise MalformedEventError("an event's ids hold a NUL or a lone surrogate")
    # Nor longer than the columns they are kept in (Stripe's ids are far shorter): PostgreSQL
    # refused to write them, and the event failed on every retry.
    if len(event_type) > EVENT_TYPE_MAX_LENGTH or any(
        isinstance(value, str) and len(value) > STRIPE_ID_MAX_LENGTH for value in looked_up
    ):
        raise MalformedEventError("an event's id or type is longer than any Stripe's")
    return event_id, event_type, obj


def _order_for(session: AnySession, obj: dict[str, Any]) -> Order | None:
    """The order an object is about, locked for this transaction (one event at a time)."""
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    number = obj.get("client_reference_id") or metadata.get("order_number")
    if isinstance(number, str) and number:
        condition = Order.number == number
    elif isinstance(obj.get("payment_intent"), str):
        condition = Order.stripe_payment_intent_id == obj["payment_intent"]
    else:
        return None
    statement = (
        select(Order)
        .where(condition)
        .options(selectinload(Order.lines), selectinload(Order.events), selectinload(Order.refunds))
        .with_for_update(of=Order)
        .execution_options(populate_existing=True)
    )
    return session.scalar(statement)


def _amount_matches(order: Order, obj: dict[str, Any]) -> bool:
    currency = str(obj.get("currency") or "").upper()
    return obj.get("amount_total") == order.total and currency == order.currency


def _can_move(order: Order, status: OrderStatus, note: str, event_id: str | None) -> bool:
    """Whether the state machine allows this move now; if not, say why on the timeline."""
    if order.status is status:
        orders.add_note(
            order, f"{note} (already {status.value})", actor=ACTOR, stripe_event_id=event_id
        )
        return False
    if not orders.can_transition(order.status, status):
        orders.add_note(
            order,
            f"{note}: not applied, the order is {order.status.value}",
            actor=ACTOR,
            stripe_event_id=event_id,
        )
        return False
    return True


def _move(order: Order, status: OrderStatus, note: str, event_id: str | None) -> bool:
    """Move if the state machine allows it; otherwise say why on the timeline."""
    if not _can_move(order, status, note, event_id):
        return False
    orders.transition_to(order, status, actor=ACTOR, note=note, stripe_event_id=event_id)
    return True


def mark_paid(session: AnySession, order: Order, obj: dict[str, Any], event_id: str | None) -> None:
    """The order's payment came (the payment page's report, or the sweeper's look at it):
    the disputes of it that came first are applied first (a dispute lost counts as given
    back, so the payment ends the order as a refund before it would), then the payment as
    :func:`_apply_payment` says."""
    intent = obj.get("payment_intent")
    if isinstance(intent, str) and order.stripe_payment_intent_id in (None, intent):
        apply_held_events(session, order, intent)
    _apply_payment(session, order, obj, event_id)
    apply_held_events(session, order)


def apply_held_events(session: AnySession, order: Order, intent: str | None = None) -> None:
    """Apply the events of the order's payment (``intent``, else the one it knows) that came
    before the order knew it (kept by :func:`handle_event`), in the order they came: staff
    hear of a dispute whenever it came, and a dispute lost, a refund or its failure counts."""
    intent = intent or order.stripe_payment_intent_id
    if intent is None:
        return
    _hold_payment(session, intent)
    held = session.scalars(
        select(ProcessedPaymentEvent)
        .where(ProcessedPaymentEvent.held_for_payment == intent)
        .order_by(ProcessedPaymentEvent.id)
        .with_for_update()
    ).all()
    for row in held:
        obj, made_at = row.held_object or {}, row.held_made_at
        row.held_for_payment, row.held_object, row.held_made_at = None, None, None
        row.order_id = order.id
        try:
            _apply(session, row.event_type, order, obj, row.event_id, made_at)
        except MalformedEventError:
            # Checked when it was kept; one that still can't be read never stops the
            # payment it waited for from being applied.
            current_app.logger.warning(
                "Stripe event %s kept for %s: unreadable", row.event_id, intent
            )


def _hold_payment(session: AnySession, intent: str) -> None:
    """Keeping an event for a payment and applying what is kept for it take turns (on
    PostgreSQL, a lock on the payment's id until the transaction ends): a dispute kept while
    its payment's report was being applied is seen by it, or finds its order. SQLite writes
    one transaction at a time anyway."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(func.hashtext(intent))))


def _apply_payment(
    session: AnySession, order: Order, obj: dict[str, Any], event_id: str | None
) -> None:
    intent = obj.get("payment_intent")
    # What was given back before this report counts only if it was of this payment: a refund
    # reported first records its payment on the order (``charge_refunded``).
    known = order.stripe_payment_intent_id
    of_another = isinstance(intent, str) and known is not None and known != intent
    given_back = 0 if of_another else order.refunded_amount
    if isinstance(intent, str):
        # The order's own payment page took it, even in a refused amount: the payment's later
        # events (a refund or a dispute at Stripe) then find the order.
        order.stripe_payment_intent_id = intent
    if of_another and order.refunded_amount > 0:
        checkout.flag(
            order,
            f"{format_money(order.refunded_amount, order.currency)} counted as refunded was of "
            f"another payment ({known}), not this order's ({intent}): check both in Stripe",
            actor=ACTOR,
            stripe_event_id=event_id,
        )
        # None of this payment was given back: it can be refunded, and its own refunds count.
        order.refunded_amount = 0
    if not _amount_matches(order, obj):
        checkout.flag(
            order,
            f"Stripe reported {obj.get('amount_total')} {obj.get('currency')} but the order is "
            f"{order.total} {order.currency}: {AMOUNT_MISMATCH_FLAG}",
            actor=ACTOR,
            stripe_event_id=event_id,
        )
        return
    if order.status in PAID_TOO_LATE and given_back >= order.total:
        orders.add_note(
            order,
            f"{PAID_NOTE}: not applied, the order is {order.status.value} and all of it was "
            "given back",
            actor=ACTOR,
            stripe_event_id=event_id,
        )
        # The money came, late, and went back: each refund of it is now told to the shopper
        # (``refund_created``, kept until now if it came first), who would otherwise never
        # hear what became of a payment they made.
        order.late_payment_at = order.late_payment_at or utcnow()
        return
    if order.status in PAID_TOO_LATE:
        # The order ended unpaid and its pieces went back on sale, yet the money came:
        # someone must refund it or sell the piece again, and the shopper is told it came.
        checkout.flag(order, PAID_TOO_LATE[order.status], actor=ACTOR, stripe_event_id=event_id)
        order.late_payment_at = order.late_payment_at or utcnow()
        if order.bespoke_quote_id is not None:
            quotes.deposit_after_cancellation(session, order)
        else:
            orders.email_payment_received(session, order)
        return
    if order.status in UNPAID and given_back >= order.total:
        # Given back in full at Stripe (its dashboard) while its report of the payment was
        # still on its way (retried, or found by ``expire-stale``): no sale happened. The
        # pieces go back on sale and the bag to its shopper, who is told the money went back.
        back_in_bag = checkout.holds_its_cart(order)
        note = REFUNDED_BEFORE_PAID_NOTE
        if _can_move(order, OrderStatus.CANCELLED, note, event_id):
            checkout.close_unpaid(
                session,
                order,
                OrderStatus.CANCELLED,
                actor=ACTOR,
                note=note,
                stripe_event_id=event_id,
            )
            checkout.clear_flag(
                order, checkout.AWAITING_EVENT_FLAG, actor=ACTOR, stripe_event_id=event_id
            )
            orders.email_cancelled(session, order, back_in_bag=back_in_bag)
        return
    if not _can_move(order, OrderStatus.PAID, PAID_NOTE, event_id):
        return
    checkout.complete_payment(session, order, actor=ACTOR, note=PAID_NOTE, stripe_event_id=event_id)
    if given_back > 0:
        # Part of it given back before the payment came here: staff decide what is sent.
        checkout.flag(
            order, REFUNDED_IN_PART_BEFORE_PAID_FLAG, actor=ACTOR, stripe_event_id=event_id
        )
    if order.bespoke_quote_id is not None:
        # A deposit on a commission: the quote paid, the lead won, its own email.
        quotes.deposit_paid(session, order, stripe_event_id=event_id)
        return
    orders.email_shopper(session, order, "order_confirmation", f"Your ELYSIUM order {order.number}")


def paid_without_its_event(session: AnySession, order_id: int, page: checkout.PaymentPage) -> bool:
    """The sweeper's safety net for a lost payment event: Stripe's API says the PENDING
    order's own payment page was paid, and no event came. The payment is applied as its event
    would be (:func:`mark_paid`: the amount checked, the pieces sold, the bag emptied, the
    shopper emailed), under the order's lock; the event, should it come after all, then
    changes nothing. Whether the order is PAID now (a wrong amount is flagged instead)."""
    order = checkout.lock_order(session, order_id)
    if (
        order is None
        or order.status is not OrderStatus.PENDING
        or page.state is not checkout.PageState.PAID
        or order.stripe_checkout_session_id != page.checkout_session_id
    ):
        return False
    paid_page = {
        "id": page.checkout_session_id,
        "payment_status": "paid",
        "payment_intent": page.payment_intent,
        "amount_total": page.amount_total,
        "currency": page.currency,
    }
    orders.add_note(
        order, "The payment is applied from Stripe's record of the payment page", actor=ACTOR
    )
    mark_paid(session, order, paid_page, None)
    return order.status is OrderStatus.PAID


def session_completed(
    session: AnySession, order: Order, obj: dict[str, Any], event_id: str
) -> None:
    """The shopper finished Stripe's page: paid by card, or a bank payment still to come."""
    if obj.get("payment_status") in ("paid", "no_payment_required"):
        mark_paid(session, order, obj, event_id)
        return
    if isinstance(obj.get("payment_intent"), str):
        order.stripe_payment_intent_id = obj["payment_intent"]
    if _can_move(order, OrderStatus.PROCESSING, AWAITING_BANK_NOTE, event_id):
        checkout.await_bank_payment(
            session, order, actor=ACTOR, note=AWAITING_BANK_NOTE, stripe_event_id=event_id
        )
    apply_held_events(session, order)


def async_payment_failed(
    session: AnySession, order: Order, obj: dict[str, Any], event_id: str
) -> None:
    note = "The bank payment failed"
    if not _can_move(order, OrderStatus.PAYMENT_FAILED, note, event_id):
        return
    # Still PENDING (this event came before the checkout's own), its bag is thawed with the
    # lines in it; once PROCESSING, the lines had left the bag, and the pieces go back on sale.
    back_in_bag = checkout.holds_its_cart(order)
    checkout.close_unpaid(
        session,
        order,
        OrderStatus.PAYMENT_FAILED,
        actor=ACTOR,
        note=note,
        stripe_event_id=event_id,
    )
    if order.bespoke_quote_id is not None:
        quotes.deposit_never_came(session, order, actor=ACTOR)
    orders.email_shopper(
        session,
        order,
        "payment_failed",
        f"Your payment for {order.number} didn't go through",
        back_in_bag=back_in_bag,
        shop_url=absolute_url("shop.listing"),
    )


UNPAID = frozenset({OrderStatus.PENDING, OrderStatus.PROCESSING, OrderStatus.PAYMENT_FAILED})
ENDED = frozenset({OrderStatus.CANCELLED, OrderStatus.PAYMENT_FAILED, OrderStatus.REFUNDED})


def session_expired(session: AnySession, order: Order, obj: dict[str, Any], event_id: str) -> None:
    """Cancel an unpaid order; a paid one is never touched (PAID -> CANCELLED is for refunds)."""
    note = "The checkout expired unpaid"
    if order.status not in UNPAID:
        orders.add_note(
            order,
            f"The checkout expired: not applied, the order is {order.status.value}",
            actor=ACTOR,
            stripe_event_id=event_id,
        )
        return
    if not _can_move(order, OrderStatus.CANCELLED, note, event_id):
        return
    back_in_bag = checkout.holds_its_cart(order)
    checkout.close_unpaid(
        session, order, OrderStatus.CANCELLED, actor=ACTOR, note=note, stripe_event_id=event_id
    )
    orders.email_cancelled(session, order, back_in_bag=back_in_bag)


def charge_refunded(
    session: AnySession,
    order: Order,
    obj: dict[str, Any],
    event_id: str,
    *,
    made_at: datetime | None = None,
) -> None:
    """Stripe's total refunded so far. Refunds staff made here are already counted and moved
    the order themselves (and told the shopper if asked): this only confirms them. A refund
    made elsewhere (Stripe's dashboard) is recorded, and a full one refunds the order. Nobody
    is emailed from a total: the shopper hears of each refund made elsewhere from its own
    event (:func:`refund_created`)."""
    reported = _refunds_reported(obj)
    if order.stripe_payment_intent_id is None and isinstance(obj.get("payment_intent"), str):
        # Reported before the payment itself: the amount is this payment's, which the report
        # of the payment then checks (``mark_paid``), and a refund of another payment naming
        # the order is no longer taken for its own.
        order.stripe_payment_intent_id = obj["payment_intent"]
    made_here = sum(r.amount for r in order.refunds if r.status is not RefundStatus.FAILED)
    # Stripe keeps no order among events: a report made before a refund failed may arrive
    # after its failure was applied, still counting it; one made after it doesn't count it.
    refunded = max(reported - _failed_since(order, made_at), 0)
    if _later_report(order, reported, made_at):
        order.refunds_reported, order.refunds_reported_at = reported, made_at
    # Stripe's figure counts refunds alone; the order's also counts what a lost dispute took
    # back (``charged_back_amount``), which a report applied after it must not swallow.
    refunds_before = order.refunded_amount - order.charged_back_amount
    order.refunded_amount = min(
        order.total, order.charged_back_amount + max(refunds_before, refunded)
    )
    if refunded <= made_here:
        orders.add_note(
            order,
            f"Stripe confirms {format_money(reported, order.currency)} refunded in all",
            actor=ACTOR,
            stripe_event_id=event_id,
        )
        return
    if refund_unfinished(order):
        # A refund of the shop's still waits for Stripe's answer, which may be in this report,
        # or a cancel for its second half: that step moves the order (never this report too).
        orders.add_note(
            order,
            f"Stripe reports {format_money(reported, order.currency)} refunded in all",
            actor=ACTOR,
            stripe_event_id=event_id,
        )
    elif order.refunded_amount >= order.total:
        refunded_in_full_at_stripe(session, order, event_id)
    else:
        so_far = format_money(refunded, order.currency)
        orders.add_note(
            order, f"Partly refunded: {so_far} so far", actor=ACTOR, stripe_event_id=event_id
        )
        if order.bespoke_quote_id is not None:
            quotes.part_of_deposit_given_back(
                session,
                order,
                actor=ACTOR,
                note=f"{so_far} of the deposit given back so far, in Stripe (order {order.number})",
            )


def refund_created(session: AnySession, order: Order, obj: dict[str, Any], event_id: str) -> None:
    """A refund of the order's payment, made anywhere. One made outside the shop (Stripe's
    dashboard: no key of the shop's in its metadata) is told to the shopper once, by its own
    amount, keyed by its id: whatever order Stripe's reports and failures come in, and
    whatever refunds of the shop's wait meanwhile. (Told from Stripe's running totals, a
    dashboard refund reported while a refund of the shop's waited, or made again after one
    failed, was never told.) The shop's own refunds were told as staff chose.

    Told only once the payment's report is applied here (as a sale, as a late payment, or
    refused for its amount): before, it is kept until it is (:func:`mark_paid` applies what is
    kept after the payment), so a payment given back in full before it came here is told
    once, by the cancellation's email."""
    amount = _refund_amount(obj)
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    key = metadata.get("refund_key")
    known = select(Refund.id).where(
        Refund.order_id == order.id,
        # One of the shop's own, or one made elsewhere that Stripe already said failed (its
        # failure may come first: Stripe keeps no order among events).
        or_(
            Refund.stripe_refund_id == obj["id"],
            Refund.idempotency_key == (key if isinstance(key, str) else ""),
        ),
    )
    if obj.get("status") in ("failed", "canceled") or session.scalar(known.limit(1)):
        return
    made_at = _stamped(obj.get("created"))
    if cancel_unfinished(order) or _cancelled_since(order, made_at):
        return  # the cancellation's email tells every refund made of the order before it
    if not _payment_reported(order):
        _keep_until_paid(session, event_id, obj)
        return
    orders.email_refund(
        session,
        order,
        amount,
        full=_in_full_after(order, amount, made_at),
        dedupe_key=f"order:{order.id}:refunded-at-stripe:{obj['id']}",
    )


def _in_full_after(order: Order, amount: int, made_at: datetime | None) -> bool | None:
    """Whether the order is refunded in full with this refund made elsewhere of ``amount``:
    None when that can't be known for sure. Stripe's total (``refunded_amount``) counts it
    once a report made (a second or more) after it is applied, and may count it before (a
    refund of the shop's reads Stripe's list); the shop's own accepted refunds, what the bank
    took and this one are separate money."""
    reported_at = order.refunds_reported_at
    # A report in the same second may have been made before it (Stripe's times are seconds).
    counted = reported_at is not None and made_at is not None and reported_at > made_at
    if counted:
        return order.refunded_amount >= order.total
    if order.refunded_amount + amount < order.total:
        return False
    # At least what was given back before it, with it: the shop's accepted refunds, or
    # Stripe's last report (made before it) less what failed since.
    given_here = sum(r.amount for r in order.refunds if r.status is RefundStatus.SUCCEEDED)
    # Only a report made in an earlier second surely leaves it out.
    before = reported_at is not None and made_at is not None and reported_at < made_at
    reported = order.refunds_reported or 0
    stripes = max(reported - _failed_since(order, reported_at), 0) if before else 0
    if order.charged_back_amount + max(given_here, stripes) + amount >= order.total:
        return True
    return None


def _cancelled_since(order: Order, made_at: datetime | None) -> bool:
    """Whether the paid order was cancelled after a refund made at ``made_at``: the
    cancellation's email (if staff chose to send it) told all that was given back by then."""
    if order.status is not OrderStatus.CANCELLED or order.paid_at is None or made_at is None:
        return False
    cancelled = [e.created_at for e in order.events if e.to_status is OrderStatus.CANCELLED]
    return bool(cancelled) and made_at <= max(cancelled)


def _payment_reported(order: Order) -> bool:
    """Whether Stripe's report of the order's payment was applied: as a sale, as a payment
    that came after the order ended, or refused for its amount (flagged for staff)."""
    return (
        order.paid_at is not None
        or order.late_payment_at is not None
        or AMOUNT_MISMATCH_FLAG in order.attention_reason
    )


def cancel_unfinished(order: Order) -> bool:
    """Whether cancelling the order has begun and not ended: its refund waits for Stripe's
    answer, or the cancel for its second half. The cancellation's email will tell every
    refund made of the order. (An order that has ended is not being cancelled: a refund of
    its that waits gives back money held after it ended, and tells only itself.)"""
    if order.status in ENDED:
        return False
    return CANCEL_TO_FINISH_FLAG in orders.flagged_for(order) or any(
        r.status is RefundStatus.PENDING and not is_plain_refund(r) for r in order.refunds
    )


def is_plain_refund(refund: Refund) -> bool:
    """Whether the refund was asked for as one (not as the first half of cancelling)."""
    return refund.idempotency_key.startswith(REFUND_KEY.split("{", 1)[0])


def _keep_until_paid(session: AnySession, event_id: str, obj: dict[str, Any]) -> None:
    """Keep an event again for its payment, to be applied once the payment is."""
    intent = obj.get("payment_intent")
    if not isinstance(intent, str):
        return
    session.execute(
        update(ProcessedPaymentEvent)
        .where(ProcessedPaymentEvent.event_id == event_id)
        .values(held_for_payment=intent, held_object=obj)
    )


def refund_unfinished(order: Order) -> bool:
    """Whether a refund of the shop's waits for Stripe's answer (PENDING), or for the cancel
    it began: that step moves the order, and a report of Stripe's must not move it first (a
    REFUNDED order can no longer be cancelled, and its pieces would never go back on sale)."""
    return any(r.status is RefundStatus.PENDING for r in order.refunds) or (
        CANCEL_TO_FINISH_FLAG in orders.flagged_for(order)
    )


def nothing_held_any_more(
    order: Order, *, actor: str, note: str, event_id: str | None = None
) -> None:
    """The whole payment is given back now (by a refund here, in Stripe's dashboard, or by the
    cardholder's bank): a refund that failed before leaves nothing with the shop, so its
    warning to give that money back again comes off, with ``note``."""
    for flagged in orders.flagged_for(order):
        if flagged.startswith(REFUND_FAILED_FLAG):
            checkout.clear_flag(order, flagged, actor=actor, note=note, stripe_event_id=event_id)


def refunded_in_full_at_stripe(
    session: AnySession, order: Order, event_id: str | None = None
) -> None:
    """Stripe counts the whole payment given back, some of it by refunds made outside the
    shop (its dashboard): the order is REFUNDED (a deposit's commission told), and a failed
    refund's warning comes off. A payment that came after its order had ended stays with the
    ended order. The shopper hears of each refund from its own event (:func:`refund_created`)."""
    nothing_held_any_more(
        order,
        actor=ACTOR,
        note="Refunded in full at Stripe since: the failed refund's warning is cleared",
        event_id=event_id,
    )
    was = order.status
    moved = _move(order, OrderStatus.REFUNDED, "Refunded in full", event_id)
    if moved:
        _flag_pieces_still_here(order, was, event_id)
    if moved and order.bespoke_quote_id is not None:
        quotes.deposit_given_back(
            session,
            order,
            actor=ACTOR,
            note=f"Deposit order {order.number} refunded in full at Stripe",
        )


def dispute_created(session: AnySession, order: Order, obj: dict[str, Any], event_id: str) -> None:
    checkout.flag(
        order,
        f"{DISPUTE_FLAG} ({obj.get('reason') or 'no reason given'})",
        actor=ACTOR,
        stripe_event_id=event_id,
    )
    _tell_staff(
        session,
        order,
        f"Dispute opened on order {order.number}",
        "staff_dispute",
        f"order:{order.id}:dispute:{obj.get('id')}",
        reason=orders.readable(str(obj.get("reason") or "")) or "not given",
        amount=format_money(_disputed(order, obj), order.currency),
    )


def dispute_closed(session: AnySession, order: Order, obj: dict[str, Any], event_id: str) -> None:
    """The dispute ended. Won (or an inquiry closed): the payment stands, so the dispute's
    flag is cleared. Lost: the cardholder's bank took the money back, and no refund can be
    made of it; the order stays flagged, saying so, and the amount counts as given back
    (:func:`_charged_back`: all of it, the order is REFUNDED). Staff are emailed either way."""
    _check_closed(obj)
    status = obj.get("status")
    amount = _disputed(order, obj)
    lost = status == "lost"
    outcome = "lost" if lost else "won" if status == "won" else "closed without a chargeback"
    if lost:
        note = "The dispute is closed and was lost"
    else:
        note = f"The dispute is closed ({outcome}): the payment stands"
    open_flags = [
        line
        for line in orders.flagged_for(order)
        if line.startswith(DISPUTE_FLAG) and not line.startswith(DISPUTE_LOST_FLAG)
    ]
    for line in open_flags:
        checkout.clear_flag(order, line, actor=ACTOR, note=note, stripe_event_id=event_id)
    if lost:
        checkout.flag(
            order,
            f"{DISPUTE_LOST_FLAG}: the cardholder's bank took back "
            f"{format_money(amount, order.currency)}; nothing can be refunded of it, so don't "
            "ship what is no longer paid for",
            actor=ACTOR,
            stripe_event_id=event_id,
        )
        _charged_back(session, order, amount, event_id)
    elif not open_flags:
        orders.add_note(order, note, actor=ACTOR, stripe_event_id=event_id)
    _tell_staff(
        session,
        order,
        f"Dispute {outcome} on order {order.number}",
        "staff_dispute_closed",
        f"order:{order.id}:dispute:{obj.get('id')}:closed",
        lost=lost,
        outcome=outcome,
        amount=format_money(amount, order.currency),
    )


def _check_closed(obj: dict[str, Any]) -> None:
    if obj.get("status") not in ("won", "lost", "warning_closed"):
        raise MalformedEventError("charge.dispute.closed needs a closed status")


def _disputed(order: Order, obj: dict[str, Any]) -> int:
    """The amount a dispute is about (a cardholder may dispute part of a payment)."""
    return obj["amount"] if _is_amount(obj.get("amount"), least=0) else order.total


# No payment Stripe reports is larger (its own limit is a hundred million minor units); a
# larger figure is no amount, and no column could take it.
REPORTED_AMOUNT_MAX = 10**12


def _is_amount(value: Any, *, least: int) -> bool:
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and least <= value <= REPORTED_AMOUNT_MAX
    )


def _refunds_reported(obj: dict[str, Any]) -> int:
    """A ``charge.refunded`` object's total refunded, or ``MalformedEventError``."""
    reported = obj.get("amount_refunded")
    if not _is_amount(reported, least=0):
        raise MalformedEventError("charge.refunded needs amount_refunded")
    return reported


def _refund_amount(obj: dict[str, Any]) -> int:
    """A refund object's amount (``refund.created``, ``refund.failed``: it must name its
    refund), or ``MalformedEventError``."""
    amount = obj.get("amount")
    if not _is_amount(amount, least=1) or not isinstance(obj.get("id"), str):
        raise MalformedEventError("a refund event needs the refund's id and amount")
    return amount


# What a handler refuses in an object, checked before one about a payment no order knows yet
# is kept: a kept event that can't be applied would stop its payment's report being applied.
KEEPABLE: dict[str, Callable[[dict[str, Any]], object]] = {
    "charge.dispute.closed": _check_closed,
    "charge.refunded": _refunds_reported,
    "refund.created": _refund_amount,
    "refund.failed": _refund_amount,
}


def _charged_back(session: AnySession, order: Order, amount: int, event_id: str) -> None:
    """A lost dispute: the cardholder's bank gave them ``amount`` back, as a refund would
    have, so it counts in what the order gave back, and apart as what their bank took
    (``charged_back_amount``: the shopper is never told the shop refunded it). All of it
    given back, the order is REFUNDED, as after a full refund made in Stripe's dashboard: it
    can no longer be shipped, and a commission's deposit is given back
    (``quotes.deposit_given_back``)."""
    order.disputes_lost_amount += max(amount, 0)
    given_back = min(order.total, order.refunded_amount + max(amount, 0))
    order.charged_back_amount = min(
        order.total, order.charged_back_amount + given_back - order.refunded_amount
    )
    order.refunded_amount = given_back
    if order.refunded_amount < order.total:
        return
    nothing_held_any_more(
        order,
        actor=ACTOR,
        note="The cardholder's bank gave back the whole payment: the failed refund's warning "
        "is cleared",
        event_id=event_id,
    )
    note = "Refunded in full by the cardholder's bank (a dispute lost)"
    if _move(order, OrderStatus.REFUNDED, note, event_id) and order.bespoke_quote_id is not None:
        quotes.deposit_given_back(
            session,
            order,
            actor=ACTOR,
            note=f"Deposit order {order.number} taken back by the cardholder's bank",
        )


def _flag_pieces_still_here(order: Order, was: OrderStatus, event_id: str | None) -> None:
    """An order given back in full in Stripe's dashboard, from ``was``: if it had not been sent,
    its stocked pieces are sold for good unless staff put them back (a refund made here asks
    them which go back on sale; Stripe's report can't)."""
    stocked = any(line.inventory_id is not None and not line.made_to_order for line in order.lines)
    if stocked and was in (OrderStatus.PAID, OrderStatus.FULFILLED):
        checkout.flag(order, PIECES_STILL_HERE_FLAG, actor=ACTOR, stripe_event_id=event_id)


def _failed_since(order: Order, made_at: datetime | None) -> int:
    """What the refunds that failed after Stripe had accepted them came to, of those that
    failed when or after a report made at ``made_at`` (which still counted them). In the
    same second, or when either time is unknown, a failure is taken off: a refund is then at
    worst counted late, by a later report, never twice."""
    return sum(
        r.amount
        for r in order.refunds
        if r.status is RefundStatus.FAILED
        and r.failure_reason.startswith(FAILED_AT_STRIPE)
        and (r.failed_at is None or made_at is None or r.failed_at >= made_at)
    )


def _later_report(order: Order, reported: int, made_at: datetime | None) -> bool:
    """Whether a report of ``reported`` refunded, made at ``made_at``, is later than the one
    the order keeps. Stripe's times are to the second: of two in one second, the larger
    (refunds only add to the total; one that failed in that second is taken off anyway)."""
    if made_at is None:
        return False
    kept_at = order.refunds_reported_at
    if kept_at is None or made_at > kept_at:
        return True
    return made_at == kept_at and reported > (order.refunds_reported or 0)


def _reported_since(order: Order, failed_at: datetime | None) -> int:
    """What the order counts given back by Stripe's latest report, when Stripe made it after
    a refund failed at ``failed_at`` (so it leaves that refund out), less the refunds that
    failed since it was made; 0 when there is no such report. To the second, a report made
    in the same second may still count it: not taken."""
    made_at = order.refunds_reported_at
    if order.refunds_reported is None or made_at is None or failed_at is None:
        return 0
    if made_at <= failed_at:
        return 0
    refunded = max(order.refunds_reported - _failed_since(order, made_at), 0)
    return min(order.total, order.charged_back_amount + refunded)


def refund_failed(
    session: AnySession,
    order: Order,
    obj: dict[str, Any],
    event_id: str,
    *,
    made_at: datetime | None = None,
) -> None:
    """A refund Stripe had accepted failed later (the card was closed, the bank refused it):
    the money is back with the shop and the shopper has not got it. It counts as given back
    no more (a refund of the shop's is FAILED, so its amount may be refunded again; one made
    in Stripe's dashboard is kept, FAILED), with when Stripe said so, and the order is
    flagged and staff emailed: give it back again, or another way. Stripe sends this event
    once per refund, and an event is applied once, so nothing is taken off twice."""
    amount = _refund_amount(obj)
    reason = str(obj.get("failure_reason") or "no reason given").replace("_", " ")
    failure = f"{FAILED_AT_STRIPE}: {reason}"
    ours = session.scalar(select(Refund).where(Refund.stripe_refund_id == obj["id"]))
    if ours is None:
        ours = _asked_here(session, order, obj)
    if ours is None:
        session.add(
            Refund(
                order=order,
                amount=amount,
                currency=order.currency,
                reason="Made in Stripe's dashboard, not through the shop",
                status=RefundStatus.FAILED,
                stripe_refund_id=obj["id"],
                idempotency_key=f"stripe:{obj['id']}"[:160],
                failure_reason=failure,
                restock=[],
                failed_at=made_at or utcnow(),
            )
        )
    elif ours.order_id == order.id:
        if ours.status is RefundStatus.PENDING:
            # Stripe had accepted it, though the shop never wrote so: its pieces go back on
            # sale now, as they would have then (a refund that fails later keeps them back),
            # and the order no longer waits for its answer.
            ours.stripe_refund_id = obj["id"]
            put_refunds_pieces_back(session, order, ours, actor_id=ours.actor_user_id)
        ours.status, ours.failure_reason = RefundStatus.FAILED, failure
        ours.failed_at = made_at or utcnow()
        if not any(r.status is RefundStatus.PENDING for r in order.refunds):
            checkout.clear_flag(order, REFUND_AWAITED_FLAG, actor=ACTOR, on_timeline=False)
    # Never below what the shop's own refunds still give back (one that failed while its
    # answer was unwritten had never been counted, unless Stripe's report of it came first),
    # nor below what a report Stripe made after this failure says (it leaves this out).
    still_given = sum(r.amount for r in order.refunds if r.status is RefundStatus.SUCCEEDED)
    refunded = max(order.refunded_amount - amount, still_given, _reported_since(order, made_at), 0)
    # A dispute lost while this refund still counted took less than the bank said (the order
    # can't give back more than was paid): the bank's part grows back into the room it leaves.
    by_refunds = max(refunded - order.charged_back_amount, 0)
    order.charged_back_amount = min(order.disputes_lost_amount, order.total - by_refunds)
    order.refunded_amount = by_refunds + order.charged_back_amount
    money = format_money(amount, order.currency)
    if order.refunded_amount >= order.total:
        # The shopper has the whole payment back all the same (their bank took it back in a
        # dispute lost): the shop holds nothing of theirs, and nobody is asked to give it again.
        orders.add_note(
            order,
            f"A refund of {money} failed after Stripe had accepted it ({reason}); the whole "
            "payment has been given back all the same, so nothing is left to give back",
            actor=ACTOR,
            stripe_event_id=event_id,
        )
        return
    if order.bespoke_quote_id is not None:
        quotes.deposit_refund_failed(session, order, money)
    checkout.flag(
        order,
        f"{REFUND_FAILED_FLAG}: {money} did not reach the shopper ({reason}) and is back with "
        "the shop; give it back again, or another way",
        actor=ACTOR,
        stripe_event_id=event_id,
    )
    _tell_staff(
        session,
        order,
        f"A refund on order {order.number} failed",
        "staff_refund_failed",
        f"order:{order.id}:refund-failed:{obj['id']}",
        amount=money,
        reason=reason,
    )


def put_refunds_pieces_back(
    session: AnySession, order: Order, refund: Refund, *, actor_id: int | None
) -> None:
    """The pieces staff chose to put back with ``refund``, back on sale, once (the stock
    ledger's keys): when Stripe accepts it."""
    for entry in refund.restock:
        inventory.restock(
            session,
            int(entry["inventory_id"]),
            int(entry["quantity"]),
            key=f"refund:{refund.id}:restock:{entry['line_id']}",
            note=f"Back from order {order.number}",
            actor_id=actor_id,
            reason=StockReason.RETURNED,
            order_id=order.id,
        )


def _asked_here(session: AnySession, order: Order, obj: dict[str, Any]) -> Refund | None:
    """The order's refund that Stripe's refund object is, found by the key the shop put in
    its metadata (``stripe_gateway.create_refund``): for a refund whose answer the shop never
    wrote (its worker stopped after Stripe accepted it), so it holds no Stripe id yet."""
    metadata = obj.get("metadata")
    key = metadata.get("refund_key") if isinstance(metadata, dict) else None
    if not isinstance(key, str) or not key:
        return None
    return session.scalar(
        select(Refund).where(Refund.order_id == order.id, Refund.idempotency_key == key)
    )


def _tell_staff(
    session: AnySession, order: Order, subject: str, template: str, dedupe_key: str, **context: Any
) -> None:
    """An email to the shop's staff about ``order`` (once per ``dedupe_key``)."""
    queue_email(
        session,
        to=current_app.config["STAFF_EMAIL"],
        subject=subject,
        template=template,
        context={"order": order, **context},
        order_id=order.id,
        dedupe_key=dedupe_key,
    )


def payment_attempt_failed(
    session: AnySession, order: Order, obj: dict[str, Any], event_id: str
) -> None:
    error = obj.get("last_payment_error") if isinstance(obj.get("last_payment_error"), dict) else {}
    reason = error.get("message") or error.get("code") or "no reason given"
    orders.add_note(
        order, f"A payment attempt failed: {reason}", actor=ACTOR, stripe_event_id=event_id
    )


HANDLERS: dict[str, Callable[..., None]] = {
    "checkout.session.completed": session_completed,
    "checkout.session.async_payment_succeeded": mark_paid,
    "checkout.session.async_payment_failed": async_payment_failed,
    "checkout.session.expired": session_expired,
    "charge.refunded": charge_refunded,
    "charge.dispute.created": dispute_created,
    "charge.dispute.closed": dispute_closed,
    "refund.created": refund_created,
    "refund.failed": refund_failed,
    "payment_intent.payment_failed": payment_attempt_failed,
}

# Events about a payment that may come before its order knows it (its report still on its way):
# kept until an order does (``apply_held_events``), not dropped: a dispute must reach staff, and
# a refund made in Stripe's dashboard (whose objects name no order), or its failure, must count
# (applied with when Stripe made them, which ``_failed_since`` weighs), and be told.
HELD_UNTIL_MATCHED = frozenset(
    {
        "charge.dispute.created",
        "charge.dispute.closed",
        "charge.refunded",
        "refund.created",
        "refund.failed",
    }
)

# Events whose meaning depends on when Stripe made them (a running total of refunds that a
# refund's failure lowers): their handlers are told (``made_at``).
TIMED_EVENTS = frozenset({"charge.refunded", "refund.failed"})

# Events that say money moved: one that can't be applied is flagged for staff, not only noted.
MONEY_EVENTS = frozenset(
    {
        "checkout.session.completed",
        "checkout.session.async_payment_succeeded",
        "charge.refunded",
        "charge.dispute.created",
        "charge.dispute.closed",
        "refund.failed",
    }
)
