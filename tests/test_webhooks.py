"""POST /webhooks/stripe: signed events applied once, in any order, never backwards."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from itertools import count

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from devtools.fake_stripe.webhooks import sign
from elysium.extensions import db
from elysium.models import (
    Cart,
    Inventory,
    Order,
    OrderStatus,
    OutboxEmail,
    ProcessedPaymentEvent,
)
from elysium.services.checkout import PageState, PaymentPage, Settled, settle
from elysium.services.payments import handle_event
from tests.conftest import WEBHOOK_SECRET, make_app, sent_emails
from tests.support.orders import CHAIN_PRICE, pending_chain_order

S = OrderStatus
TOTAL = CHAIN_PRICE
event_ids = count(1)


@pytest.fixture
def order(app, catalogue):
    """A pending order for one Aurelia Fine Chain, its unit reserved and its bag frozen."""
    return pending_chain_order(app)


def time_now():
    from elysium.models.types import utcnow

    return utcnow()


def session_object(order, **changes) -> dict:
    return {
        "id": "cs_test_1",
        "object": "checkout.session",
        "client_reference_id": order["number"],
        "metadata": {"order_number": order["number"]},
        "amount_total": TOTAL,
        "currency": "gbp",
        "payment_status": "paid",
        "status": "complete",
        "payment_intent": "pi_test_1",
        **changes,
    }


def event(event_type: str, obj: dict, event_id: str | None = None) -> bytes:
    return json.dumps(
        {
            "id": event_id or f"evt_test_{next(event_ids)}",
            "object": "event",
            "type": event_type,
            "created": int(time.time()),
            "data": {"object": obj},
            "livemode": False,
        }
    ).encode()


def post(client, payload: bytes, signature: str | None = "sign"):
    headers = {"Content-Type": "application/json"}
    if signature == "sign":
        signature = sign(payload, WEBHOOK_SECRET)
    if signature is not None:
        headers["Stripe-Signature"] = signature
    return client.post("/webhooks/stripe", data=payload, headers=headers)


def state(app, order) -> dict:
    with app.app_context():
        saved = db.session.get(Order, order["id"])
        stock = db.session.get(Inventory, order["inventory_id"])
        cart = db.session.get(Cart, order["cart_id"]) if order["cart_id"] else None
        return {
            "status": saved.status,
            "stock": (stock.stock_level, stock.reserved),
            "bag_lines": len(cart.lines) if cart else 0,
            "frozen": cart is not None and cart.frozen_at is not None,
            "flagged": saved.needs_attention,
            "refunded": saved.refunded_amount,
            "events": [(e.from_status, e.to_status, e.note) for e in saved.events],
            "emails": [
                e.template
                for e in db.session.scalars(
                    select(OutboxEmail)
                    .where(OutboxEmail.order_id == order["id"])
                    .order_by(OutboxEmail.id)
                )
            ],
            "intent": saved.stripe_payment_intent_id,
        }


def test_a_paid_checkout_marks_the_order_paid_commits_stock_and_empties_the_bag(app, client, order):
    response = post(client, event("checkout.session.completed", session_object(order)))
    assert response.status_code == 200
    after = state(app, order)
    assert after["status"] is S.PAID
    assert after["stock"] == (4, 0)
    assert after["bag_lines"] == 0
    assert after["frozen"] is False
    assert after["intent"] == "pi_test_1"
    assert after["emails"] == ["order_confirmation"]
    assert after["events"][-1][:2] == (S.PENDING, S.PAID)


def test_a_replayed_event_is_acknowledged_and_ignored(app, client, order):
    payload = event("checkout.session.completed", session_object(order), "evt_same")
    assert post(client, payload).status_code == 200
    before = state(app, order)
    again = post(client, payload)
    assert again.status_code == 200
    assert again.json["outcome"] == "replay"
    assert state(app, order) == before


@pytest.mark.parametrize(
    "signature",
    [
        None,
        "t=1,v1=deadbeef",
        "garbage",
        f"t={int(time.time())},v1={'0' * 64}",
        # Stripe's library compared it with compare_digest, which refuses text outside ASCII:
        # a 500 for anyone, no secret needed.
        f"t={int(time.time())},v1=\xff",
        f"t={int(time.time())},v1={'é' * 64}",
    ],
)
def test_bad_or_missing_signatures_are_400_and_change_nothing(app, client, order, signature):
    before = state(app, order)
    response = post(client, event("checkout.session.completed", session_object(order)), signature)
    assert response.status_code == 400
    assert state(app, order) == before


def test_a_stale_signature_is_refused(app, client, order):
    payload = event("checkout.session.completed", session_object(order))
    old = sign(payload, WEBHOOK_SECRET, timestamp=int(time.time()) - 3600)
    assert post(client, payload, old).status_code == 400
    assert state(app, order)["status"] is S.PENDING


@pytest.mark.parametrize(
    "payload",
    [
        b"{not json",
        b"[1, 2]",
        b'{"id": "evt_x", "type": "checkout.session.completed"}',
        b'{"id": 5, "type": "x", "data": {"object": {}}}',
        "caf\u00e9".encode("latin-1"),
    ],
)
def test_signed_but_malformed_bodies_are_400(app, client, order, payload):
    assert post(client, payload).status_code == 400
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(ProcessedPaymentEvent)) == 0


def test_unknown_event_types_are_acknowledged(client, order):
    response = post(client, event("customer.created", {"id": "cus_1", "object": "customer"}))
    assert response.status_code == 200
    assert response.json["outcome"] == "ignored"


def test_an_unpaid_completion_is_processing_keeps_its_stock_and_empties_the_bag(app, client, order):
    post(
        client, event("checkout.session.completed", session_object(order, payment_status="unpaid"))
    )
    after = state(app, order)
    assert after["status"] is S.PROCESSING
    assert after["stock"] == (5, 1)
    assert after["bag_lines"] == 0
    assert after["frozen"] is False
    assert after["flagged"] is False
    assert "waiting for the bank payment" in after["events"][-1][2]
    post(client, event("checkout.session.async_payment_succeeded", session_object(order)))
    after = state(app, order)
    assert after["status"] is S.PAID
    assert after["stock"] == (4, 0)
    assert after["flagged"] is False
    assert after["emails"] == ["order_confirmation"]


def test_the_sweeper_leaves_an_order_awaiting_a_bank_payment_alone(app, client, order, runner):
    post(
        client, event("checkout.session.completed", session_object(order, payment_status="unpaid"))
    )
    with app.app_context():
        saved = db.session.get(Order, order["id"])
        saved.checkout_expires_at = time_now() - timedelta(days=2)
        db.session.commit()
    for _ in range(2):
        assert "Stale checkouts: none." in runner.invoke(args=["orders", "expire-stale"]).output
    after = state(app, order)
    assert after["status"] is S.PROCESSING
    assert after["flagged"] is False
    assert after["stock"] == (5, 1)


def test_a_failed_bank_payment_releases_stock_and_emails_the_shopper(app, client, order):
    post(
        client, event("checkout.session.completed", session_object(order, payment_status="unpaid"))
    )
    post(
        client,
        event(
            "checkout.session.async_payment_failed", session_object(order, payment_status="unpaid")
        ),
    )
    after = state(app, order)
    assert after["status"] is S.PAYMENT_FAILED
    assert after["stock"] == (5, 0)
    assert after["frozen"] is False
    assert after["emails"] == ["payment_failed"]
    # The lines left the bag when the checkout completed: the email doesn't say they're back.
    assert after["bag_lines"] == 0
    [told] = sent_emails(app, "shopper@example.com")
    assert "no longer set aside for you" in told.body_text
    assert "back in your bag" not in told.body_text


def test_a_bank_payment_failing_before_its_checkout_completed_puts_the_bag_back(app, client, order):
    post(client, session_event(order, "async_failed"))
    after = state(app, order)
    assert after["status"] is S.PAYMENT_FAILED
    assert (after["frozen"], after["bag_lines"]) == (False, 1)
    [told] = sent_emails(app, "shopper@example.com")
    assert "Your pieces are back in your bag" in told.body_text


def test_the_expiry_of_a_payment_page_that_is_not_the_orders_changes_nothing(app, client, order):
    with app.app_context():
        db.session.get(Order, order["id"]).stripe_checkout_session_id = "cs_test_current"
        db.session.commit()
    post(
        client,
        event(
            "checkout.session.expired",
            session_object(order, id="cs_test_other", status="expired", payment_status="unpaid"),
        ),
    )
    after = state(app, order)
    assert after["status"] is S.PENDING
    assert after["stock"] == (5, 1)
    assert after["frozen"] is True
    assert "not this order's" in after["events"][-1][2]


def test_an_expired_checkout_cancels_and_releases(app, client, order):
    post(
        client,
        event(
            "checkout.session.expired",
            session_object(order, status="expired", payment_status="unpaid"),
        ),
    )
    after = state(app, order)
    assert after["status"] is S.CANCELLED
    assert after["stock"] == (5, 0)
    assert after["frozen"] is False
    assert after["bag_lines"] == 1
    assert after["emails"] == ["order_cancelled"]


def test_expired_after_completed_never_touches_the_paid_order(app, client, order):
    post(client, event("checkout.session.completed", session_object(order)))
    post(client, event("checkout.session.expired", session_object(order, status="expired")))
    after = state(app, order)
    assert after["status"] is S.PAID
    assert after["stock"] == (4, 0)
    assert "not applied, the order is paid" in after["events"][-1][2]


def test_completed_after_expired_flags_the_order_instead_of_reviving_it(app, client, order):
    post(client, event("checkout.session.expired", session_object(order, status="expired")))
    post(client, event("checkout.session.completed", session_object(order)))
    after = state(app, order)
    assert after["status"] is S.CANCELLED
    assert after["flagged"] is True
    assert after["stock"] == (5, 0)


@pytest.mark.parametrize("paid", ["completed", "async_succeeded"])
def test_money_arriving_after_the_bank_payment_failed_flags_the_order(app, client, order, paid):
    """The order ended PAYMENT_FAILED and its piece went back on sale; a payment for it all
    the same can't make it PAID, so staff are asked to refund it or sell the piece again."""
    post(client, session_event(order, "completed_unpaid"))
    post(client, session_event(order, "async_failed"))
    post(client, session_event(order, paid))
    after = state(app, order)
    assert after["status"] is S.PAYMENT_FAILED
    assert after["flagged"] is True
    assert after["stock"] == (5, 0)


def test_completed_after_a_full_refund_cannot_move_it_back(app, client, order):
    post(client, event("checkout.session.completed", session_object(order)))
    post(
        client,
        event(
            "charge.refunded",
            {
                "id": "ch_1",
                "object": "charge",
                "payment_intent": "pi_test_1",
                "amount_refunded": TOTAL,
                "metadata": {"order_number": order["number"]},
            },
        ),
    )
    post(client, event("refund.created", dashboard_refund(TOTAL)))
    post(client, event("checkout.session.completed", session_object(order)))
    after = state(app, order)
    assert after["status"] is S.REFUNDED
    assert after["refunded"] == TOTAL
    assert "order_refunded" in after["emails"]


def refunded_charge(order, amount: int) -> dict:
    return {
        "id": "ch_1",
        "object": "charge",
        "payment_intent": "pi_test_1",
        "amount_refunded": amount,
        "metadata": {"order_number": order["number"]},
    }


def dashboard_refund(amount: int, refund_id: str = "re_1", intent: str = "pi_test_1") -> dict:
    """A refund made in Stripe's dashboard, as ``refund.created`` carries it: it names no
    order and holds no key of the shop's."""
    return {
        "id": refund_id,
        "object": "refund",
        "payment_intent": intent,
        "charge": "ch_1",
        "amount": amount,
        "currency": "gbp",
        "status": "succeeded",
        "metadata": {},
    }


def test_a_payment_refunded_in_full_before_it_was_applied_ends_the_order_not_confirmed(
    app, client, order
):
    """Refunded in Stripe's dashboard while the report of the payment was still being retried:
    the order was then marked paid, unflagged, with all its money given back; the shopper
    was sent a confirmation and the piece stayed sold."""
    post(client, event("charge.refunded", refunded_charge(order, TOTAL)))
    assert state(app, order)["status"] is S.PENDING

    completed = event("checkout.session.completed", session_object(order))
    post(client, completed)

    after = state(app, order)
    assert after["status"] is S.CANCELLED
    assert after["refunded"] == TOTAL
    assert after["stock"] == (5, 0)  # back on sale
    assert (after["frozen"], after["bag_lines"]) == (False, 1)  # the shopper's bag is theirs
    assert after["emails"] == ["order_cancelled"]
    [email] = [e for e in sent_emails(app) if e.template == "order_cancelled"]
    assert "We have refunded £650 to your original payment method" in email.body_text
    # Stripe sends it again, or another report of the same payment comes: nothing changes,
    # nobody is told twice, and staff are not asked to refund what went back.
    post(client, completed)
    post(client, event("checkout.session.completed", session_object(order)))
    again = state(app, order)
    assert (again["status"], again["flagged"], again["stock"]) == (S.CANCELLED, False, (5, 0))
    assert again["emails"] == ["order_cancelled"]


def test_a_payment_refunded_in_part_before_it_was_applied_is_paid_and_flagged(app, client, order):
    post(client, event("charge.refunded", refunded_charge(order, 10000)))

    post(client, event("checkout.session.completed", session_object(order)))

    after = state(app, order)
    assert after["status"] is S.PAID
    assert after["refunded"] == 10000
    assert after["flagged"] is True
    with app.app_context():
        reason = db.session.get(Order, order["id"]).attention_reason
    assert "refunded at Stripe before the payment was applied here" in reason


def test_a_refund_of_another_payment_naming_the_order_never_ends_or_settles_it(app, client, order):
    """A refund of some other payment that named the order in its metadata came before the
    order's own payment: the payment was then taken as given back, the order cancelled and
    the shopper told "we have refunded £650" of money the shop still held."""
    other = {**refunded_charge(order, TOTAL), "id": "ch_other", "payment_intent": "pi_other"}
    post(client, event("charge.refunded", other))

    post(client, event("checkout.session.completed", session_object(order)))

    after = state(app, order)
    assert after["status"] is S.PAID
    assert after["intent"] == "pi_test_1"
    assert after["flagged"] is True
    assert after["refunded"] == 0  # none of this payment was given back: it can be refunded
    assert "order_cancelled" not in after["emails"]
    # Its own refund, made in Stripe's dashboard, counts and is told, as any other.
    post(client, event("charge.refunded", refunded_charge(order, TOTAL)))
    post(client, event("refund.created", dashboard_refund(TOTAL)))
    refunded = state(app, order)
    assert (refunded["status"], refunded["refunded"]) == (S.REFUNDED, TOTAL)
    assert "order_refunded" in refunded["emails"]
    with app.app_context():
        reason = db.session.get(Order, order["id"]).attention_reason
    assert "was of another payment (pi_other), not this order's (pi_test_1)" in reason


def test_a_late_payment_for_an_ended_order_whose_refund_was_of_another_payment_is_flagged(
    app, client, order
):
    expired = session_object(order, payment_status="unpaid", status="expired", payment_intent=None)
    post(client, event("checkout.session.expired", expired))
    other = {**refunded_charge(order, TOTAL), "id": "ch_other", "payment_intent": "pi_other"}
    post(client, event("charge.refunded", other))

    post(client, event("checkout.session.completed", session_object(order)))  # its own, late

    after = state(app, order)
    assert after["status"] is S.CANCELLED
    assert after["flagged"] is True
    assert "payment_received" in after["emails"]  # told their money came, as any late payment


@pytest.mark.parametrize("refund_reported", ["before", "after"])
def test_a_late_payment_given_back_in_full_before_its_report_is_told_once(
    app, client, order, refund_reported
):
    """The order had ended unpaid when the payment came after all, and staff gave it all back
    in Stripe's dashboard before the shop heard of the payment: the shop noted it, and the
    shopper, whose money went and came back, was never told (the refund was kept for a
    payment report that never counted as applied)."""
    expired = session_object(order, payment_status="unpaid", status="expired", payment_intent=None)
    post(client, event("checkout.session.expired", expired))
    post(client, event("charge.refunded", refunded_charge(order, TOTAL)))
    refund = event("refund.created", dashboard_refund(TOTAL))
    if refund_reported == "before":
        post(client, refund)

    completed = event("checkout.session.completed", session_object(order))
    post(client, completed)
    if refund_reported == "after":
        post(client, refund)
    post(client, completed)  # sent again: nobody is told twice

    after = state(app, order)
    assert (after["status"], after["refunded"], after["flagged"]) == (S.CANCELLED, TOTAL, False)
    assert after["stock"] == (5, 0)
    assert after["emails"] == ["order_cancelled", "order_refunded"]
    [email] = [e for e in sent_emails(app) if e.template == "order_refunded"]
    assert "£650" in email.body_text
    assert "in full" in email.body_text


def test_a_partial_refund_is_recorded_and_the_status_kept(app, client, order):
    post(client, event("checkout.session.completed", session_object(order)))
    post(
        client,
        event(
            "charge.refunded",
            {
                "id": "ch_1",
                "object": "charge",
                "payment_intent": "pi_test_1",
                "amount_refunded": 10000,
                "metadata": {},
            },
        ),
    )
    after = state(app, order)
    assert after["status"] is S.PAID
    assert after["refunded"] == 10000
    assert "Partly refunded: £100" in after["events"][-1][2]


def test_an_amount_mismatch_is_flagged_and_never_paid(app, client, order):
    post(client, event("checkout.session.completed", session_object(order, amount_total=TOTAL - 1)))
    after = state(app, order)
    assert after["status"] is S.PENDING
    assert after["flagged"] is True
    post(client, event("checkout.session.completed", session_object(order, currency="usd")))
    assert state(app, order)["status"] is S.PENDING


def test_a_dispute_flags_the_order_and_emails_staff(app, client, order):
    post(client, event("checkout.session.completed", session_object(order)))
    post(
        client,
        event(
            "charge.dispute.created",
            {
                "id": "dp_1",
                "object": "dispute",
                "payment_intent": "pi_test_1",
                "reason": "fraudulent",
                "amount": TOTAL,
            },
        ),
    )
    after = state(app, order)
    assert after["flagged"] is True
    assert "staff_dispute" in after["emails"]
    assert after["status"] is S.PAID


def dispute(status: str | None = None) -> dict:
    return {
        "id": "dp_1",
        "object": "dispute",
        "payment_intent": "pi_test_1",
        "reason": "fraudulent",
        "amount": TOTAL,
        **({"status": status} if status else {}),
    }


def test_a_dispute_that_comes_before_its_payment_is_applied_reaches_staff_once_it_is(
    app, client, order
):
    """A dispute finds its order by the payment, which the order learns from the payment's
    own report: one that came first (that report retried, or lost until the sweeper) matched
    no order and was dropped, so nobody heard of it and the piece could be shipped."""
    early = post(client, event("charge.dispute.created", dispute()))
    assert early.status_code == 200
    assert early.json["outcome"] == "held"
    assert state(app, order)["flagged"] is False

    post(client, event("checkout.session.completed", session_object(order)))

    after = state(app, order)
    assert after["status"] is S.PAID
    assert after["flagged"] is True
    assert after["emails"].count("staff_dispute") == 1
    with app.app_context():
        reason = db.session.get(Order, order["id"]).attention_reason
    assert "The payment is disputed (fraudulent)" in reason
    # The report sent again applies nothing twice.
    post(client, event("checkout.session.completed", session_object(order)))
    assert state(app, order)["emails"].count("staff_dispute") == 1


ODD_EARLY_EVENTS = {
    "refund_failed_for_more_than_any_column": (
        "refund.failed",
        {"id": "re_1", "object": "refund", "payment_intent": "pi_test_1", "amount": 2**63},
    ),
    "refund_report_of_no_number": (
        "charge.refunded",
        {"id": "ch_1", "object": "charge", "payment_intent": "pi_test_1", "amount_refunded": "1"},
    ),
    "dispute_with_a_long_id": ("charge.dispute.created", {**dispute(), "id": "dp_" + "x" * 200}),
    "refund_failed_with_a_long_id": (
        "refund.failed",
        {"id": "re_" + "x" * 200, "object": "refund", "payment_intent": "pi_test_1", "amount": 100},
    ),
}


@pytest.mark.parametrize("case", list(ODD_EARLY_EVENTS))
def test_an_odd_event_before_its_payment_never_stops_the_payment_being_applied(
    app, client, order, case
):
    """Signed, about a payment no order knew yet, and kept; applied with the payment's report,
    it failed to be written (an amount no column takes, an email key longer than its column),
    and took the report with it: a 500 on every retry, the order never paid (found by
    review). Such an event is refused as it comes, or applied as any other."""
    kind, obj = ODD_EARLY_EVENTS[case]
    early = post(client, event(kind, obj))
    assert early.status_code in (200, 400)

    paid = post(client, event("checkout.session.completed", session_object(order)))

    assert paid.status_code == 200
    assert state(app, order)["status"] is S.PAID


def test_a_dispute_lost_before_its_payment_was_applied_ends_the_order_as_given_back(
    app, client, order
):
    """The bank took the money back before the payment's report came: no sale happened, as
    with a refund made first. Before, the shopper was sent a confirmation and the piece stayed
    sold, then the order read "refunded"."""
    post(client, event("charge.dispute.created", dispute()))
    post(client, event("charge.dispute.closed", dispute("lost")))

    post(client, event("checkout.session.completed", session_object(order)))

    after = state(app, order)
    assert after["status"] is S.CANCELLED
    assert after["refunded"] == TOTAL
    assert after["stock"] == (5, 0)
    assert "order_confirmation" not in after["emails"]
    assert after["emails"].count("staff_dispute_closed") == 1
    [email] = [e for e in sent_emails(app) if e.template == "order_cancelled"]
    assert "Your bank has already given you back £650 of your payment" in email.body_text
    assert "We have refunded" not in email.body_text


def test_a_dispute_kept_for_its_payment_is_applied_before_a_later_event_of_the_same_payment(
    app, client, order
):
    """A refund's report recorded the payment on the order, then the dispute's closing (won)
    found the order: the opening, kept, was applied after it and left the order flagged."""
    post(client, event("charge.dispute.created", dispute()))
    post(client, event("charge.refunded", refunded_charge(order, 10000)))
    post(client, event("charge.dispute.closed", dispute("won")))

    post(client, event("checkout.session.completed", session_object(order)))

    with app.app_context():
        reason = db.session.get(Order, order["id"]).attention_reason
    assert "The payment is disputed (fraudulent)" not in reason
    emails = state(app, order)["emails"]
    assert emails.index("staff_dispute") < emails.index("staff_dispute_closed")


@pytest.mark.parametrize("first", ["dispute", "payment"])
def test_a_dispute_and_its_payments_report_at_once_always_meet(app, order, first):
    """The dispute's worker found no order and kept it while the payment's worker, not seeing
    it yet, applied the payment: nothing looked at the kept dispute again. The two take turns
    on the payment now; whichever goes second sees the other."""
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        pytest.skip("SQLite has one writer at a time: the two take turns anyway")
    sent = {
        "dispute": json.loads(event("charge.dispute.created", dispute())),
        "payment": json.loads(event("checkout.session.completed", session_object(order))),
    }
    second = "payment" if first == "dispute" else "dispute"
    with app.app_context():
        engine = db.engine
    applied, release = threading.Event(), threading.Event()

    def worker(name: str, hold_open: bool) -> None:
        with app.app_context(), Session(engine) as session:
            handle_event(session, sent[name])
            if hold_open:
                applied.set()
                release.wait(10)
            session.commit()

    one = threading.Thread(target=worker, args=(first, True))
    one.start()
    assert applied.wait(10)
    other = threading.Thread(target=worker, args=(second, False))
    other.start()
    time.sleep(0.5)  # the second reaches the payment's turn and waits for the first
    release.set()
    one.join(10)
    other.join(10)

    after = state(app, order)
    assert after["status"] is S.PAID
    assert after["flagged"] is True
    assert after["emails"].count("staff_dispute") == 1


def test_a_nul_in_a_dispute_reason_never_fails_its_payment(app, client, order):
    post(client, event("charge.dispute.created", {**dispute(), "reason": "fraud\u0000ulent"}))

    answered = post(client, event("checkout.session.completed", session_object(order)))

    assert answered.status_code == 200
    after = state(app, order)
    assert after["status"] is S.PAID
    assert "staff_dispute" in after["emails"]


def test_a_dispute_closed_without_a_closed_status_is_refused_before_any_order_knows_it(
    app, client, order
):
    """Kept, it would have made the payment's own report fail each time it was sent."""
    refused = post(client, event("charge.dispute.closed", dispute("under_review")))
    assert refused.status_code == 400

    assert (
        post(client, event("checkout.session.completed", session_object(order))).status_code == 200
    )
    assert state(app, order)["status"] is S.PAID


def test_a_dispute_of_a_payment_no_order_ever_knows_stays_kept_and_harmless(app, client, order):
    other = {**dispute(), "payment_intent": "pi_not_ours"}
    assert post(client, event("charge.dispute.created", other)).json["outcome"] == "held"
    post(client, event("checkout.session.completed", session_object(order)))
    after = state(app, order)
    assert (after["status"], after["flagged"]) == (S.PAID, False)


@pytest.mark.parametrize(
    ("status", "answer", "flagged"),
    [("warning_closed", 200, False), ("under_review", 400, True), (None, 400, True)],
)
def test_a_closed_dispute_must_say_how_it_closed(app, client, order, status, answer, flagged):
    post(client, event("checkout.session.completed", session_object(order)))
    dispute = {"id": "dp_1", "object": "dispute", "payment_intent": "pi_test_1", "amount": TOTAL}
    post(client, event("charge.dispute.created", {**dispute, "reason": "general"}))

    response = post(client, event("charge.dispute.closed", {**dispute, "status": status}))

    assert response.status_code == answer
    after = state(app, order)
    assert after["flagged"] is flagged
    assert after["status"] is S.PAID
    assert ("staff_dispute_closed" in after["emails"]) is not flagged


@pytest.mark.parametrize("amount", [None, 0, "100"])
def test_a_failed_refund_must_say_how_much(app, client, order, amount):
    post(client, event("checkout.session.completed", session_object(order)))
    refund = {"id": "re_1", "object": "refund", "payment_intent": "pi_test_1", "amount": amount}

    response = post(client, event("refund.failed", {**refund, "status": "failed"}))

    assert response.status_code == 400
    after = state(app, order)
    assert (after["status"], after["refunded"]) == (S.PAID, 0)
    assert "staff_refund_failed" not in after["emails"]


def test_a_failed_card_attempt_is_only_noted(app, client, order):
    post(
        client,
        event(
            "payment_intent.payment_failed",
            {
                "id": "pi_test_1",
                "object": "payment_intent",
                "metadata": {"order_number": order["number"]},
                "last_payment_error": {
                    "code": "card_declined",
                    "message": "Your card was declined.",
                },
            },
        ),
    )
    after = state(app, order)
    assert after["status"] is S.PENDING
    assert after["stock"] == (5, 1)
    assert "Your card was declined." in after["events"][-1][2]


def test_an_event_for_no_known_order_is_acknowledged(client, order):
    response = post(
        client,
        event(
            "checkout.session.completed",
            session_object({"number": "ELY-NOSUCH00"}, payment_intent=None),
        ),
    )
    assert response.status_code == 200
    assert response.json["outcome"] == "no_order"


def test_completed_and_expired_delivered_at_once_have_one_consistent_outcome(app, order):
    completed = json.loads(event("checkout.session.completed", session_object(order)))
    expired = json.loads(event("checkout.session.expired", session_object(order, status="expired")))
    barrier = threading.Barrier(2)
    errors = []

    def deliver(evt):
        with app.app_context(), Session(db.engine) as session:
            barrier.wait()
            try:
                handle_event(session, evt)
                session.commit()
            except Exception as error:
                session.rollback()
                errors.append(error)

    threads = [threading.Thread(target=deliver, args=(e,)) for e in (completed, expired)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    after = state(app, order)
    assert (after["status"], after["stock"]) in {
        (S.PAID, (4, 0)),
        (S.CANCELLED, (5, 0)),
    }
    if after["status"] is S.CANCELLED:
        assert after["flagged"] is True


def test_a_payment_and_an_expiry_settling_at_once_take_turns_on_either_database(app, order):
    """The webhook has marked the order paid but not committed yet when the sweeper settles
    its page as expired: the sweeper waits for the order's lock and then reads it paid (on
    SQLite, which ignores FOR UPDATE, the lock is the database's write lock), so a paid order
    is never cancelled and its piece never put back on sale."""
    completed = json.loads(event("checkout.session.completed", session_object(order)))
    with app.app_context():
        engine = db.engine
    paid_not_committed = threading.Event()

    def pay_slowly() -> None:
        with app.app_context(), Session(engine) as session:
            handle_event(session, completed)
            paid_not_committed.set()
            time.sleep(0.5)
            session.commit()

    paying = threading.Thread(target=pay_slowly)
    paying.start()
    assert paid_not_committed.wait(10)
    with app.app_context(), Session(engine) as session:
        expired = PaymentPage(PageState.EXPIRED, "cs_test_1")
        settled = settle(session, order["id"], expired, reason="The payment page expired")
        session.commit()
    paying.join(10)

    assert settled is Settled.SKIPPED
    after = state(app, order)
    assert after["status"] is S.PAID
    assert after["stock"] == (4, 0)


def session_event(order, kind: str) -> bytes:
    if kind == "completed":
        return event("checkout.session.completed", session_object(order))
    if kind == "completed_unpaid":
        return event("checkout.session.completed", session_object(order, payment_status="unpaid"))
    if kind == "async_succeeded":
        return event("checkout.session.async_payment_succeeded", session_object(order))
    if kind == "async_failed":
        return event(
            "checkout.session.async_payment_failed",
            session_object(order, payment_status="unpaid"),
        )
    if kind == "expired":
        return event(
            "checkout.session.expired",
            session_object(order, status="expired", payment_status="unpaid"),
        )
    return event(
        "charge.refunded",
        {
            "id": "ch_1",
            "object": "charge",
            "payment_intent": "pi_test_1",
            "amount_refunded": TOTAL,
            "metadata": {"order_number": order["number"]},
        },
    )


KINDS = ["completed", "completed_unpaid", "async_succeeded", "async_failed", "expired", "refunded"]
# What each final status means for the one unit this order reserved (stock 5, reserved 1).
STOCK_FOR = {
    S.PENDING: (5, 1),
    S.PROCESSING: (5, 1),
    S.PAID: (4, 0),
    S.REFUNDED: (4, 0),
    S.CANCELLED: (5, 0),
    S.PAYMENT_FAILED: (5, 0),
}


@pytest.mark.parametrize("second", KINDS)
@pytest.mark.parametrize("first", KINDS)
def test_every_pair_of_events_in_either_order_leaves_a_consistent_order(
    app, client, order, first, second
):
    for kind in (first, second):
        assert post(client, session_event(order, kind)).status_code == 200
    after = state(app, order)
    assert after["stock"] == STOCK_FOR[after["status"]], (first, second, after)
    statuses = [to for _, to, _ in after["events"] if to is not None]
    if S.PAID in statuses:
        assert after["status"] in {S.PAID, S.REFUNDED}, (first, second, statuses)
    if after["status"] is S.REFUNDED:
        assert S.PAID in statuses


def test_a_payment_naming_another_pending_order_of_the_same_total_pays_neither(app, client, order):
    other = pending_chain_order(
        app, number="ELY-WEBHOOK2", checkout_session_id="cs_test_2", with_cart=False
    )
    # Order 1's payment page, but the reference and metadata name order 2.
    forged = session_object(other, id="cs_test_1")

    response = post(client, event("checkout.session.completed", forged))

    assert response.status_code == 200
    assert response.json["outcome"] == "mismatch"
    named = state(app, other)
    assert named["status"] is S.PENDING
    assert named["flagged"] is True
    assert "'cs_test_1', not this order's" in named["events"][-1][2]
    assert state(app, order)["status"] is S.PENDING


def test_a_refund_for_another_payment_is_not_applied(app, client, order):
    post(client, event("checkout.session.completed", session_object(order)))
    refund = {
        "id": "ch_9",
        "object": "charge",
        "payment_intent": "pi_someone_else",
        "amount_refunded": TOTAL,
        "metadata": {"order_number": order["number"]},
    }

    response = post(client, event("charge.refunded", refund))

    assert response.json["outcome"] == "mismatch"
    after = state(app, order)
    assert after["status"] is S.PAID
    assert after["refunded"] == 0
    assert after["flagged"] is True


@pytest.mark.parametrize(("key", "livemode"), [(None, True), ("sk_live_elysium", False)])
def test_an_event_from_the_other_mode_is_acknowledged_and_ignored(
    app, order, caplog, key, livemode
):
    shop = make_app(app.config["SQLALCHEMY_DATABASE_URI"], STRIPE_SECRET_KEY=key)
    payload = json.loads(event("checkout.session.completed", session_object(order)))
    payload["livemode"] = livemode

    response = post(shop.test_client(), json.dumps(payload).encode())

    assert response.status_code == 200
    assert response.json["outcome"] == "ignored"
    assert state(app, order)["status"] is S.PENDING
    assert "which the configured key does not match" in caplog.text


@pytest.mark.parametrize("odd", ["\u0000", "\ud800"], ids=["nul", "lone-surrogate"])
@pytest.mark.parametrize(
    "field", ["id", "client_reference_id", "payment_intent", "event_id", "order_number"]
)
def test_a_signed_event_with_a_nul_or_a_lone_surrogate_in_an_id_is_refused_and_changes_nothing(
    app, client, order, field, odd
):
    """Neither fits a text column (a lone surrogate can't be encoded as UTF-8): such an event
    names nothing of ours. It was a 500, which Stripe retries for days."""
    obj = session_object(order)
    if field == "order_number":
        obj["metadata"] = {"order_number": order["number"] + odd}
        obj["client_reference_id"] = None
    elif field != "event_id":
        obj[field] = obj[field] + odd
    payload = event(
        "checkout.session.completed", obj, event_id=f"evt_{odd}" if field == "event_id" else None
    )

    response = post(client, payload)

    assert response.status_code == 400
    assert state(app, order)["status"] is S.PENDING


@pytest.mark.parametrize(
    "field", ["event_id", "type", "id", "client_reference_id", "payment_intent", "order_number"]
)
def test_a_signed_event_with_an_id_or_type_longer_than_stripes_is_refused_and_changes_nothing(
    app, client, order, field
):
    """An event id over 255 characters, or a type over 120, can't be kept where the shop keeps
    them: PostgreSQL refused to write it (a 500, which Stripe retries for days); SQLite kept
    it. Nor is any of the ids looked up ever that long at Stripe. Refused on both."""
    long = "x" * 300
    obj = session_object(order)
    if field == "order_number":
        obj["metadata"] = {"order_number": order["number"] + long}
        obj["client_reference_id"] = None
    elif field in obj:
        obj[field] = obj[field] + long
    payload = json.loads(event("checkout.session.completed", obj))
    if field == "event_id":
        payload["id"] = "evt_" + long
    if field == "type":
        payload["type"] = "checkout.session.completed" + "." * 120

    response = post(client, json.dumps(payload).encode())

    assert response.status_code == 400
    assert state(app, order)["status"] is S.PENDING
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(ProcessedPaymentEvent)) == 0


def test_a_signed_body_nested_deeper_than_json_is_read_is_refused(app, client, order):
    deep = b'{"a":' * 5000 + b"1" + b"}" * 5000
    response = post(client, deep)
    assert response.status_code == 400
    assert state(app, order)["status"] is S.PENDING


def test_control_characters_quoted_from_stripe_never_reach_the_timeline(app, client, order):
    attempt = {
        "id": "pi_test_1",
        "object": "payment_intent",
        "metadata": {"order_number": order["number"]},
        "last_payment_error": {"code": "card_declined", "message": "Declined\u0000 by\u0007 bank"},
    }

    response = post(client, event("payment_intent.payment_failed", attempt))

    assert response.status_code == 200
    assert state(app, order)["events"][-1][2] == "A payment attempt failed: Declined by bank"
