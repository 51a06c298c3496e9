"""Staff move orders on: fulfil, ship, deliver, cancel and refund — only the legal moves, each
on the timeline with who did it, refunds through Stripe counted once, pieces restocked once."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from flask import Flask
from sqlalchemy import event, select, update

from elysium import house_time
from elysium.extensions import db
from elysium.integrations import stripe_gateway
from elysium.models import (
    Order,
    OrderStatus,
    OutboxEmail,
    Refund,
    RefundStatus,
    StockMovement,
    User,
)
from elysium.models.types import utcnow
from elysium.services import fulfilment, payments
from elysium.services.fulfilment import ActionRefusedError, Staff
from tests.conftest import ShopClient, link_in, page_text, sent_emails
from tests.html import Page, field_error, form_fields, text_of
from tests.support.checkout import Shop, add_chain, bags, check_out, session_id_from, stock
from tests.support.meanwhile import WorkerStoppedError, in_another_window, meanwhile, stop
from tests.support.staff import STAFF_EMAIL, create_staff, staff_client

S = OrderStatus
TOTAL = 65000  # one Aurelia Fine Chain


def buy(shop: Shop, *, pay: str | None = "card", **details: str) -> tuple[str, str]:
    """A guest buys one chain (checkout's ``details`` changed); returns the order number and
    its checkout session id."""
    client = shop.client()
    add_chain(client)
    session_id = session_id_from(check_out(client, **details).location)
    if pay == "card":
        shop.fake.pay(session_id)
    elif pay == "bank":
        shop.fake.pay_later(session_id)
    elif pay == "bank_fails":
        shop.fake.pay_later(session_id)
        shop.fake.bank_payment_fails(session_id)
    with shop.app.app_context():
        number = db.session.scalars(
            select(Order.number).where(Order.stripe_checkout_session_id == session_id)
        ).one()
    return number, session_id


def order_of(app: Flask, number: str) -> dict:
    with app.app_context():
        order = db.session.scalars(select(Order).where(Order.number == number)).one()
        found = {
            "status": order.status,
            "carrier": order.carrier,
            "tracking": order.tracking_number,
            "refunded": order.refunded_amount,
            "flagged": order.needs_attention,
            "events": [
                (event.to_status, event.actor, event.actor_user_id, event.note)
                for event in order.events
            ],
            "refunds": [(r.amount, r.status) for r in order.refunds],
            "emails": [
                email.template
                for email in db.session.scalars(
                    select(OutboxEmail)
                    .where(OutboxEmail.order_id == order.id)
                    .order_by(OutboxEmail.id)
                )
            ],
        }
        db.session.remove()
        return found


def force_status(app: Flask, number: str, status: OrderStatus, **fields) -> None:
    """An order further along than the test cares to walk it (as the staff actions would)."""
    with app.app_context():
        order = db.session.scalars(select(Order).where(Order.number == number)).one()
        order.status = status
        for name, value in fields.items():
            setattr(order, name, value)
        db.session.commit()
        db.session.remove()


def act(staff: ShopClient, number: str, action: str, **data):
    page = f"/staff/orders/{number}"
    staff.get(page)
    return staff.post(
        f"{page}/{action}",
        data={"csrf_token": staff.csrf_token, **data},
    )


SHIP = {"carrier": "royal-mail", "tracking_number": "ab 123 456 789 gb", "notify": "y"}
ACTIONS: dict[str, dict[str, str]] = {
    "fulfil": {},
    "ship": SHIP,
    "deliver": {"notify": "y"},
    "cancel": {"reason": "Customer asked", "notify": "y", "request_key": "k1"},
    "refund": {"amount": "100", "reason": "Scratch", "request_key": "k2"},
}
LEGAL = {
    S.PENDING: {"cancel"},
    S.PROCESSING: {"cancel"},
    S.PAYMENT_FAILED: {"cancel"},
    S.PAID: {"fulfil", "cancel", "refund"},
    S.FULFILLED: {"ship", "refund"},
    S.SHIPPED: {"deliver", "refund"},
    S.DELIVERED: {"refund"},
    S.CANCELLED: set(),
    S.REFUNDED: set(),
}
AFTER = {
    "fulfil": S.FULFILLED,
    "ship": S.SHIPPED,
    "deliver": S.DELIVERED,
    "cancel": S.CANCELLED,
}


def order_in(shop: Shop, app: Flask, status: OrderStatus) -> str:
    if status is S.PENDING:
        return buy(shop, pay=None)[0]
    if status is S.PROCESSING:
        return buy(shop, pay="bank")[0]
    if status is S.PAYMENT_FAILED:
        return buy(shop, pay="bank_fails")[0]
    number, _ = buy(shop)
    if status is S.CANCELLED:
        force_status(app, number, S.CANCELLED)
    elif status is S.REFUNDED:
        force_status(app, number, S.REFUNDED, refunded_amount=TOTAL)
    elif status is not S.PAID:
        force_status(app, number, status, carrier="dhl", tracking_number="JD0001")
    return number


@pytest.mark.parametrize("action", list(ACTIONS))
@pytest.mark.parametrize("status", list(S))
def test_only_the_legal_moves_are_made_from_every_status(
    shop: Shop, app: Flask, status: OrderStatus, action: str
) -> None:
    number = order_in(shop, app, status)
    staff = staff_client(shop.app)
    before = order_of(app, number)

    response = act(staff, number, action, **ACTIONS[action])
    shop.fake.wait_for_deliveries()  # Stripe's own event about it may follow

    after = order_of(app, number)
    if action in LEGAL[status]:
        assert response.status_code == 303, page_text(response)
        expected = AFTER.get(action, status)
        assert after["status"] is expected
        staff_entries = [event for event in after["events"] if event[1] == "Kit Keeper"]
        assert staff_entries, after["events"]
        assert {event[2] for event in staff_entries} == {staff_user_id(app)}
    else:
        assert response.status_code == 409, response.status_code
        assert f"Order {number} can't be" in page_text(response)
        assert after == before


def staff_user_id(app: Flask) -> int:
    from elysium.models import User

    with app.app_context():
        return db.session.scalars(select(User.id).where(User.email == STAFF_EMAIL)).one()


def test_a_paid_order_is_fulfilled_shipped_and_delivered_with_the_shopper_told(
    shop: Shop, app: Flask
) -> None:
    number, _ = buy(shop)
    staff = staff_client(shop.app)

    assert act(staff, number, "fulfil").status_code == 303
    assert act(staff, number, "ship", **SHIP).status_code == 303
    assert act(staff, number, "deliver").status_code == 303  # notify unticked

    after = order_of(app, number)
    assert after["status"] is S.DELIVERED
    assert (after["carrier"], after["tracking"]) == ("royal-mail", "AB 123 456 789 GB")
    assert after["emails"] == ["order_confirmation", "order_shipped"]
    notes = [note for _, _, _, note in after["events"]]
    assert "Shipped with Royal Mail Special Delivery, tracking number AB 123 456 789 GB" in notes
    with app.app_context():
        shipped = db.session.scalars(
            select(OutboxEmail).where(OutboxEmail.template == "order_shipped")
        ).one()
        assert "royalmail.com/track-your-item#/tracking-results/AB%20123%20456%20789%20GB" in (
            shipped.body_text
        )


def test_the_delivered_email_gives_the_day_it_arrived_in_london(shop: Shop, app: Flask) -> None:
    """Marked delivered at 23:30 UTC on a summer night, half past midnight in London (BST): the
    email gave the day before, UTC's."""
    number, _ = buy(shop)
    force_status(app, number, S.SHIPPED, carrier="dhl", tracking_number="JD0001")

    with time_machine.travel(datetime(2026, 7, 14, 23, 30, tzinfo=UTC)):
        staff = staff_client(shop.app)
        assert act(staff, number, "deliver", notify="y").status_code == 303

    [email] = [e for e in sent_emails(app) if e.template == "order_delivered"]
    sentence = f"Your order {number} was delivered on 15 July 2026."
    assert sentence in email.body_text
    assert sentence in text_of(Page(email.body_html))


@pytest.mark.parametrize("javascript", [False, True])
def test_shipping_without_a_courier_or_a_tracking_number_is_explained_and_changes_nothing(
    shop: Shop, app: Flask, javascript: bool
) -> None:
    number, _ = buy(shop)
    force_status(app, number, S.FULFILLED)
    staff = staff_client(shop.app)
    staff.get(f"/staff/orders/{number}")
    data = {"csrf_token": staff.csrf_token, "carrier": "", "tracking_number": "<script>"}

    if javascript:
        response = staff.htmx("POST", f"/staff/orders/{number}/ship", data=data)
    else:
        response = staff.post(f"/staff/orders/{number}/ship", data=data)

    assert response.status_code == 422
    assert field_error(response, "carrier") == "Choose the courier."
    assert "as the courier printed it" in field_error(response, "tracking_number")
    assert (
        form_fields(Page(response).one('#order-actions form[action$="/ship"]'))["tracking_number"]
        == "<script>"
    )
    assert "<script>" not in response.get_data(as_text=True)
    assert order_of(app, number)["status"] is S.FULFILLED


def test_a_partial_refund_then_the_rest_counts_each_once_and_the_webhooks_agree(
    shop: Shop, app: Flask
) -> None:
    number, _ = buy(shop)
    staff = staff_client(shop.app)

    first = act(
        staff, number, "refund", amount="150.50", reason="Scratch", notify="y", request_key="one"
    )
    shop.fake.wait_for_deliveries()

    assert first.status_code == 303, page_text(first)
    partly = order_of(app, number)
    assert partly["status"] is S.PAID
    assert partly["refunded"] == 15050
    assert partly["refunds"] == [(15050, RefundStatus.SUCCEEDED)]
    assert partly["emails"].count("order_refunded") == 1

    rest = act(staff, number, "refund", amount="499.50", request_key="two")
    shop.fake.wait_for_deliveries()

    assert rest.status_code == 303, page_text(rest)
    whole = order_of(app, number)
    assert whole["status"] is S.REFUNDED
    assert whole["refunded"] == TOTAL
    assert whole["emails"].count("order_refunded") == 1  # the second wasn't to be told
    stripe_notes = [note for _, actor, _, note in whole["events"] if actor == "stripe"]
    assert any("refunded in all" in note for note in stripe_notes)
    assert stock(app) == (2, 0)  # nothing put back on sale


def test_a_refund_over_what_is_left_is_refused_before_stripe_is_asked(
    shop: Shop, app: Flask
) -> None:
    number, _ = buy(shop)
    staff = staff_client(shop.app)
    requests_before = len(shop.fake.requests)

    response = act(staff, number, "refund", amount="650.01", request_key="x")

    assert response.status_code == 422
    assert "At most £650 can be refunded." in field_error(response, "amount")
    assert len(shop.fake.requests) == requests_before
    assert order_of(app, number)["refunds"] == []


@pytest.mark.parametrize(
    "typed",
    ["\u0661\u0660\u0660", "\uff11\uff10\uff10", "1O0", "100.001", "-5"],
    ids=["arabic-indic", "fullwidth", "letter-o", "three-decimals", "negative"],
)
def test_an_amount_that_isnt_one_in_our_digits_is_refused_as_typed(
    shop: Shop, app: Flask, typed: str
) -> None:
    """Other scripts' digits read as a number to Python (a hundred in Arabic-Indic digits
    refunded £100): every number the shop reads is in ASCII digits, an amount too."""
    number, _ = buy(shop)
    staff = staff_client(shop.app)

    response = act(staff, number, "refund", amount=typed, request_key="x")

    assert response.status_code == 422
    assert field_error(response, "amount") == "Enter an amount like 250 or 1,250.50."
    assert Page(response).one("#refund-amount")["value"] == typed
    assert order_of(app, number)["refunds"] == []


def test_a_refund_stripe_refuses_is_shown_and_changes_nothing(shop: Shop, app: Flask) -> None:
    number, _ = buy(shop)
    with app.app_context():
        intent = db.session.scalars(
            select(Order.stripe_payment_intent_id).where(Order.number == number)
        ).one()
    shop.fake.create_dispute(intent)
    staff = staff_client(shop.app)

    response = act(staff, number, "refund", amount="100", request_key="x")

    assert response.status_code == 409
    assert "Stripe refused the refund of £100" in page_text(response)
    after = order_of(app, number)
    assert after["status"] is S.PAID
    assert after["refunded"] == 0
    assert after["refunds"] == [(10000, RefundStatus.FAILED)]
    assert stock(app) == (2, 0)


def intent_of(app: Flask, number: str) -> str:
    with app.app_context():
        intent = db.session.scalars(
            select(Order.stripe_payment_intent_id).where(Order.number == number)
        ).one()
        db.session.remove()
    return intent


def test_a_dispute_won_clears_its_flag_and_the_payment_can_be_refunded_again(
    shop: Shop, app: Flask
) -> None:
    number, _ = buy(shop)
    dispute = shop.fake.create_dispute(intent_of(app, number), reason="product_not_received")
    assert order_of(app, number)["flagged"] is True

    shop.fake.close_dispute(dispute["id"], status="won")

    after = order_of(app, number)
    assert after["flagged"] is False
    assert after["status"] is S.PAID
    assert "The dispute is closed (won): the payment stands" in after["events"][-1][3]
    assert after["emails"][-1] == "staff_dispute_closed"
    staff = staff_client(shop.app)
    detail = Page(staff.get(f"/staff/orders/{number}"))
    assert [flag.get_text(strip=True) for flag in detail.select(".order-flag")] == []
    # The money is the shop's again: a refund goes through.
    assert act(staff, number, "refund", amount="100", request_key="x").status_code == 303
    assert order_of(app, number)["refunds"] == [(10000, RefundStatus.SUCCEEDED)]


def test_a_dispute_lost_refunds_the_order_and_leaves_it_flagged_saying_the_bank_took_it(
    shop: Shop, app: Flask
) -> None:
    number, _ = buy(shop)
    dispute = shop.fake.create_dispute(intent_of(app, number))

    shop.fake.close_dispute(dispute["id"], status="lost")
    # Stripe may send an event twice: the second changes nothing.
    [closed] = shop.fake.events_of_type("charge.dispute.closed")
    shop.fake.redeliver(closed["id"])
    shop.fake.wait_for_deliveries()

    after = order_of(app, number)
    assert after["flagged"] is True
    # The money went back as a refund would have: the order counts as refunded in full, so
    # it can't be shipped, and nothing is left to refund.
    assert after["status"] is S.REFUNDED
    assert after["refunded"] == 65000
    assert after["emails"].count("staff_dispute_closed") == 1
    assert "order_refunded" not in after["emails"]  # the shopper's bank told them
    staff = staff_client(shop.app)
    assert act(staff, number, "ship", **SHIP).status_code == 409
    assert order_of(app, number)["status"] is S.REFUNDED
    detail = Page(staff.get(f"/staff/orders/{number}"))
    assert [flag.get_text(strip=True) for flag in detail.select(".order-flag")] == ["Dispute"]
    reasons = detail.one(".staff-order__attention").get_text(" ", strip=True)
    assert "the dispute was lost: the cardholder's bank took back £" in reasons
    assert "The payment is disputed (fraudulent)" not in reasons
    assert [note for *_, note in after["events"]].count("The dispute is closed and was lost") == 1
    assert "Refunded in full by the cardholder's bank (a dispute lost)" in [
        note for *_, note in after["events"]
    ]
    with app.app_context():
        email = db.session.scalars(
            select(OutboxEmail).where(OutboxEmail.template == "staff_dispute_closed")
        ).one()
        assert email.subject == f"Dispute lost on order {number}"
        assert "the cardholder's bank took back £650" in email.body_text
        assert "Don't ship what is no longer paid for" in email.body_text
        db.session.remove()


def test_a_refund_that_fails_after_stripe_accepted_it_counts_no_more_and_is_flagged(
    shop: Shop, app: Flask
) -> None:
    """The customer's card was closed: Stripe accepted the refund, then it failed, and the
    money came back to the shop. Before, the shop never heard: it counted the money as given
    back, and the customer never got it."""
    number, _ = buy(shop)
    staff = staff_client(shop.app)
    shop.fake.auto_deliver = False  # Stripe's events come in the order the test says
    assert act(staff, number, "refund", amount="100", request_key="r").status_code == 303
    [refund] = shop.fake.refunds.values()
    assert order_of(app, number)["refunded"] == 10000

    shop.fake.fail_refund(refund["id"])
    [failed] = shop.fake.events_of_type("refund.failed")
    [reported] = shop.fake.events_of_type("charge.refunded")
    assert shop.fake.deliver(failed["id"]).status == 200
    assert shop.fake.redeliver(failed["id"]).status == 200  # sent twice: applied once
    # Stripe keeps no order: the report of the refund, sent before it failed, comes last.
    assert shop.fake.deliver(reported["id"]).status == 200

    after = order_of(app, number)
    assert (after["status"], after["refunded"]) == (S.PAID, 0)
    assert after["refunds"] == [(10000, RefundStatus.FAILED)]
    assert after["flagged"] is True
    assert after["emails"].count("staff_refund_failed") == 1
    detail = Page(staff.get(f"/staff/orders/{number}"))
    flagged = text_of(detail, ".staff-order__attention")
    assert "A refund failed after Stripe had accepted it: £100 did not reach the shopper" in (
        flagged
    )
    assert "Up to £650 can be refunded." in text_of(detail)
    # Refunded again (the card works now), under a new form: it goes through.
    assert act(staff, number, "refund", amount="100", request_key="s").status_code == 303
    assert order_of(app, number)["refunded"] == 10000


def test_the_rest_refunded_at_stripe_is_emailed_as_itself_not_the_running_total(
    shop: Shop, app: Flask
) -> None:
    """Staff refunded £250 here (emailed: "We have refunded £250"); the other £400 was given
    back in Stripe's dashboard. Its email said "We have refunded £650": the shopper read
    £900 given back on a £650 order."""
    number, _ = buy(shop)
    staff = staff_client(shop.app)
    assert (
        act(staff, number, "refund", amount="250", notify="y", request_key="r").status_code == 303
    )
    shop.fake.wait_for_deliveries()

    shop.fake.refund_from_dashboard(intent_of(app, number))
    shop.fake.wait_for_deliveries()

    assert order_of(app, number)["status"] is S.REFUNDED
    emails = [e.body_text for e in sent_emails(app) if e.template == "order_refunded"]
    assert len(emails) == 2
    assert "We have refunded £250" in emails[0]
    assert "We have refunded £400" in emails[1]
    assert "now refunded in full" in emails[1]


def a_dashboard_refund_failed_unreported(shop: Shop, app: Flask) -> tuple[str, dict]:
    """A paid order of which £100 was given back in Stripe's dashboard (reported), then failed
    a minute later, its failure held back: the order's number and that ``refund.failed``.
    Stripe's clock is a minute past the failure, events wait to be delivered."""
    number, _ = buy(shop)
    shop.fake.auto_deliver = False
    started = time.time()
    shop.fake.refund_from_dashboard(intent_of(app, number), amount=10000)
    shop.fake.deliver_pending()
    [first] = shop.fake.refunds.values()
    shop.fake.clock = lambda: started + 60
    shop.fake.fail_refund(first["id"])
    [failed] = shop.fake.events_of_type("refund.failed")[-1:]
    shop.fake.clock = lambda: started + 120
    return number, failed


@pytest.mark.parametrize("again", [10000, 3000], ids=["the-same", "less"])
def test_a_report_made_after_a_failure_and_delivered_before_it_is_believed(
    shop: Shop, app: Flask, again: int
) -> None:
    """£100 given back in Stripe's dashboard fails, and money is given back there again.
    Stripe delivers the new refund's report (made after the failure, so leaving it out)
    before the failure: the failure then took its £100 off what that report said, and the
    order showed £0 (or, for £30 given again, still £100) where Stripe had £100 (or £30)
    refunded, which staff would refund again (found by review)."""
    number, failed = a_dashboard_refund_failed_unreported(shop, app)
    shop.fake.refund_from_dashboard(intent_of(app, number), amount=again)
    [report] = shop.fake.events_of_type("charge.refunded")[-1:]
    assert shop.fake.deliver(report["id"]).status == 200
    assert shop.fake.deliver(failed["id"]).status == 200
    shop.fake.deliver_pending()

    [charge] = shop.fake.charges.values()
    assert charge["amount_refunded"] == again
    assert order_of(app, number)["refunded"] == again


def test_of_two_reports_made_in_one_second_the_larger_is_believed(shop: Shop, app: Flask):
    """As above, with £100 given again twice within one second: Stripe delivers the newer
    report (£200) first, then the older (£100), then the failure. The older, stamped with
    the same second, was kept as the latest, and the order showed £100 of Stripe's £200
    (found by review)."""
    number, failed = a_dashboard_refund_failed_unreported(shop, app)
    for _ in range(2):
        shop.fake.refund_from_dashboard(intent_of(app, number), amount=10000)
    older, newer = shop.fake.events_of_type("charge.refunded")[-2:]
    for delivered in (newer, older, failed):
        assert shop.fake.deliver(delivered["id"]).status == 200
    shop.fake.deliver_pending()

    [charge] = shop.fake.charges.values()
    assert charge["amount_refunded"] == 20000
    assert order_of(app, number)["refunded"] == 20000


def test_money_refunded_at_stripe_after_a_refund_failed_is_counted(shop: Shop, app: Flask) -> None:
    """Staff refunded £100; it failed (the card was closed), and Stripe's running total went
    back to nothing. They gave the £100 back from Stripe's dashboard: its report counted
    nothing, every failure being taken off every report, and the order showed nothing given
    back. Only reports made before a failure still count it, and only those are corrected;
    a dashboard refund that fails is kept too, so its earlier report, arriving last, is."""
    number, _ = buy(shop)
    staff = staff_client(shop.app)
    shop.fake.auto_deliver = False
    assert act(staff, number, "refund", amount="100", request_key="r").status_code == 303
    [refund] = shop.fake.refunds.values()
    shop.fake.fail_refund(refund["id"])
    shop.fake.deliver_pending()
    assert order_of(app, number)["refunded"] == 0
    started = time.time()

    shop.fake.clock = lambda: started + 60  # staff read the warning and refund at Stripe
    shop.fake.refund_from_dashboard(intent_of(app, number), amount=10000)
    shop.fake.deliver_pending()

    after = order_of(app, number)
    assert (after["status"], after["refunded"]) == (S.PAID, 10000)

    # £50 more from the dashboard, which fails in turn; its report, made before the failure,
    # comes last. It counts the £50 Stripe no longer does: that is taken off.
    shop.fake.refund_from_dashboard(intent_of(app, number), amount=5000)
    [report] = shop.fake.events_of_type("charge.refunded")[-1:]
    dashboard = [r for r in shop.fake.refunds.values() if r["amount"] == 5000]
    shop.fake.clock = lambda: started + 120
    shop.fake.fail_refund(dashboard[0]["id"])
    [failed] = shop.fake.events_of_type("refund.failed")[-1:]
    assert shop.fake.deliver(failed["id"]).status == 200
    assert shop.fake.deliver(report["id"]).status == 200

    after = order_of(app, number)
    assert after["refunded"] == 10000
    assert sorted(after["refunds"]) == [
        (5000, RefundStatus.FAILED),
        (10000, RefundStatus.FAILED),
    ]
    assert "Up to £550 can be refunded." in text_of(Page(staff.get(f"/staff/orders/{number}")))


def test_a_dispute_lost_on_part_of_the_payment_counts_that_part_as_given_back(
    shop: Shop, app: Flask
) -> None:
    number, _ = buy(shop)
    staff = staff_client(shop.app)
    refund_form = f'form[action="/staff/orders/{number}/refund"]'
    assert Page(staff.get(f"/staff/orders/{number}")).select(refund_form)
    dispute = shop.fake.create_dispute(intent_of(app, number), amount=15000)

    shop.fake.close_dispute(dispute["id"], status="lost")

    after = order_of(app, number)
    assert after["status"] is S.PAID
    assert after["refunded"] == 15000
    assert after["flagged"] is True
    # Stripe would refuse a refund now: the order's page offers none, and one asked is refused.
    detail = Page(staff.get(f"/staff/orders/{number}"))
    assert not detail.select(refund_form)
    assert detail.select(f'form[action="/staff/orders/{number}/cancel"]')
    refused = act(staff, number, "refund", amount="100", request_key="r")
    assert refused.status_code == 409
    assert "Stripe refuses refunds of a payment once a dispute of it is lost" in page_text(refused)
    assert not shop.fake.refunds


def test_a_paid_order_whose_dispute_was_lost_in_part_is_cancelled_without_a_refund_stripe_refuses(
    shop: Shop, app: Flask
) -> None:
    """Stripe refuses any refund once a dispute is lost: Cancel asks for none, cancels, puts
    the piece back on sale and says what the shop still holds. Before, it asked for the rest,
    Stripe refused each time, and the order could never be cancelled."""
    number, _ = buy(shop)
    dispute = shop.fake.create_dispute(intent_of(app, number), amount=15000)
    shop.fake.close_dispute(dispute["id"], status="lost")
    staff = staff_client(shop.app)

    response = act(staff, number, "cancel", reason="Chargeback", request_key="c")

    assert response.status_code == 303, page_text(response)
    assert not shop.fake.refunds
    after = order_of(app, number)
    assert (after["status"], after["refunds"], after["refunded"]) == (S.CANCELLED, [], 15000)
    assert after["flagged"] is False
    [cancelled] = [note for status, _, _, note in after["events"] if status is S.CANCELLED]
    assert cancelled == (
        "Cancelled: Chargeback. Its payment was not all given back: £500 of it is still with "
        "the shop: Stripe refuses refunds of a payment once a dispute of it is lost, so give it "
        "back to the shopper another way"
    )
    assert stock(app) == (3, 0)


def shoppers_order_page(shop: Shop, number: str) -> str:
    """The order's page as the shopper opens it from their confirmation email."""
    [confirmation] = [
        email
        for email in sent_emails(shop.app)
        if email.template == "order_confirmation" and number in email.subject
    ]
    return text_of(Page(shop.client().get(link_in(confirmation, "/orders/"))))


def test_a_dispute_lost_in_full_is_told_to_the_shopper_as_their_banks_doing_not_a_refund(
    shop: Shop, app: Flask
) -> None:
    """The shopper's bank took the money back: the page said the shop had refunded it "to
    your original payment method"."""
    number, _ = buy(shop)
    dispute = shop.fake.create_dispute(intent_of(app, number))
    shop.fake.close_dispute(dispute["id"], status="lost")
    assert order_of(app, number)["status"] is S.REFUNDED

    page = shoppers_order_page(shop, number)

    assert "Payment returned by your bank" in page
    assert "Your bank gave this payment back to you after a card dispute" in page
    assert "£650 given back to you by your bank, after a card dispute" in page
    assert "Given back by your bank£650" in page
    assert "Your bank gave your payment back to you" in page  # on the timeline
    assert "refunded in full" not in page.lower()
    assert "Refunded£" not in page


def test_a_refund_then_a_dispute_lost_for_the_rest_tells_who_gave_back_what(
    shop: Shop, app: Flask
) -> None:
    number, _ = buy(shop)
    staff = staff_client(shop.app)
    assert act(staff, number, "refund", amount="300", request_key="r").status_code == 303
    dispute = shop.fake.create_dispute(intent_of(app, number), amount=35000)
    shop.fake.close_dispute(dispute["id"], status="lost")
    assert order_of(app, number)["status"] is S.REFUNDED

    page = shoppers_order_page(shop, number)

    assert "Given back in full" in page
    assert (
        "£300 refunded by us to your original payment method, £350 by your bank after a card "
        "dispute" in page
    )
    assert "refunded in full, to your original payment method" not in page
    assert "Given back in full, by us and by your bank" in page  # on the timeline


def test_a_dispute_lost_after_a_refund_failed_counts_all_the_bank_took_in_any_order(
    shop: Shop, app: Flask
) -> None:
    """Staff refunded £200; it failed at Stripe (a closed card), then the cardholder's bank
    took back the whole £650 in a dispute lost. Delivered last, the failure took its £200 off
    what the dispute had counted: the order showed £450 taken by the bank, where it took
    £650, and asked staff to give the £200 back again, which the shopper already had."""
    number, _ = buy(shop)
    staff = staff_client(shop.app)
    shop.fake.auto_deliver = False  # Stripe's events come in the order the test says
    assert act(staff, number, "refund", amount="200", request_key="r").status_code == 303
    [refund] = shop.fake.refunds.values()
    shop.fake.fail_refund(refund["id"])
    dispute = shop.fake.create_dispute(intent_of(app, number), amount=TOTAL)
    shop.fake.close_dispute(dispute["id"], status="lost")
    [failed] = shop.fake.events_of_type("refund.failed")
    for each in [e for e in shop.fake.events if e["type"] != "refund.failed"]:
        assert shop.fake.deliver(each["id"]).status == 200
    assert shop.fake.deliver(failed["id"]).status == 200  # the failure comes last

    after = order_of(app, number)
    assert (after["status"], after["refunded"]) == (S.REFUNDED, TOTAL)
    assert "staff_refund_failed" not in after["emails"]
    detail = Page(staff.get(f"/staff/orders/{number}"))
    reasons = text_of(detail, ".staff-order__attention")
    assert "the cardholder's bank took back £650" in reasons
    assert payments.REFUND_FAILED_FLAG not in reasons
    page = shoppers_order_page(shop, number)
    assert "£650 given back to you by your bank, after a card dispute" in page
    assert "refunded by us" not in page


def a_refund_of_200_failed(shop: Shop) -> tuple[str, ShopClient]:
    """A paid order, £200 of it refunded by staff, the refund failed at Stripe since (each
    event delivered as it came): its number, and the staff member's browser."""
    number, _ = buy(shop)
    staff = staff_client(shop.app)
    assert act(staff, number, "refund", amount="200", request_key="r").status_code == 303
    shop.fake.wait_for_deliveries()
    [refund] = shop.fake.refunds.values()
    shop.fake.fail_refund(refund["id"])
    shop.fake.wait_for_deliveries()
    return number, staff


def test_a_dispute_lost_in_full_after_a_refund_failed_clears_the_warning_to_give_it_back(
    shop: Shop, app: Flask
) -> None:
    """The refund's failure came first and asked staff to give the £200 back again; then the
    bank took back the whole payment. The warning stayed: staff would have paid the £200 a
    second time, another way."""
    number, staff = a_refund_of_200_failed(shop)
    assert payments.REFUND_FAILED_FLAG in text_of(
        Page(staff.get(f"/staff/orders/{number}")), ".staff-order__attention"
    )

    dispute = shop.fake.create_dispute(intent_of(app, number), amount=TOTAL)
    shop.fake.close_dispute(dispute["id"], status="lost")
    shop.fake.wait_for_deliveries()

    after = order_of(app, number)
    assert (after["status"], after["refunded"]) == (S.REFUNDED, TOTAL)
    reasons = text_of(Page(staff.get(f"/staff/orders/{number}")), ".staff-order__attention")
    assert "the cardholder's bank took back £650" in reasons
    assert payments.REFUND_FAILED_FLAG not in reasons
    assert (
        "The cardholder's bank gave back the whole payment: the failed refund's warning is "
        "cleared" in [note for *_, note in after["events"]]
    )


def test_refunded_in_full_in_stripes_dashboard_after_a_refund_failed_clears_its_warning(
    shop: Shop, app: Flask
) -> None:
    """The £200 refund failed and its warning asked staff to give it back again; then the
    whole £650 was refunded in Stripe's dashboard. The warning stayed (found by reading the
    change again): staff would have given the £200 a second time, another way."""
    number, staff = a_refund_of_200_failed(shop)
    later = time.time() + 60
    shop.fake.clock = lambda: later  # staff read the warning and refund at Stripe

    shop.fake.refund_from_dashboard(intent_of(app, number), amount=TOTAL)
    shop.fake.wait_for_deliveries()

    after = order_of(app, number)
    assert (after["status"], after["refunded"]) == (S.REFUNDED, TOTAL)
    reasons = text_of(Page(staff.get(f"/staff/orders/{number}")), ".staff-order__attention")
    assert payments.REFUND_FAILED_FLAG not in reasons
    assert "Refunded in full at Stripe since: the failed refund's warning is cleared" in [
        note for *_, note in after["events"]
    ]


def test_a_dispute_lost_in_part_after_a_refund_failed_keeps_the_warning_for_what_is_held(
    shop: Shop, app: Flask
) -> None:
    """The bank took back £450 of the £650; the £200 whose refund failed is still with the
    shop, and the warning to give it back stays."""
    number, staff = a_refund_of_200_failed(shop)

    dispute = shop.fake.create_dispute(intent_of(app, number), amount=45000)
    shop.fake.close_dispute(dispute["id"], status="lost")
    shop.fake.wait_for_deliveries()

    after = order_of(app, number)
    assert after["refunded"] == 45000
    reasons = text_of(Page(staff.get(f"/staff/orders/{number}")), ".staff-order__attention")
    assert payments.REFUND_FAILED_FLAG in reasons


def test_a_cancel_after_a_dispute_lost_in_part_tells_what_the_bank_gave_and_the_shop_holds(
    shop: Shop, app: Flask
) -> None:
    """The bank took £150 back and Stripe refuses any refund after it: Cancel gives nothing
    back through Stripe, and the shop holds the other £500. The email said "We have refunded
    £150 to your original payment method" and nothing of the £500."""
    number, _ = buy(shop)
    dispute = shop.fake.create_dispute(intent_of(app, number), amount=15000)
    shop.fake.close_dispute(dispute["id"], status="lost")
    staff = staff_client(shop.app)

    response = act(staff, number, "cancel", reason="Chargeback", notify="y", request_key="c")

    assert response.status_code == 303, page_text(response)
    [email] = [e for e in sent_emails(app) if e.template == "order_cancelled"]
    for body in (email.body_text, text_of(Page(email.body_html))):
        assert "We have refunded" not in body
        assert (
            "Your bank has already given you back £150 of your payment, after a card dispute."
            in body
        )
        assert "£500 of your payment is still with us and can't go back to your card" in body
        assert "Chargeback" not in body
    page = shoppers_order_page(shop, number)
    assert "£500 of your payment is still with us and can't go back to your card" in page
    assert "£150 given back to you by your bank, after a card dispute" in page
    assert "£150 refunded" not in page


@pytest.mark.parametrize(
    ("above", "signed"), [(100000, False), (50000, True)], ids=["under", "over"]
)
def test_signed_for_is_promised_only_where_the_courier_asks_a_signature(
    shop: Shop, app: Flask, above: int, signed: bool
) -> None:
    """A £650 chain: the checkout page asks a signature only over SIGNATURE_REQUIRED_ABOVE,
    but the confirmation, the shipped email and the order's page promised "signed for" on
    every order."""
    shop.app.config["SIGNATURE_REQUIRED_ABOVE"] = above
    browsing = shop.client()
    add_chain(browsing)
    assert ("A signature is required on delivery." in page_text(browsing.get("/checkout"))) is (
        signed
    )
    number, _ = buy(shop)
    staff = staff_client(shop.app)
    assert act(staff, number, "fulfil").status_code == 303
    assert act(staff, number, "ship", **SHIP).status_code == 303

    told = {e.template: e.body_text for e in sent_emails(app) if e.order_id is not None}
    assert ("signed for" in told["order_confirmation"]) is signed
    assert ("signed for" in told["order_shipped"]) is signed
    # "Someone will need to sign for it" closed the shipped email whatever the total (found
    # by review).
    assert ("sign for it" in told["order_shipped"]) is signed
    assert "fully insured" in told["order_shipped"]
    assert ("signed for" in shoppers_order_page(shop, number)) is signed


def test_a_refund_with_stripe_unreachable_is_pending_and_the_same_form_retries_it_once(
    shop: Shop, app: Flask
) -> None:
    number, _ = buy(shop)
    staff = staff_client(shop.app)
    shop.fake.down()

    unsure = act(staff, number, "refund", amount="100", request_key="same")

    assert unsure.status_code == 503
    assert "Try again from the order's page when Stripe is back" in page_text(unsure)
    assert order_of(app, number)["refunds"] == [(10000, RefundStatus.PENDING)]
    shop.fake.up()

    retried = act(staff, number, "refund", amount="100", request_key="same")

    assert retried.status_code == 303
    after = order_of(app, number)
    assert after["refunds"] == [(10000, RefundStatus.SUCCEEDED)]
    assert after["refunded"] == 10000
    assert len(shop.fake.refunds) == 1


def refund_in_parallel(shop: Shop, number: str, data: dict[str, str], times: int) -> list[int]:
    clients = [staff_client(shop.app, f"keeper{n}@elysium.example") for n in range(times)]
    for client in clients:
        client.get(f"/staff/orders/{number}")
    barrier = threading.Barrier(times)
    statuses: list[int] = []

    def send(client: ShopClient) -> None:
        barrier.wait()
        response = client.post(
            f"/staff/orders/{number}/refund", data={"csrf_token": client.csrf_token, **data}
        )
        statuses.append(response.status_code)

    threads = [threading.Thread(target=send, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return statuses


def restocks(app: Flask) -> list[tuple[int, str]]:
    with app.app_context():
        return [
            (movement.stock_delta, movement.reason.value if movement.reason else "")
            for movement in db.session.scalars(
                select(StockMovement).where(StockMovement.kind == "restock")
            )
        ]


@pytest.mark.parametrize("how", ["repeated", "concurrent"])
def test_a_refund_with_a_piece_back_on_sale_restocks_it_exactly_once(
    shop: Shop, app: Flask, how: str
) -> None:
    number, _ = buy(shop)
    with app.app_context():
        line_id = db.session.scalars(select(Order).where(Order.number == number)).one().lines[0].id
    data = {"amount": "650", "reason": "Returned", f"restock-{line_id}": "1", "request_key": "r"}

    if how == "repeated":
        staff = staff_client(shop.app)
        statuses = [act(staff, number, "refund", **data).status_code for _ in range(3)]
    else:
        statuses = refund_in_parallel(shop, number, data, 3)
    shop.fake.wait_for_deliveries()

    assert 303 in statuses
    # A request that met the first one still in flight at Stripe may only say "not confirmed,
    # send it again" (503): never a second refund.
    assert all(status in (303, 409, 503) for status in statuses), statuses
    assert len(shop.fake.refunds) == 1
    assert restocks(app) == [(1, "returned")]
    assert stock(app) == (3, 0)
    assert order_of(app, number)["refunded"] == TOTAL


def test_a_piece_put_back_by_a_refund_that_failed_later_is_not_put_back_again(
    shop: Shop, app: Flask
) -> None:
    """A refund put the chain back on sale, then failed at Stripe (the card was closed): the
    chain is back in stock all the same. Cancelling the order afterwards gives the money back
    and puts back nothing more. Before, the failed refund's piece counted as never put back,
    and the cancel put it back a second time: a chain that doesn't exist, for sale."""
    number, _ = buy(shop)
    with app.app_context():
        line_id = db.session.scalars(select(Order).where(Order.number == number)).one().lines[0].id
    staff = staff_client(shop.app)
    shop.fake.auto_deliver = False
    back = {"amount": "100", "reason": "Returned", f"restock-{line_id}": "1", "request_key": "r"}
    assert act(staff, number, "refund", **back).status_code == 303
    assert stock(app) == (3, 0)
    [refund] = shop.fake.refunds.values()
    shop.fake.fail_refund(refund["id"])
    [failed] = shop.fake.events_of_type("refund.failed")
    assert shop.fake.deliver(failed["id"]).status == 200

    cancelled = act(staff, number, "cancel", reason="The card was closed", request_key="c")

    assert cancelled.status_code == 303, page_text(cancelled)
    assert order_of(app, number)["status"] is S.CANCELLED
    assert restocks(app) == [(1, "returned")]
    assert stock(app) == (3, 0)


def test_cancelling_a_paid_order_refunds_it_and_puts_its_pieces_back_once(
    shop: Shop, app: Flask
) -> None:
    number, _ = buy(shop)
    staff = staff_client(shop.app)

    response = act(
        staff, number, "cancel", reason="Out of stock at the maker", notify="y", request_key="c"
    )
    again = act(staff, number, "cancel", reason="Again", request_key="c")
    shop.fake.wait_for_deliveries()

    assert response.status_code == 303, page_text(response)
    assert again.status_code == 409
    after = order_of(app, number)
    assert after["status"] is S.CANCELLED
    assert after["refunded"] == TOTAL
    assert after["emails"].count("order_cancelled") == 1
    assert "order_refunded" not in after["emails"]
    assert restocks(app) == [(1, "order_cancelled")]
    assert stock(app) == (3, 0)


def test_a_cancel_after_a_refund_in_part_tells_each_part_never_more_to_come(
    shop: Shop, app: Flask
) -> None:
    """£200 refunded (and emailed), then the order cancelled with the other £450: the
    cancellation email said "We have refunded £650", which reads as £650 more on its way."""
    number, _ = buy(shop)
    staff = staff_client(shop.app)
    refund = act(
        staff, number, "refund", amount="200", reason="Scratch", notify="y", request_key="r"
    )
    assert refund.status_code == 303
    cancel = act(staff, number, "cancel", reason="Asked", notify="y", request_key="c")
    assert cancel.status_code == 303, page_text(cancel)

    [email] = [e for e in sent_emails(app) if e.template == "order_cancelled"]
    with app.app_context():
        days = [
            house_time.date_of(made)
            for made in db.session.scalars(select(Refund.created_at).order_by(Refund.id))
        ]
        db.session.remove()
    first, second = (f"on {day.day} {day:%B %Y}" for day in days)
    said = (
        f"We have refunded £650 in all to your original payment method: £200 {first}, "
        f"£450 {second}."
    )
    assert said in email.body_text
    assert said in text_of(Page(email.body_html))


def test_cancelling_an_order_still_on_the_payment_page_closes_it_and_gives_the_bag_back(
    shop: Shop, app: Flask
) -> None:
    number, session_id = buy(shop, pay=None)
    staff = staff_client(shop.app)

    response = act(staff, number, "cancel", reason="Duplicate order", request_key="c")

    assert response.status_code == 303
    assert shop.fake.session(session_id)["status"] == "expired"
    assert order_of(app, number)["status"] is S.CANCELLED
    assert stock(app) == (3, 0)
    assert bags(app)[0] == (False, [1])


def test_a_cancel_that_stripes_own_expiry_event_overtakes_is_still_a_cancel(
    shop: Shop, app: Flask
) -> None:
    """Closing the page makes Stripe announce its expiry; when that event cancels the order
    before staff's cancel takes the lock, staff are told it is cancelled (their reason on the
    timeline), not that it can't be."""
    number, session_id = buy(shop, pay=None)
    assert shop.fake.session(session_id)["status"] == "open"
    staff = staff_client(shop.app)
    with shop.app.app_context():
        engine = db.engine
    here = threading.get_ident()
    overtaken: list[bool] = []

    def expiry_arrives_first(conn, cursor, statement, parameters, context, many) -> None:
        locking = getattr(context.compiled.statement, "_for_update_arg", None) is not None
        taking_turns = statement.startswith("UPDATE orders SET id=")
        if overtaken or threading.get_ident() != here or not (locking or taking_turns):
            return
        overtaken.append(True)
        shop.fake.wait_for_deliveries()

    event.listen(engine, "before_cursor_execute", expiry_arrives_first)
    try:
        response = act(staff, number, "cancel", reason="Duplicate order", request_key="e")
    finally:
        event.remove(engine, "before_cursor_execute", expiry_arrives_first)

    assert overtaken
    assert response.status_code == 303, page_text(response)
    after = order_of(app, number)
    assert after["status"] is S.CANCELLED
    assert ("Kit Keeper", "Cancelled: Duplicate order") in [(e[1], e[3]) for e in after["events"]]
    assert stock(app) == (3, 0)
    assert bags(app)[0] == (False, [1])


def bulk_results(response) -> list[str]:
    """What the bulk action's page says became of each order, a line each."""
    return [" ".join(li.get_text().split()) for li in Page(response).select("#bulk-results li")]


def test_bulk_fulfilment_checks_each_order_and_says_what_became_of_each(
    shop: Shop, app: Flask
) -> None:
    paid = [buy(shop)[0] for _ in range(2)]
    pending, _ = buy(shop, pay=None)
    staff = staff_client(shop.app)
    staff.get("/staff/orders")

    response = staff.post(
        "/staff/orders/bulk",
        data={
            "csrf_token": staff.csrf_token,
            "action": "fulfil",
            "orders": [*paid, pending, "ELY-NOSUCH00"],
        },
    )

    assert response.status_code == 200
    items = bulk_results(response)
    assert items[:2] == [f"{paid[0]}: Fulfilled.", f"{paid[1]}: Fulfilled."]
    assert items[2].startswith(f"{pending}: Order {pending} can't be marked fulfilled")
    assert items[3] == "ELY-NOSUCH00: No such order."
    assert [order_of(app, n)["status"] for n in paid] == [S.FULFILLED, S.FULFILLED]
    assert order_of(app, pending)["status"] is S.PENDING


def fulfilled_orders(shop: Shop, app: Flask, count: int = 2) -> list[str]:
    numbers = [buy(shop)[0] for _ in range(count)]
    for number in numbers:
        force_status(app, number, S.FULFILLED)
    return numbers


def bulk(staff: ShopClient, **data):
    """The orders list's bulk form as sent (``orders`` a list of numbers, if any)."""
    staff.get("/staff/orders?tab=to-ship")
    return staff.post("/staff/orders/bulk", data={"csrf_token": staff.csrf_token, **data})


def test_bulk_shipping_needs_each_orders_tracking_number(shop: Shop, app: Flask) -> None:
    numbers = fulfilled_orders(shop, app)
    staff = staff_client(shop.app)

    response = bulk(
        staff,
        action="ship",
        carrier="dhl",
        orders=numbers,
        **{f"tracking-{numbers[0]}": "JD014600006281"},
    )

    items = bulk_results(response)
    assert items[0] == f"{numbers[0]}: Shipped."
    assert "tracking number" in items[1]
    assert [order_of(app, n)["status"] for n in numbers] == [S.SHIPPED, S.FULFILLED]


@pytest.mark.parametrize("action", ["ship", "deliver", "fulfil"])
def test_a_dispute_that_came_while_the_page_was_open_is_read_before_the_piece_goes(
    shop: Shop, app: Flask, action: str
) -> None:
    """A dispute of the payment ("fraudulent") came in while staff had the order open, and
    they pressed Ship: it shipped, the shopper was emailed, and the dispute was lost with the
    piece gone. The forms that make, ship or hand over a piece say what warning the page
    showed; a new one is read first (409), and the page drawn again can go ahead."""
    number, _ = buy(shop)
    before = {"fulfil": S.PAID, "ship": S.FULFILLED, "deliver": S.SHIPPED}[action]
    force_status(app, number, before)
    staff = staff_client(shop.app)
    form_of = {"fulfil": "action-fulfil", "ship": "action-ship", "deliver": "action-deliver"}

    def the_form() -> dict[str, str]:
        page = Page(staff.get(f"/staff/orders/{number}"))
        [form] = [f for f in page.select("#order-actions form") if f.select(f"#{form_of[action]}")]
        fields = form_fields(form)
        if action == "ship":
            fields.update(carrier="dhl", tracking_number="JD014600006281")
        return fields

    drawn = the_form()
    shop.fake.create_dispute(intent_of(app, number), reason="fraudulent")

    refused = staff.post(f"/staff/orders/{number}/{action}", data=drawn)

    assert refused.status_code == 409
    assert "changed while you looked: read it, then ask again" in page_text(refused)
    assert order_of(app, number)["status"] is before
    assert not [e for e in sent_emails(app) if e.template in ("order_shipped", "order_delivered")]
    again = staff.post(f"/staff/orders/{number}/{action}", data=the_form())
    assert again.status_code == 303, page_text(again)


@pytest.mark.parametrize("tracking", ["", "X" * 101], ids=["missing", "too_long"])
def test_a_ship_form_sent_back_to_correct_still_reads_a_new_dispute_first(
    shop: Shop, app: Flask, tracking: str
) -> None:
    """A dispute came while the page was open, and the ship form was sent with its tracking
    number missing or too long: it came back to correct, drawn with the warning as it was
    then, so the dispute was never read; corrected and sent, the piece shipped. Found by
    review. The dispute is read first, before or after the correction."""
    number, _ = buy(shop)
    force_status(app, number, S.FULFILLED)
    staff = staff_client(shop.app)
    page = Page(staff.get(f"/staff/orders/{number}"))
    [form] = [f for f in page.select("#order-actions form") if f.select("#action-ship")]
    shop.fake.create_dispute(intent_of(app, number), reason="fraudulent")

    answer = staff.htmx(
        "POST",
        f"/staff/orders/{number}/ship",
        data={**form_fields(form), "carrier": "dhl", "tracking_number": tracking},
    )
    if answer.status_code == 422:  # sent back to correct: corrected and sent again
        [form] = [f for f in Page(answer).select("form") if f.select("#action-ship")]
        corrected = {**form_fields(form), "carrier": "dhl", "tracking_number": "JD014600006281"}
        answer = staff.htmx("POST", f"/staff/orders/{number}/ship", data=corrected)

    assert answer.status_code == 409
    assert order_of(app, number)["status"] is S.FULFILLED
    assert not [e for e in sent_emails(app) if e.template == "order_shipped"]


def panel_form(response, action: str):
    """The form of the order's actions panel that posts to ``action``."""
    return Page(response).one(f'#order-actions form[action$="/{action}"]')


def send(staff: ShopClient, form, javascript: bool, **typed: str):
    """The panel's ``form`` sent as typed, with htmx (which swaps the panel alone) or without
    JavaScript (the panel alone on a page of its own)."""
    data = {**form_fields(form), **typed}
    if javascript:
        return staff.htmx("POST", str(form["action"]), data=data)
    return staff.post(str(form["action"]), data=data)


# Panel forms sent back to correct (422): a refund's amount mistyped, a cancel with no reason.
TO_CORRECT = {"refund": {"amount": "100.001"}, "cancel": {"reason": ""}}


@pytest.mark.parametrize("javascript", [False, True])
@pytest.mark.parametrize("corrected", list(TO_CORRECT))
def test_a_dispute_that_came_while_the_page_was_open_is_read_after_another_form_sent_back(
    shop: Shop, app: Flask, corrected: str, javascript: bool
) -> None:
    """The order's page showed no warning; the shopper's bank opened a dispute while it was
    open. A refund mistyped (or a cancel sent with no reason) came back to correct as the
    actions panel alone, the warning nowhere on it, yet its Mark fulfilled now said it had
    shown the dispute: pressed, it made the piece of a disputed payment (found by review).
    Every form of the panel keeps the warning its page showed; the dispute is read first."""
    number, _ = buy(shop)
    staff = staff_client(shop.app)
    page = staff.get(f"/staff/orders/{number}")
    shop.fake.create_dispute(intent_of(app, number), reason="fraudulent")

    response = send(staff, panel_form(page, corrected), javascript, **TO_CORRECT[corrected])
    assert response.status_code == 422
    assert "dispute" not in page_text(response).lower()
    response = send(staff, panel_form(response, "fulfil"), javascript)

    assert response.status_code == 409
    assert "changed while you looked: read it, then ask again" in page_text(response)
    assert order_of(app, number)["status"] is S.PAID


def test_bulk_shipping_leaves_an_order_whose_payment_is_disputed_to_be_opened(
    shop: Shop, app: Flask
) -> None:
    """The list shows an order needs attention, not why: a disputed payment is decided on
    its own page, never shipped with the rest."""
    numbers = fulfilled_orders(shop, app)
    shop.fake.create_dispute(intent_of(app, numbers[1]))
    staff = staff_client(shop.app)

    response = bulk(
        staff,
        action="ship",
        carrier="dhl",
        orders=numbers,
        **{f"tracking-{n}": "JD014600006281" for n in numbers},
    )

    items = bulk_results(response)
    assert items[0] == f"{numbers[0]}: Shipped."
    assert f"Order {numbers[1]} has a disputed payment: open it to decide" in items[1]
    assert [order_of(app, n)["status"] for n in numbers] == [S.SHIPPED, S.FULFILLED]


def test_bulk_shipping_with_no_order_selected_keeps_what_was_typed(shop: Shop, app: Flask) -> None:
    """Nothing is done, and nothing typed is lost: the orders whose tracking numbers were
    typed come back with them, and the courier and action chosen, ready to select and send."""
    numbers = fulfilled_orders(shop, app)
    staff = staff_client(shop.app)

    response = bulk(
        staff, action="ship", carrier="dhl", **{f"tracking-{numbers[0]}": "JD014600006281"}
    )

    assert response.status_code == 422
    page = Page(response)
    assert "Nothing was done. Select at least one order." in page_text(response)
    assert [i["value"] for i in page.select("#bulk-again input[name^=tracking-]")] == [
        "JD014600006281"
    ]
    fields = form_fields(response, "#bulk-orders")
    assert (fields["action"], fields["carrier"]) == ("ship", "dhl")
    assert [order_of(app, n)["status"] for n in numbers] == [S.FULFILLED, S.FULFILLED]

    again = staff.post(
        "/staff/orders/bulk",
        data={
            "csrf_token": staff.csrf_token,
            "action": "ship",
            "carrier": "dhl",
            "orders": [numbers[0]],
            f"tracking-{numbers[0]}": "JD014600006281",
        },
    )
    assert again.status_code == 200
    assert order_of(app, numbers[0])["status"] is S.SHIPPED


def test_every_action_needs_the_csrf_token(shop: Shop, app: Flask) -> None:
    number, _ = buy(shop)
    staff = staff_client(shop.app)

    for action, data in ACTIONS.items():
        response = staff.post(f"/staff/orders/{number}/{action}", data=data)
        assert response.status_code in (400, 422), (action, response.status_code)
    assert order_of(app, number)["status"] is S.PAID


def test_stock_never_moves_when_an_illegal_cancel_is_refused(shop: Shop, app: Flask) -> None:
    number, _ = buy(shop)
    force_status(app, number, S.SHIPPED, shipped_at=utcnow())
    staff = staff_client(shop.app)

    response = act(staff, number, "cancel", reason="Lost", request_key="c")

    assert response.status_code == 409
    assert restocks(app) == []
    assert stock(app) == (2, 0)


def test_cancelling_a_paid_order_again_from_a_new_form_retries_the_unconfirmed_refund(
    shop: Shop, app: Flask
) -> None:
    number, _ = buy(shop)
    staff = staff_client(shop.app)
    shop.fake.down()

    unsure = act(staff, number, "cancel", reason="Customer asked", request_key="first")
    # The page reloaded (a new form, a new key), Stripe still unreachable.
    again = act(staff, number, "cancel", reason="Customer asked", request_key="second")

    assert unsure.status_code == 503
    assert again.status_code == 503, page_text(again)
    assert "Nothing was cancelled" in page_text(again)
    still = order_of(app, number)
    assert still["status"] is S.PAID
    assert still["refunds"] == [(TOTAL, RefundStatus.PENDING)]
    assert stock(app) == (2, 0)

    shop.fake.up()
    done = act(staff, number, "cancel", reason="Customer asked", request_key="third")
    shop.fake.wait_for_deliveries()

    assert done.status_code == 303, page_text(done)
    after = order_of(app, number)
    assert after["status"] is S.CANCELLED
    assert after["refunds"] == [(TOTAL, RefundStatus.SUCCEEDED)]
    assert after["refunded"] == TOTAL
    assert [refund["amount"] for refund in shop.fake.refunds.values()] == [TOTAL]
    assert restocks(app) == [(1, "order_cancelled")]
    assert stock(app) == (3, 0)


def test_an_order_whose_cancel_did_not_finish_is_not_made_or_shipped_with_its_money_given_back(
    shop: Shop, app: Flask
) -> None:
    """A cancel that refunded (or began to) but did not cancel: Stripe unreachable, the refund
    then retried on its own. Fulfil and ship are refused all along (another member of staff,
    the bulk actions); Cancel finishes it. Before, the order stayed in "To fulfil", fully
    refunded, and could be fulfilled and shipped, after which it could never be cancelled."""
    number, _ = buy(shop)
    staff = staff_client(shop.app)
    fulfil_form = f'form[action="/staff/orders/{number}/fulfil"]'
    assert Page(staff.get(f"/staff/orders/{number}")).select(fulfil_form)
    shop.fake.down()
    assert act(staff, number, "cancel", reason="Customer asked", request_key="c").status_code == 503
    shop.fake.up()

    pending = act(staff, number, "fulfil")
    assert pending.status_code == 409, page_text(pending)
    assert "its payment is given back, or being given back" in page_text(pending)
    [retry] = retry_forms(staff, number)
    assert staff.post(retry["action"], data={"csrf_token": staff.csrf_token}).status_code == 303
    refunded = order_of(app, number)
    assert (refunded["status"], refunded["refunded"]) == (S.PAID, TOTAL)
    detail = Page(staff.get(f"/staff/orders/{number}"))
    assert not detail.select(fulfil_form)
    assert act(staff, number, "fulfil").status_code == 409
    assert order_of(app, number)["status"] is S.PAID

    done = act(staff, number, "cancel", reason="Customer asked", request_key="d")

    assert done.status_code == 303, page_text(done)
    assert order_of(app, number)["status"] is S.CANCELLED
    assert [refund["amount"] for refund in shop.fake.refunds.values()] == [TOTAL]
    assert stock(app) == (3, 0)


def test_a_cancel_stopped_between_its_refund_and_the_cancel_is_flagged_until_finished(
    shop: Shop, app: Flask
) -> None:
    """The refund that begins a cancel and the cancel are committed one after the other. A
    worker stopped between them (here at the cancel's first write) left the order paid for
    and refunded in full, with nothing to make anyone look at it again. It now wears a flag
    saying what is left to do, until Cancel finishes it."""
    number, _ = buy(shop)
    staff = staff_client(shop.app)

    with meanwhile(shop.app, "UPDATE inventory", stop) as ran, pytest.raises(WorkerStoppedError):
        act(staff, number, "cancel", reason="Customer asked", request_key="c")

    assert ran
    stopped = order_of(app, number)
    assert (stopped["status"], stopped["refunded"], stopped["flagged"]) == (S.PAID, TOTAL, True)
    listed = page_text(staff.get("/staff/orders?tab=attention"))
    assert number in listed
    assert fulfilment.CANCEL_TO_FINISH_FLAG in page_text(staff.get(f"/staff/orders/{number}"))

    done = act(staff, number, "cancel", reason="Customer asked", request_key="d")

    assert done.status_code == 303, page_text(done)
    after = order_of(app, number)
    assert (after["status"], after["flagged"]) == (S.CANCELLED, False)
    assert fulfilment.CANCEL_TO_FINISH_FLAG not in [event[3] for event in after["events"]]
    assert [refund["amount"] for refund in shop.fake.refunds.values()] == [TOTAL]
    assert stock(app) == (3, 0)


def test_a_refund_stopped_once_stripe_accepted_it_is_flagged_until_retried(
    shop: Shop, app: Flask
) -> None:
    """A worker stopped after Stripe accepted a refund, before the shop wrote its answer,
    left a PENDING refund on a paid order that nothing brought anyone back to: not in "Needs
    attention", its pieces not back, the shopper not told, and Stripe's own report of the
    refund taken for this one. It now wears a flag until its Retry finishes it."""
    number, _ = buy(shop)
    staff = staff_client(shop.app)

    with meanwhile(shop.app, "UPDATE refunds", stop) as ran, pytest.raises(WorkerStoppedError):
        act(staff, number, "refund", amount="100", reason="Scratch", request_key="r", notify="y")
    shop.fake.wait_for_deliveries()  # Stripe's charge.refunded

    assert ran
    stopped = order_of(app, number)
    assert (stopped["status"], stopped["flagged"]) == (S.PAID, True)
    assert [status for _, status in stopped["refunds"]] == [RefundStatus.PENDING]
    assert number in page_text(staff.get("/staff/orders?tab=attention"))
    assert fulfilment.REFUND_AWAITED_FLAG in page_text(staff.get(f"/staff/orders/{number}"))

    [form] = retry_forms(staff, number)
    retried = staff.post(str(form["action"]), data=form_fields(form))

    assert retried.status_code == 303, page_text(retried)
    after = order_of(app, number)
    assert (after["status"], after["flagged"]) == (S.PAID, False)
    assert [status for _, status in after["refunds"]] == [RefundStatus.SUCCEEDED]
    assert len(shop.fake.refunds) == 1
    assert "order_refunded" in after["emails"]


def test_one_refund_sent_from_two_tabs_is_given_once(shop: Shop, app: Flask) -> None:
    """The customer asked for £100 back; two tabs of the order (or two of the staff) each
    sent it. Each page draws its own request key, so both were refunded. The second is now
    refused, with what was typed kept and the refund the first made in view."""
    number, _ = buy(shop)
    staff = staff_client(shop.app)
    tabs = [
        Page(staff.get(f"/staff/orders/{number}")).one('#order-actions form[action$="/refund"]')
        for _ in range(2)
    ]
    sent = []
    for tab in tabs:
        fields = {**form_fields(tab), "amount": "100", "reason": "Scratch on the clasp"}
        sent.append(staff.post(str(tab["action"]), data=fields))

    assert sent[0].status_code == 303, page_text(sent[0])
    assert sent[1].status_code == 422
    assert "Another refund was made on order" in page_text(sent[1])
    # It says where that refund is: not on the panel sent back (nor, with htmx, on the page).
    assert "open the order again to see it" in page_text(sent[1])
    again = Page(sent[1]).one('#order-actions form[action$="/refund"]')
    assert form_fields(again)["amount"] == "100"
    assert [amount for amount, _ in order_of(app, number)["refunds"]] == [10000]
    assert [refund["amount"] for refund in shop.fake.refunds.values()] == [10000]

    resent = staff.post(str(again["action"]), data=form_fields(again))
    assert resent.status_code == 303, page_text(resent)
    assert [amount for amount, _ in order_of(app, number)["refunds"]] == [10000, 10000]


@pytest.mark.parametrize("javascript", [False, True])
@pytest.mark.parametrize("corrected", list(TO_CORRECT))
def test_a_refund_made_in_another_tab_is_read_after_a_form_sent_back_to_correct(
    shop: Shop, app: Flask, corrected: str, javascript: bool
) -> None:
    """The customer asked for £100 back once, and two of the staff had the order open. The
    second one's refund went back first to correct (its amount mistyped, or a cancel sent
    with no reason): the panel came back counting the refunds the order had by then, and
    nothing on it shows the first £100, so the corrected refund paid the customer twice
    (found by review). A panel sent back keeps the refunds its page showed."""
    number, _ = buy(shop)
    staff = staff_client(shop.app)
    tabs = [staff.get(f"/staff/orders/{number}") for _ in range(2)]
    first = send(staff, panel_form(tabs[0], "refund"), False, amount="100")
    assert first.status_code == 303, page_text(first)

    response = send(staff, panel_form(tabs[1], corrected), javascript, **TO_CORRECT[corrected])
    assert response.status_code == 422
    assert "Another refund was made" not in page_text(response)
    response = send(staff, panel_form(response, "refund"), javascript, amount="100")

    assert response.status_code == 422
    assert "Another refund was made on order" in page_text(response)
    assert [amount for amount, _ in order_of(app, number)["refunds"]] == [10000]
    assert [refund["amount"] for refund in shop.fake.refunds.values()] == [10000]
    # Told, the form drawn with the message counts that refund: sent again, it refunds.
    again = send(staff, panel_form(response, "refund"), javascript, amount="100")
    assert again.status_code == (204 if javascript else 303), page_text(again)
    assert [amount for amount, _ in order_of(app, number)["refunds"]] == [10000, 10000]


def test_a_member_of_staff_with_a_long_name_can_fulfil_and_refund(shop: Shop, app: Flask):
    """A name of 100 and 100 letters (the account form allows it) went whole into the
    timeline's author, a column of 120: on PostgreSQL every action failed, a refund after
    Stripe had accepted it. The name is cut to fit."""
    number, _ = buy(shop)
    staff = staff_client(shop.app)
    with app.app_context():
        member = db.session.scalar(select(User).where(User.email == STAFF_EMAIL))
        member.first_name, member.last_name = "A" * 100, "B" * 100
        db.session.commit()

    refunded = act(staff, number, "refund", amount="100", reason="Scratch", request_key="r")
    fulfilled = act(staff, number, "fulfil")

    assert (refunded.status_code, fulfilled.status_code) == (303, 303), page_text(refunded)
    after = order_of(app, number)
    assert after["status"] is S.FULFILLED
    assert [status for _, status in after["refunds"]] == [RefundStatus.SUCCEEDED]
    assert {actor for _, actor, user_id, _ in after["events"] if user_id} == {
        ("A" * 100 + " " + "B" * 100)[:120]
    }


def retry_forms(staff: ShopClient, number: str) -> list:
    page = staff.get(f"/staff/orders/{number}")
    return Page(page).select('#order-actions form[action*="/retry"]')


def test_a_refund_left_pending_is_retried_from_the_order_page_with_its_own_key(
    shop: Shop, app: Flask
) -> None:
    number, _ = buy(shop)
    staff = staff_client(shop.app)
    shop.fake.down()
    assert act(staff, number, "refund", amount="650", request_key="lost").status_code == 503
    shop.fake.up()
    assert order_of(app, number)["flagged"]  # until Stripe's answer is known

    forms = retry_forms(staff, number)
    assert len(forms) == 1
    assert 'action$="/refund"' not in str(forms)  # nothing left to refund under a new key
    assert not Page(staff.get(f"/staff/orders/{number}")).select("#action-refund")
    retried = staff.post(str(forms[0]["action"]), data=form_fields(forms[0]))
    shop.fake.wait_for_deliveries()

    assert retried.status_code == 303, page_text(retried)
    after = order_of(app, number)
    assert after["status"] is S.REFUNDED
    assert after["refunds"] == [(TOTAL, RefundStatus.SUCCEEDED)]
    assert len(shop.fake.refunds) == 1
    assert retry_forms(staff, number) == []
    assert not after["flagged"]


def test_a_cancellations_refund_retried_on_its_own_leaves_the_order_to_be_cancelled(
    shop: Shop, app: Flask
) -> None:
    number, _ = buy(shop)
    staff = staff_client(shop.app)
    shop.fake.down()
    assert act(staff, number, "cancel", reason="Lost", request_key="c").status_code == 503
    shop.fake.up()

    form = retry_forms(staff, number)[0]
    retried = staff.post(str(form["action"]), data=form_fields(form))
    shop.fake.wait_for_deliveries()

    assert retried.status_code == 303, page_text(retried)
    assert order_of(app, number)["status"] is S.PAID  # never REFUNDED instead of cancelled
    cancelled = act(staff, number, "cancel", reason="Lost", request_key="new")
    assert cancelled.status_code == 303, page_text(cancelled)
    after = order_of(app, number)
    assert after["status"] is S.CANCELLED
    assert after["refunded"] == TOTAL
    assert len(shop.fake.refunds) == 1
    assert stock(app) == (3, 0)


def test_a_payment_the_shop_refused_is_refunded_and_the_order_cancelled_by_staff(
    shop: Shop, app: Flask
) -> None:
    client = shop.client()
    add_chain(client)
    session_id = session_id_from(check_out(client).location)
    shop.fake.sessions[session_id]["amount_total"] = TOTAL - 1  # Stripe charges £649.99
    shop.fake.pay(session_id)
    with app.app_context():
        number = db.session.scalars(
            select(Order.number).where(Order.stripe_checkout_session_id == session_id)
        ).one()
    stuck = order_of(app, number)
    assert (stuck["status"], stuck["flagged"]) == (S.PENDING, True)
    assert stock(app) == (3, 1)
    assert bags(app)[0] == (True, [1])
    staff = staff_client(shop.app)
    shop.fake.down()

    unsure = act(staff, number, "cancel", reason="Wrong amount", notify="y", request_key="a")

    assert unsure.status_code == 503, page_text(unsure)
    assert order_of(app, number)["status"] is S.PENDING
    shop.fake.up()
    page = staff.get(f"/staff/orders/{number}")
    assert "Stripe took a payment the shop did not accept" in page_text(page)

    response = act(staff, number, "cancel", reason="Wrong amount", notify="y", request_key="b")
    again = act(staff, number, "cancel", reason="Wrong amount", request_key="b")
    shop.fake.wait_for_deliveries()

    assert response.status_code == 303, page_text(response)
    assert again.status_code == 409
    refunds = list(shop.fake.refunds.values())
    assert [(refund["amount"], refund["payment_intent"]) for refund in refunds] == [
        (TOTAL - 1, shop.fake.session(session_id)["payment_intent"])
    ]
    after = order_of(app, number)
    assert after["status"] is S.CANCELLED
    assert after["refunds"] == [(TOTAL - 1, RefundStatus.SUCCEEDED)]
    assert after["refunded"] == TOTAL - 1
    assert after["emails"] == ["order_cancelled"]
    assert after["flagged"] is False  # settled: it leaves the "Needs attention" list
    cancelled = [event for event in after["events"] if event[0] is S.CANCELLED]
    assert cancelled == [
        (
            S.CANCELLED,
            "Kit Keeper",
            staff_user_id(app),
            "Cancelled, its payment of £649.99 refunded: Wrong amount",
        )
    ]
    assert stock(app) == (3, 0)
    assert bags(app)[0] == (False, [1])
    # The shopper is told the money was taken and given back, never "nothing was charged".
    [email] = [e for e in sent_emails(app) if e.template == "order_cancelled"]
    assert "We have refunded £649.99 to your original payment method." in email.body_text
    assert "nothing has been charged" not in email.body_text
    page = page_text(client.get(link_in(email, "/orders/")))
    assert "This order was cancelled." in page
    assert "nothing was charged" not in page


def test_a_bank_payment_the_shop_refused_is_refunded_before_its_order_is_cancelled(
    shop: Shop, app: Flask
) -> None:
    """The order was PROCESSING (a bank payment on its way) when the money came in the wrong
    amount: Cancel refunds what Stripe took, then cancels; it never keeps the money."""
    client = shop.client()
    add_chain(client)
    session_id = session_id_from(check_out(client).location)
    shop.fake.pay_later(session_id)
    shop.fake.sessions[session_id]["amount_total"] = TOTAL - 1
    shop.fake.bank_payment_succeeds(session_id)
    with app.app_context():
        number = db.session.scalars(
            select(Order.number).where(Order.stripe_checkout_session_id == session_id)
        ).one()
    assert (order_of(app, number)["status"], order_of(app, number)["flagged"]) == (
        S.PROCESSING,
        True,
    )
    staff = staff_client(shop.app)

    response = act(staff, number, "cancel", reason="Wrong amount", notify="y", request_key="p")
    shop.fake.wait_for_deliveries()

    assert response.status_code == 303, page_text(response)
    assert [refund["amount"] for refund in shop.fake.refunds.values()] == [TOTAL - 1]
    after = order_of(app, number)
    assert after["status"] is S.CANCELLED
    assert after["refunds"] == [(TOTAL - 1, RefundStatus.SUCCEEDED)]
    assert stock(app) == (3, 0)
    [email] = [e for e in sent_emails(app) if e.template == "order_cancelled"]
    assert "We have refunded £649.99" in email.body_text
    assert "back in your bag" not in email.body_text  # it left the bag when it went PROCESSING


def test_a_bank_payment_cancelled_before_it_arrived_says_nothing_was_taken_nor_bag_refilled(
    shop: Shop, app: Flask
) -> None:
    """The order left the bag when its bank payment began (PROCESSING): cancelled before the
    money came, nothing was charged, and nothing went back in the bag, which the email said."""
    client = shop.client()
    add_chain(client)
    session_id = session_id_from(check_out(client).location)
    shop.fake.pay_later(session_id)
    with app.app_context():
        number = db.session.scalars(
            select(Order.number).where(Order.stripe_checkout_session_id == session_id)
        ).one()
    assert order_of(app, number)["status"] is S.PROCESSING
    staff = staff_client(shop.app)

    response = act(staff, number, "cancel", reason="No transfer", notify="y", request_key="p")

    assert response.status_code == 303, page_text(response)
    [email] = [e for e in sent_emails(app) if e.template == "order_cancelled"]
    assert "so nothing has been charged." in email.body_text
    assert "back in your bag" not in email.body_text
    assert bags(app) == [(False, [])]


def refused_payment(shop: Shop, app: Flask) -> tuple[str, str]:
    """A guest's card payment Stripe took for a penny less than the order: the webhook refused
    it, so the order waits, flagged, its piece reserved. Its number and payment intent."""
    client = shop.client()
    add_chain(client)
    session_id = session_id_from(check_out(client).location)
    shop.fake.sessions[session_id]["amount_total"] = TOTAL - 1
    shop.fake.pay(session_id)
    with app.app_context():
        number = db.session.scalars(
            select(Order.number).where(Order.stripe_checkout_session_id == session_id)
        ).one()
    assert (order_of(app, number)["status"], stock(app)) == (S.PENDING, (3, 1))
    return number, shop.fake.session(session_id)["payment_intent"]


@pytest.mark.parametrize("at_stripe", [TOTAL - 1, 10000])
def test_a_refused_payment_given_back_at_stripes_dashboard_can_still_be_cancelled(
    shop: Shop, app: Flask, at_stripe: int
) -> None:
    """Someone refunded the payment (all of it, or part) in Stripe's dashboard: Cancel gives
    back only what is left, and cancels. Before, Stripe refused the shop's refund of the whole
    payment and the order held its piece forever."""
    number, payment_intent = refused_payment(shop, app)
    shop.fake.refund_from_dashboard(payment_intent, amount=at_stripe)
    staff = staff_client(shop.app)

    response = act(staff, number, "cancel", reason="Wrong amount", request_key="d")
    shop.fake.wait_for_deliveries()

    assert response.status_code == 303, page_text(response)
    left = TOTAL - 1 - at_stripe
    assert [refund["amount"] for refund in shop.fake.refunds.values()] == [at_stripe] + (
        [left] if left else []
    )
    after = order_of(app, number)
    assert after["status"] is S.CANCELLED
    assert after["refunds"] == ([(left, RefundStatus.SUCCEEDED)] if left else [])
    assert after["flagged"] is False
    [cancelled] = [note for status, _, _, note in after["events"] if status is S.CANCELLED]
    assert cancelled.startswith("Cancelled, its payment of £649.99 refunded: Wrong amount")
    assert "refunded at Stripe, not through the shop" in cancelled
    assert stock(app) == (3, 0)


@pytest.mark.parametrize("disputed", [TOTAL - 1, 10000])
def test_a_refused_payment_whose_dispute_was_lost_is_cancelled_without_asking_a_refund_of_it(
    shop: Shop, app: Flask, disputed: int
) -> None:
    """The cardholder's bank took the payment back (all of it, or part). Stripe refuses any
    refund of a payment whose dispute was lost, so Cancel asks for none: it cancels, says on
    the timeline what the shop still holds to give back another way, and puts the piece back
    on sale. Before, it asked for all of it, Stripe refused each time, and the order held its
    piece forever; and the dispute's events found no order, so staff were never told."""
    number, payment_intent = refused_payment(shop, app)
    dispute = shop.fake.create_dispute(payment_intent, amount=disputed)
    shop.fake.close_dispute(dispute["id"], status="lost")
    told = order_of(app, number)
    assert told["emails"] == ["staff_dispute", "staff_dispute_closed"]
    assert told["flagged"] is True
    staff = staff_client(shop.app)

    response = act(staff, number, "cancel", reason="Wrong amount", request_key="d")
    shop.fake.wait_for_deliveries()

    assert response.status_code == 303, page_text(response)
    assert not shop.fake.refunds
    after = order_of(app, number)
    assert (after["status"], after["refunds"]) == (S.CANCELLED, [])
    assert after["flagged"] is False  # nothing is left to do in the shop: the flags are cleared
    [cancelled] = [note for status, _, _, note in after["events"] if status is S.CANCELLED]
    if disputed == TOTAL - 1:
        assert cancelled == (
            "Cancelled, its payment of £649.99 refunded: Wrong amount "
            "(£649.99 of it taken back by the cardholder's bank: a dispute lost)"
        )
    else:
        assert cancelled == (
            "Cancelled, its payment of £649.99 not all given back: Wrong amount "
            "(£100 of it taken back by the cardholder's bank: a dispute lost). £549.99 of it "
            "is still with the shop: Stripe refuses refunds of a payment once a dispute of it is "
            "lost, so give it back to the shopper another way"
        )
    assert stock(app) == (3, 0)


def test_a_refused_payment_under_an_open_dispute_is_not_cancelled_until_the_dispute_closes(
    shop: Shop, app: Flask
) -> None:
    number, payment_intent = refused_payment(shop, app)
    dispute = shop.fake.create_dispute(payment_intent)
    staff = staff_client(shop.app)

    refused = act(staff, number, "cancel", reason="Wrong amount", request_key="o")

    assert refused.status_code == 409, page_text(refused)
    assert "Stripe refuses any refund of it until the dispute closes" in page_text(refused)
    assert not shop.fake.refunds
    before = order_of(app, number)
    assert (before["status"], before["refunds"], stock(app)) == (S.PENDING, [], (3, 1))

    shop.fake.close_dispute(dispute["id"], status="won")
    response = act(staff, number, "cancel", reason="Wrong amount", request_key="w")
    shop.fake.wait_for_deliveries()

    assert response.status_code == 303, page_text(response)
    assert [refund["amount"] for refund in shop.fake.refunds.values()] == [TOTAL - 1]
    after = order_of(app, number)
    assert (after["status"], after["flagged"], stock(app)) == (S.CANCELLED, False, (3, 0))


def test_a_refund_stripe_refused_is_asked_again_under_a_new_key_by_the_next_cancel(
    shop: Shop, app: Flask
) -> None:
    number, _ = refused_payment(shop, app)
    staff = staff_client(shop.app)

    def refuse_the_refund(method: str, path: str) -> None:
        if (method, path) == ("POST", "/v1/refunds"):
            shop.fake.on_request = None
            shop.fake.fail_next(400, code="charge_not_refundable", message="Not now.")

    shop.fake.on_request = refuse_the_refund
    refused = act(staff, number, "cancel", reason="Wrong amount", request_key="x")

    assert refused.status_code == 409, page_text(refused)
    assert "Nothing was cancelled" in page_text(refused)
    first = order_of(app, number)
    assert (first["status"], first["refunds"]) == (S.PENDING, [(TOTAL - 1, RefundStatus.FAILED)])
    assert not shop.fake.refunds

    response = act(staff, number, "cancel", reason="Wrong amount", request_key="y")
    shop.fake.wait_for_deliveries()

    assert response.status_code == 303, page_text(response)
    assert [refund["amount"] for refund in shop.fake.refunds.values()] == [TOTAL - 1]
    after = order_of(app, number)
    assert after["status"] is S.CANCELLED
    assert after["refunds"] == [
        (TOTAL - 1, RefundStatus.FAILED),
        (TOTAL - 1, RefundStatus.SUCCEEDED),
    ]
    assert after["flagged"] is False  # neither the amount nor the refused refund is left
    assert stock(app) == (3, 0)


def test_staff_cancel_of_an_order_whose_payment_page_stripe_cant_close_waits(
    shop: Shop, app: Flask
) -> None:
    """The order's payment page is open and Stripe can't be reached to close it: nothing is
    cancelled, for the customer could still pay there. Before, its piece went back on sale and
    a payment after it found the piece perhaps sold again."""
    number, _ = buy(shop, pay=None)
    staff = staff_client(shop.app)
    reserved = stock(app)
    shop.fake.down()

    unsure = act(staff, number, "cancel", reason="Duplicate", request_key="c")

    assert unsure.status_code == 503, page_text(unsure)
    assert "where the customer could still pay: nothing was cancelled" in page_text(unsure)
    assert order_of(app, number)["status"] is S.PENDING
    assert stock(app) == reserved
    shop.fake.up()
    assert act(staff, number, "cancel", reason="Duplicate", request_key="d").status_code == 303
    assert order_of(app, number)["status"] is S.CANCELLED


def test_staff_cancel_of_an_order_whose_payment_page_stripe_wont_close_waits(
    shop: Shop, app: Flask
) -> None:
    """Stripe answered the close with an error of its own, and its look-up says the page is
    still open: the order was cancelled all the same and its piece put back on sale, while
    the customer could still pay there (found by review). Nothing is cancelled now."""
    number, _ = buy(shop, pay=None)
    staff = staff_client(shop.app)
    reserved = stock(app)
    shop.fake.fail_next(500, should_retry=False)  # the page's closing, once

    unsure = act(staff, number, "cancel", reason="Duplicate", request_key="c")

    assert unsure.status_code == 503, page_text(unsure)
    assert "where the customer could still pay: nothing was cancelled" in page_text(unsure)
    assert order_of(app, number)["status"] is S.PENDING
    assert stock(app) == reserved
    assert act(staff, number, "cancel", reason="Duplicate", request_key="d").status_code == 303
    assert order_of(app, number)["status"] is S.CANCELLED


def test_staff_cancel_refuses_when_the_shopper_opens_a_payment_page_meanwhile(
    shop: Shop, app: Flask
) -> None:
    number, session_id = buy(shop, pay=None)
    # The order as the shopper's checkout leaves it just before Stripe answers: no page yet.
    force_status(app, number, S.PENDING, stripe_checkout_session_id=None)
    user_id, _ = create_staff(app)
    with shop.app.app_context():
        engine = db.engine
        order_id = db.session.scalars(select(Order.id).where(Order.number == number)).one()
        stored: list[str] = []

        def page_stored_before_the_lock(conn, cursor, statement, parameters, context, many):
            """The shopper's checkout stores its new page between staff's read and lock (on
            SQLite the lock is taken first by an UPDATE of the row: see take_turns_on_sqlite)."""
            locking = getattr(context.compiled.statement, "_for_update_arg", None) is not None
            if stored or not (locking or statement.startswith("UPDATE orders SET id=")):
                return
            stored.append(session_id)
            with engine.begin() as other:
                other.execute(
                    update(Order)
                    .where(Order.id == order_id)
                    .values(stripe_checkout_session_id=session_id)
                )

        event.listen(engine, "before_cursor_execute", page_stored_before_the_lock)
        try:
            with pytest.raises(ActionRefusedError, match="has just opened the payment page"):
                fulfilment.cancel_unpaid(
                    db.session,
                    order_id,
                    Staff(user_id=user_id, name="Kit Keeper"),
                    reason="Duplicate",
                    notify=False,
                )
        finally:
            event.remove(engine, "before_cursor_execute", page_stored_before_the_lock)
            db.session.rollback()
            db.session.remove()

    assert stored == [session_id]

    assert order_of(app, number)["status"] is S.PENDING
    assert shop.fake.session(session_id)["status"] == "open"
    assert stock(app) == (3, 1)
    assert bags(app)[0] == (True, [1])


def test_a_restock_count_that_is_not_a_plain_number_is_explained(shop: Shop, app: Flask) -> None:
    number, _ = buy(shop)
    with app.app_context():
        line_id = db.session.scalars(select(Order).where(Order.number == number)).one().lines[0].id
    staff = staff_client(shop.app)
    requests_before = len(shop.fake.requests)

    response = act(
        staff, number, "refund", amount="650", request_key="r", **{f"restock-{line_id}": "²"}
    )

    assert response.status_code == 422
    assert "Please check the pieces to put back on sale." in page_text(response)
    assert len(shop.fake.requests) == requests_before
    assert order_of(app, number)["refunds"] == []


@pytest.mark.parametrize("action", ["refund", "cancel"])
def test_a_form_key_that_no_page_of_ours_drew_is_refused_before_stripe(
    shop: Shop, app: Flask, action: str
) -> None:
    """The key becomes part of the refund's idempotency key, a column of bounded length: a
    crafted one is told to reload, never a database error, and Stripe is not asked."""
    number, _ = buy(shop)
    staff = staff_client(shop.app)
    requests_before = len(shop.fake.requests)

    for crafted in ("k" * 300, "no spaces or slashes/"):
        response = act(
            staff, number, action, amount="650", reason="Changed mind", request_key=crafted
        )
        assert response.status_code == 422
        assert "This form has expired: reload the page and try again." in page_text(response)
    assert len(shop.fake.requests) == requests_before
    assert order_of(app, number)["refunds"] == []
    assert order_of(app, number)["status"] is OrderStatus.PAID


def test_a_refund_retried_after_stripe_forgot_its_key_is_found_not_made_twice(
    shop: Shop, app: Flask
) -> None:
    """Stripe made the refund but its answer was lost; the retry comes more than a day later,
    when Stripe no longer knows the key. The refund is found among the payment's refunds by
    the key in its metadata: the customer is refunded once."""
    number, _ = buy(shop)
    staff = staff_client(shop.app)
    shop.app.config.update(STRIPE_TIMEOUT_SECONDS=1, STRIPE_MAX_NETWORK_RETRIES=0)
    stripe_gateway.close_client(shop.app)  # the next call builds one with these settings
    shop.fake.hang_next(2)  # the shop gives up waiting; Stripe carries on and refunds
    unsure = act(staff, number, "refund", amount="100", request_key="lost-answer")
    assert unsure.status_code == 503
    deadline = time.monotonic() + 10
    while not shop.fake.refunds and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(shop.fake.refunds) == 1
    assert order_of(app, number)["refunds"] == [(10000, RefundStatus.PENDING)]

    a_day_later = time.time() + 25 * 3600
    shop.fake.clock = lambda: a_day_later  # Stripe has forgotten the key
    with app.app_context():
        for refund in db.session.scalars(select(Refund)):
            refund.created_at = utcnow() - timedelta(hours=25)
        db.session.commit()
        db.session.remove()
    [form] = retry_forms(staff, number)
    retried = staff.post(str(form["action"]), data=form_fields(form))

    assert retried.status_code == 303, page_text(retried)
    assert len(shop.fake.refunds) == 1
    [made] = shop.fake.refunds.values()
    after = order_of(app, number)
    assert after["refunds"] == [(10000, RefundStatus.SUCCEEDED)]
    assert after["refunded"] == 10000
    with app.app_context():
        assert db.session.scalars(select(Refund.stripe_refund_id)).one() == made["id"]
        db.session.remove()


def test_a_refund_stripe_never_had_is_not_retried_once_the_dashboard_gave_it_back(
    shop: Shop, app: Flask
) -> None:
    """Stripe was unreachable, so the refund of £100 never reached it. A member of staff then
    gave the £100 back in Stripe's dashboard, and Stripe's report of it read as that refund
    confirmed. "Retry refund" must not give it a second time: Stripe has no refund under its
    key and one made outside the shop since, so the retry is refused with what to check.
    Before, the customer got £200."""
    number, _ = buy(shop)
    staff = staff_client(shop.app)
    shop.fake.down()
    assert act(staff, number, "refund", amount="100", request_key="k").status_code == 503
    shop.fake.up()
    a_minute_later = time.time() + 60
    shop.fake.clock = lambda: a_minute_later  # staff open the dashboard
    shop.fake.refund_from_dashboard(intent_of(app, number), amount=10000)
    shop.fake.wait_for_deliveries()
    assert order_of(app, number)["refunded"] == 10000

    [form] = retry_forms(staff, number)
    retried = staff.post(str(form["action"]), data=form_fields(form))

    assert retried.status_code == 409, page_text(retried)
    assert "was refunded in Stripe's dashboard after this refund was asked" in page_text(retried)
    assert len(shop.fake.refunds) == 1
    after = order_of(app, number)
    assert after["refunds"] == [(10000, RefundStatus.FAILED)]
    assert after["refunded"] == 10000
    assert after["flagged"] is True
    # The report of the dashboard's £100 came while the refund waited and was taken for it:
    # the customer, given £100 back, was told nothing (found by review). She is told once.
    [told] = [e for e in sent_emails(app) if e.template == "order_refunded"]
    assert "£100" in told.body_text
    assert staff.post(str(form["action"]), data=form_fields(form)).status_code in (303, 409)
    shop.fake.refund_from_dashboard(intent_of(app, number), amount=5000)
    shop.fake.wait_for_deliveries()
    told = [e.body_text for e in sent_emails(app) if e.template == "order_refunded"]
    assert len(told) == 2  # the next is told as ever, and only it
    assert "£50" in told[1]


def test_the_rest_given_back_in_the_dashboard_while_a_refund_waited_is_told_as_the_rest(
    shop: Shop, app: Flask
) -> None:
    """£100 given back in the dashboard and told; staff refund the £550 left while Stripe is
    down; the dashboard gives it back meanwhile, and its report is taken for the refund.
    The retry is refused, and the customer was told £650 "refunded in full" on top of the
    £100: £750 of a £650 order (found by review). She is told of the £550."""
    number, _ = buy(shop)
    staff = staff_client(shop.app)
    shop.fake.refund_from_dashboard(intent_of(app, number), amount=10000)
    shop.fake.wait_for_deliveries()
    shop.fake.down()
    assert act(staff, number, "refund", amount="550", request_key="k").status_code == 503
    shop.fake.up()
    a_minute_later = time.time() + 60
    shop.fake.clock = lambda: a_minute_later
    shop.fake.refund_from_dashboard(intent_of(app, number), amount=55000)
    shop.fake.wait_for_deliveries()

    [form] = retry_forms(staff, number)
    assert staff.post(str(form["action"]), data=form_fields(form)).status_code == 409

    told = [e.body_text for e in sent_emails(app) if e.template == "order_refunded"]
    assert len(told) == 2
    assert "We have refunded £100 " in told[0]
    assert "We have refunded £550 " in told[1]
    assert order_of(app, number)["refunded"] == 65000


def test_the_shipped_email_keeps_the_gift_messages_lines(shop: Shop, app: Flask) -> None:
    """The gift message "travels with it", as typed: its lines ran together in the email's
    HTML (found by review)."""
    number, _ = buy(shop, gift_message="Dear Ada,\r\nHappy birthday! <3\r\nLove, Tom")
    staff = staff_client(shop.app)
    assert act(staff, number, "fulfil").status_code == 303
    assert act(staff, number, "ship", **SHIP).status_code == 303

    [email] = [e for e in sent_emails(app) if e.template == "order_shipped"]
    assert "Dear Ada,<br>\nHappy birthday! &lt;3<br>\nLove, Tom" in email.body_html


@pytest.mark.parametrize("notify", [True, False])
def test_a_retried_refund_tells_the_customer_as_the_first_form_asked(
    shop: Shop, app: Flask, notify: bool
) -> None:
    number, _ = buy(shop)
    staff = staff_client(shop.app)
    shop.fake.down()
    choice = {"notify": "y"} if notify else {}
    assert act(staff, number, "refund", amount="100", request_key="k", **choice).status_code == 503
    shop.fake.up()

    [form] = retry_forms(staff, number)
    assert staff.post(str(form["action"]), data=form_fields(form)).status_code == 303

    after = order_of(app, number)
    assert after["refunds"] == [(10000, RefundStatus.SUCCEEDED)]
    assert ("order_refunded" in after["emails"]) is notify


def line_of(app: Flask, number: str) -> int:
    """The id of the order's one line."""
    with app.app_context():
        order = db.session.scalars(select(Order).where(Order.number == number)).one()
        line_id = order.lines[0].id
        db.session.remove()
    return line_id


def nth_lock_of_an_order(n: int) -> Callable[[str], bool]:
    """For ``meanwhile``: the ``n``-th statement that locks an order (``lock_order``: its
    ``FOR UPDATE`` on PostgreSQL, the UPDATE that changes nothing on SQLite)."""
    locks: list[str] = []

    def locks_an_order(sql: str) -> bool:
        if ("FOR UPDATE" in sql and "FROM orders" in sql) or sql.startswith(
            "UPDATE orders SET id=orders.id"
        ):
            locks.append(sql)
        return len(locks) == n

    return locks_an_order


def stripes_latest_report(shop: Shop) -> None:
    """For ``meanwhile``: Stripe's latest ``charge.refunded``, held back, delivered now (from
    another window)."""
    [event] = shop.fake.events_of_type("charge.refunded")[-1:]
    in_another_window(lambda: shop.fake.deliver(event["id"]))


def paid_after_it_ended(shop: Shop, app: Flask, ended: OrderStatus) -> tuple[str, str]:
    """A bank payment that arrives after its order has ended unpaid: cancelled by staff while
    the transfer was on its way, or failed (Stripe reported the failure, then the money after
    all). Its number and payment intent."""
    assert ended in (S.CANCELLED, S.PAYMENT_FAILED)
    number, session_id = buy(shop, pay="bank")
    if ended is S.CANCELLED:
        staff = staff_client(shop.app, "first@elysium.example")
        cancelled = act(staff, number, "cancel", reason="No transfer", request_key="c")
        assert cancelled.status_code == 303, page_text(cancelled)
    else:
        shop.fake.bank_payment_fails(session_id)
        assert order_of(app, number)["status"] is S.PAYMENT_FAILED
        intent = shop.fake.session(session_id)["payment_intent"]
        shop.fake.payment_intents[intent]["status"] = "processing"  # the bank tried again
    shop.fake.bank_payment_succeeds(session_id)
    late = order_of(app, number)
    assert (late["status"], late["flagged"], stock(app)) == (ended, True, (3, 0))
    return number, shop.fake.session(session_id)["payment_intent"]


@pytest.mark.parametrize(
    ("ended", "then_cancelled"),
    [(S.CANCELLED, False), (S.PAYMENT_FAILED, False), (S.PAYMENT_FAILED, True)],
    ids=["cancelled", "payment_failed", "payment_failed_then_cancelled"],
)
def test_a_payment_that_came_after_its_order_ended_is_given_back_once_by_staff(
    shop: Shop, app: Flask, ended: OrderStatus, then_cancelled: bool
) -> None:
    """Before, the flag said "refund it", but the back office had no way to: it was done in
    Stripe's dashboard. Now the order's page gives it back through Stripe, once, whatever is
    sent twice or while Stripe is down, and the order stays as it ended. An order whose bank
    payment failed, paid after all, then cancelled, still wears the failure's flag, and can
    still give the money back."""
    number, payment_intent = paid_after_it_ended(shop, app, ended)
    staff = staff_client(shop.app)
    if then_cancelled:
        cancelled = act(staff, number, "cancel", reason="Tidy up", request_key="t")
        assert cancelled.status_code == 303, page_text(cancelled)
        ended = S.CANCELLED
    page = Page(staff.get(f"/staff/orders/{number}"))
    assert page.one("#action-give-back")
    assert "Nothing more to do" not in text_of(page)

    shop.fake.down()
    unsure = act(staff, number, "give-back", reason="Piece sold again", notify="y")
    assert unsure.status_code == 503, page_text(unsure)
    assert order_of(app, number)["flagged"] is True
    shop.fake.up()

    given = act(staff, number, "give-back", reason="Piece sold again", notify="y")
    again = act(staff, number, "give-back", reason="Piece sold again", notify="y")
    shop.fake.wait_for_deliveries()  # Stripe's charge.refunded, which only confirms it

    assert given.status_code == 303, page_text(given)
    assert again.status_code == 409
    assert "holds no money to give back: it is" in page_text(again)
    refunds = [(r["amount"], r["payment_intent"]) for r in shop.fake.refunds.values()]
    assert refunds == [(TOTAL, payment_intent)]
    after = order_of(app, number)
    assert after["status"] is ended
    assert after["refunds"] == [(TOTAL, RefundStatus.SUCCEEDED)]
    assert after["refunded"] == TOTAL
    assert after["flagged"] is False
    assert after["emails"].count("order_refunded") == 1
    notes = [note for *_, note in after["events"]]
    assert "The money held after the order had ended is refunded: Piece sold again" in notes
    assert stock(app) == (3, 0)  # its piece went back on sale when the order ended, once
    [email] = [e for e in sent_emails(app) if e.template == "order_refunded"]
    assert f"We have refunded £650 for your order {number}." in email.body_text
    page = Page(staff.get(f"/staff/orders/{number}"))
    assert not page.select("#action-give-back")


def test_giving_back_a_late_payment_needs_a_reason_and_keeps_what_was_ticked(
    shop: Shop, app: Flask
) -> None:
    number, _ = paid_after_it_ended(shop, app, S.CANCELLED)
    staff = staff_client(shop.app)

    refused = act(staff, number, "give-back", reason="  ", notify="")

    assert refused.status_code == 422
    assert field_error(Page(refused), "give-back-reason") == "Say why, for the order's record."
    assert "notify" not in form_fields(Page(refused).one('form[action$="/give-back"]'))
    assert shop.fake.refunds == {}
    assert order_of(app, number)["flagged"] is True


@pytest.mark.parametrize("status", [S.CANCELLED, S.PAID, "refused"])
def test_an_order_with_no_money_held_has_nothing_to_give_back(
    shop: Shop, app: Flask, status: OrderStatus | str
) -> None:
    """Nor does one whose payment the shop refused (a stale tab's form): Cancel gives that
    back. Before, the give-back refunded it at Stripe, then answered 409, the order left
    waiting."""
    if status == "refused":
        number, _ = refused_payment(shop, app)
        status = S.PENDING
    else:
        number = order_in(shop, app, status)
    staff = staff_client(shop.app)

    refused = act(staff, number, "give-back", reason="By mistake", notify="y")

    assert refused.status_code == 409
    assert "holds no money to give back" in page_text(refused)
    assert shop.fake.refunds == {}
    assert order_of(app, number)["status"] is status


def test_a_refund_that_fails_before_the_shop_wrote_stripes_answer_is_that_refund_failing(
    shop: Shop, app: Flask
) -> None:
    """Stripe accepted the refund, the worker stopped before writing that answer, then the
    refund failed at Stripe. Its ``refund.failed`` was filed as a second refund "made in
    Stripe's dashboard" holding Stripe's id, so the shop's own stayed PENDING for good: every
    Retry answered 500 (the id taken), the order could not be cancelled, and no refund could
    be made again. It is now the shop's refund that failed, found by the key it gave Stripe."""
    number, _ = buy(shop)
    staff = staff_client(shop.app)
    shop.fake.auto_deliver = False
    line_id = line_of(app, number)

    with meanwhile(shop.app, "UPDATE refunds", stop) as ran, pytest.raises(WorkerStoppedError):
        act(staff, number, "refund", amount="100", request_key="r", **{f"restock-{line_id}": "1"})
    assert ran
    assert stock(app) == (2, 0)
    [refund] = shop.fake.refunds.values()
    shop.fake.fail_refund(refund["id"])
    for reported in ("charge.refunded", "refund.failed"):
        [event] = shop.fake.events_of_type(reported)
        assert shop.fake.deliver(event["id"]).status == 200

    after = order_of(app, number)
    assert after["refunds"] == [(10000, RefundStatus.FAILED)]
    assert (after["status"], after["refunded"], after["flagged"]) == (S.PAID, 0, True)
    assert retry_forms(staff, number) == []
    # Stripe had accepted it: its piece went back on sale, as an accepted refund's does, and
    # the order no longer says it waits for Stripe's answer (a flag no note could settle).
    assert stock(app) == (3, 0)
    assert fulfilment.REFUND_AWAITED_FLAG not in page_text(staff.get(f"/staff/orders/{number}"))
    assert "Up to £650 can be refunded." in page_text(staff.get(f"/staff/orders/{number}"))
    again = act(staff, number, "refund", amount="100", reason="Scratch", request_key="s")
    assert again.status_code == 303, page_text(again)
    assert order_of(app, number)["refunded"] == 10000


@pytest.mark.parametrize(
    ("dashboard_seconds", "refused_for"),
    [
        # Stripe's times are to the second: made in the second the shop's refund was written,
        # the dashboard's refund is not known to be later, so Stripe is asked and refuses.
        (-2, "already been refunded"),
        # A second later, the shop sees it in Stripe's list and refuses without asking.
        (+2, "£650 was refunded in Stripe's dashboard after this refund was asked"),
    ],
    ids=["same_second", "a_second_later"],
)
def test_a_refund_refused_because_the_dashboard_gave_it_all_back_meanwhile_refunds_the_order(
    shop: Shop, app: Flask, dashboard_seconds: int, refused_for: str
) -> None:
    """Staff refund the whole payment as someone gives it all back in Stripe's dashboard.
    Stripe's report came while the shop's refund waited, and was taken for it; then Stripe
    refused the shop's (nothing left). The order stayed PAID, given back in full, and the
    shopper was never told. It is now refunded in full at Stripe, and the shopper emailed,
    whichever side of a second's boundary the dashboard's refund falls (CI once found the
    second one, which the test had left to chance)."""
    number, _ = buy(shop)
    staff = staff_client(shop.app)
    payment_intent = intent_of(app, number)

    def dashboard() -> None:
        made_at = time.time() + dashboard_seconds
        shop.fake.clock = lambda: made_at
        in_another_window(lambda: shop.fake.refund_from_dashboard(payment_intent))

    # The shop's refund is written (PENDING) and about to be asked of Stripe.
    with meanwhile(shop.app, lambda sql: "WHERE refunds.id = " in sql, dashboard) as ran:
        refused = act(staff, number, "refund", amount="650", reason="Returned", request_key="r")

    assert ran
    assert refused.status_code == 409
    assert refused_for in page_text(refused)
    after = order_of(app, number)
    assert (after["status"], after["refunded"]) == (S.REFUNDED, TOTAL)
    assert after["refunds"] == [(TOTAL, RefundStatus.FAILED)]
    [email] = [e for e in sent_emails(app) if e.template == "order_refunded"]
    assert f"We have refunded £650 for your order {number}." in email.body_text
    # The refusal is nothing to look into (before, it stayed flagged); the chain is, if it is
    # still here: Stripe's report can't say which pieces go back on sale, as the form would.
    assert after["flagged"] is True
    assert attention_of(app, number) == payments.PIECES_STILL_HERE_FLAG


def attention_of(app: Flask, number: str) -> str:
    with app.app_context():
        found = db.session.scalar(select(Order.attention_reason).where(Order.number == number))
        db.session.remove()
    return found or ""


def test_a_retried_refund_that_failed_at_stripe_is_never_taken_for_one_made_elsewhere(
    shop: Shop, app: Flask
) -> None:
    """A full refund was accepted, the worker stopped before writing that, the refund failed
    at Stripe and only Stripe's earlier report of it (``charge.refunded``) has come. Retry
    finds it failed: before, that report was then taken for a refund made in the dashboard,
    so the order was marked refunded in full and the shopper told so, with nothing given."""
    number, _ = buy(shop)
    staff = staff_client(shop.app)
    shop.fake.auto_deliver = False

    with meanwhile(shop.app, "UPDATE refunds", stop) as ran, pytest.raises(WorkerStoppedError):
        act(staff, number, "refund", amount="650", reason="Returned", request_key="r")
    assert ran
    [refund] = shop.fake.refunds.values()
    shop.fake.fail_refund(refund["id"])
    [report] = shop.fake.events_of_type("charge.refunded")
    assert shop.fake.deliver(report["id"]).status == 200

    [form] = retry_forms(staff, number)
    retried = staff.post(str(form["action"]), data=form_fields(form))
    assert retried.status_code == 409
    assert "Stripe says the refund failed" in page_text(retried)
    [failed] = shop.fake.events_of_type("refund.failed")
    assert shop.fake.deliver(failed["id"]).status == 200

    after = order_of(app, number)
    assert (after["status"], after["refunded"]) == (S.PAID, 0)
    assert "order_refunded" not in after["emails"]
    assert "Up to £650 can be refunded." in page_text(staff.get(f"/staff/orders/{number}"))


def test_a_give_back_left_unconfirmed_is_retried_then_given_again_to_settle(
    shop: Shop, app: Flask
) -> None:
    """Its Retry said "Cancel the order again", which the cancelled order refused."""
    number, _ = paid_after_it_ended(shop, app, S.CANCELLED)
    staff = staff_client(shop.app)

    with meanwhile(shop.app, "UPDATE refunds", stop) as ran, pytest.raises(WorkerStoppedError):
        act(staff, number, "give-back", reason="Piece sold again", notify="y")
    assert ran
    assert not Page(staff.get(f"/staff/orders/{number}")).select("#action-give-back")
    [form] = retry_forms(staff, number)
    retried = staff.post(str(form["action"]), data=form_fields(form), follow_redirects=True)
    assert "Give it back again to settle the order." in page_text(retried)
    assert "Cancel the order again" not in page_text(retried)

    settled = act(staff, number, "give-back", reason="Piece sold again", notify="y")
    shop.fake.wait_for_deliveries()

    assert settled.status_code == 303, page_text(settled)
    assert len(shop.fake.refunds) == 1
    after = order_of(app, number)
    assert (after["status"], after["refunded"], after["flagged"]) == (S.CANCELLED, TOTAL, False)
    assert after["emails"].count("order_refunded") == 1


@pytest.mark.parametrize("action", ["refund", "cancel"])
def test_money_back_with_the_shop_after_a_refund_failed_on_an_ended_order_is_given_back(
    shop: Shop, app: Flask, action: str
) -> None:
    """The order was refunded in full (or cancelled, which refunds it), then the refund failed
    at Stripe (a closed card): the money is back with the shop, and the order has ended, so
    nothing it offered could give it back (Refund, Cancel and Give back were all refused)."""
    number, _ = buy(shop)
    staff = staff_client(shop.app)
    # £100 given back first (a scratch), then the rest as the order is refunded or cancelled.
    assert act(staff, number, "refund", amount="100", request_key="s").status_code == 303
    data = {"amount": "550"} if action == "refund" else {}
    done = act(staff, number, action, reason="Returned", request_key="r", **data)
    assert done.status_code == 303, page_text(done)
    shop.fake.wait_for_deliveries()
    [_, rest] = shop.fake.refunds.values()
    shop.fake.fail_refund(rest["id"])
    shop.fake.wait_for_deliveries()
    ended = order_of(app, number)
    assert (ended["refunded"], ended["flagged"]) == (10000, True)
    assert Page(staff.get(f"/staff/orders/{number}")).one("#action-give-back")

    given = act(staff, number, "give-back", reason="New card details", notify="y")
    shop.fake.wait_for_deliveries()

    assert given.status_code == 303, page_text(given)
    refunds = [(r["amount"], r["status"]) for r in shop.fake.refunds.values()]
    assert refunds == [(10000, "succeeded"), (55000, "failed"), (55000, "succeeded")]
    after = order_of(app, number)
    assert after["status"] is ended["status"]
    assert (after["refunded"], after["flagged"]) == (TOTAL, False)
    notes = [note for *_, note in after["events"]]
    assert "The money held after the order had ended is refunded: New card details" in notes
    assert "not through the shop" not in " ".join(notes)


def test_part_given_back_in_stripes_dashboard_and_the_rest_here_refunds_the_order_at_once(
    shop: Shop, app: Flask
) -> None:
    """£200 was given back in Stripe's dashboard, then staff refunded the other £450 here.
    The order stayed PAID, offering £450 more, until Stripe next reported; that report then
    emailed the shopper the £450 a second time."""
    number, _ = buy(shop)
    shop.fake.refund_from_dashboard(intent_of(app, number), amount=20000)
    staff = staff_client(shop.app)
    assert order_of(app, number)["refunded"] == 20000

    rest = act(staff, number, "refund", amount="450", request_key="r", notify="y")
    assert rest.status_code == 303, page_text(rest)
    after = order_of(app, number)
    assert (after["status"], after["refunded"]) == (S.REFUNDED, TOTAL)

    shop.fake.wait_for_deliveries()  # Stripe's report of the £450
    after = order_of(app, number)
    assert (after["status"], after["refunded"]) == (S.REFUNDED, TOTAL)
    # Each part told once: the dashboard's £200 as Stripe reported it, then the £450.
    told = [e.body_text for e in sent_emails(app) if e.template == "order_refunded"]
    assert len(told) == 2
    assert f"We have refunded £200 for your order {number}." in told[0]
    assert f"We have refunded £450 for your order {number}." in told[1]


def test_a_second_refund_failing_after_a_give_back_is_given_back_too(
    shop: Shop, app: Flask
) -> None:
    """Refunded £200 then £450; the £200 failed and was given back; then the £450 failed too.
    The next give-back found the first one's refund under the payment's key and asked
    nothing, then refused: "must be refunded first", for good."""
    number, _ = buy(shop)
    staff = staff_client(shop.app)
    assert act(staff, number, "refund", amount="200", request_key="a").status_code == 303
    assert act(staff, number, "refund", amount="450", request_key="b").status_code == 303
    shop.fake.wait_for_deliveries()
    first, second = shop.fake.refunds.values()
    shop.fake.fail_refund(first["id"])
    shop.fake.wait_for_deliveries()
    # Told by telephone: no email for this one.
    assert act(staff, number, "give-back", reason="New card").status_code == 303
    shop.fake.wait_for_deliveries()
    shop.fake.fail_refund(second["id"])
    shop.fake.wait_for_deliveries()

    again = act(staff, number, "give-back", reason="New card again", notify="y")
    shop.fake.wait_for_deliveries()

    assert again.status_code == 303, page_text(again)
    given = [(r["amount"], r["status"]) for r in shop.fake.refunds.values()]
    assert given == [
        (20000, "failed"),
        (45000, "failed"),
        (20000, "succeeded"),
        (45000, "succeeded"),
    ]
    after = order_of(app, number)
    assert (after["status"], after["refunded"], after["flagged"]) == (S.REFUNDED, TOTAL, False)
    # The second is emailed, and the first, which staff chose not to email, is not then.
    told = [e.body_text for e in sent_emails(app) if e.template == "order_refunded"]
    assert len(told) == 1
    assert f"We have refunded £450 for your order {number}." in told[0]


def test_a_dashboard_refund_that_fails_while_the_shops_is_asked_is_not_counted_given(
    shop: Shop, app: Flask
) -> None:
    """£200 given back in the dashboard, then £450 here; the dashboard's failed between
    Stripe's answer and the shop writing it. The list read before counted it, and the order
    was made refunded in full with £200 back with the shop."""
    number, _ = buy(shop)
    staff = staff_client(shop.app)
    shop.fake.refund_from_dashboard(intent_of(app, number), amount=20000)
    [dashboard] = shop.fake.refunds.values()

    def fails() -> None:
        in_another_window(lambda: shop.fake.fail_refund(dashboard["id"]))

    # The refund's answer is about to be applied: the order's second lock (the first wrote
    # the refund), once Stripe has answered.
    with meanwhile(shop.app, nth_lock_of_an_order(2), fails) as ran:
        rest = act(staff, number, "refund", amount="450", request_key="r")
    shop.fake.wait_for_deliveries()

    assert ran
    assert rest.status_code == 303, page_text(rest)
    after = order_of(app, number)
    assert (after["status"], after["refunded"], after["flagged"]) == (S.PAID, 45000, True)


def test_stripes_report_while_the_shops_refund_waits_never_tells_the_shopper_twice(
    shop: Shop, app: Flask
) -> None:
    """£200 given back in the dashboard, then the £450 here, and Stripe's report of it came
    before the shop wrote Stripe's answer. The report made the order refunded (its refund
    still waiting) and emailed the £450, and the answer emailed it again."""
    number, _ = buy(shop)
    staff = staff_client(shop.app)
    shop.fake.refund_from_dashboard(intent_of(app, number), amount=20000)
    shop.fake.auto_deliver = False
    reporting: list[threading.Thread] = []

    def report() -> None:
        # Delivered from another window: it comes in, or waits on the order this refund
        # holds (then it comes in once the refund is written).
        [event] = shop.fake.events_of_type("charge.refunded")[-1:]
        reporting.append(threading.Thread(target=lambda: shop.fake.deliver(event["id"])))
        reporting[0].start()
        reporting[0].join(1)

    with meanwhile(shop.app, "UPDATE refunds", report) as ran:
        rest = act(staff, number, "refund", amount="450", request_key="r", notify="y")
    reporting[0].join(30)

    assert ran
    assert rest.status_code == 303, page_text(rest)
    after = order_of(app, number)
    assert (after["status"], after["refunded"]) == (S.REFUNDED, TOTAL)
    # The dashboard's £200 (emailed when Stripe reported it) and the £450, each once.
    told = [e.body_text for e in sent_emails(app) if e.template == "order_refunded"]
    assert [
        f"We have refunded {amount} for your order {number}." in text
        for amount, text in zip(("£200", "£450"), told, strict=True)
    ] == [True, True]


def test_a_dashboard_refund_made_while_the_shops_refund_waited_is_told(
    shop: Shop, app: Flask
) -> None:
    """Staff refunded £100 (not to be told) and the worker stopped once Stripe accepted it;
    meanwhile £200 was given back in Stripe's dashboard. Its report came while the shop's
    refund waited, so it only noted the total, and the Retry that found the £100 counted the
    £200 without a word: the shopper was never told of £200 given back. Each refund made
    outside the shop is now told from its own ``refund.created``."""
    number, _ = buy(shop)
    staff = staff_client(shop.app)
    with meanwhile(shop.app, "UPDATE refunds", stop) as ran, pytest.raises(WorkerStoppedError):
        act(staff, number, "refund", amount="100", request_key="r")
    assert ran
    shop.fake.refund_from_dashboard(intent_of(app, number), amount=20000)
    shop.fake.wait_for_deliveries()
    [form] = retry_forms(staff, number)
    assert staff.post(str(form["action"]), data=form_fields(form)).status_code == 303

    assert order_of(app, number)["refunded"] == 30000
    told = [e.body_text for e in sent_emails(app) if e.template == "order_refunded"]
    assert len(told) == 1
    assert f"We have refunded £200 for your order {number}." in told[0]


def test_the_rest_given_back_in_the_dashboard_is_told_as_refunding_the_order_in_full(
    shop: Shop, app: Flask
) -> None:
    """£100, then all that was left, given back in Stripe's dashboard: the £550 was told as
    "part of your order's total", the order refunded in full (found by review)."""
    number, _ = buy(shop)
    shop.fake.refund_from_dashboard(intent_of(app, number), amount=10000)
    a_minute_later = time.time() + 60
    shop.fake.clock = lambda: a_minute_later
    shop.fake.refund_from_dashboard(intent_of(app, number))
    shop.fake.wait_for_deliveries()

    assert order_of(app, number)["status"] is S.REFUNDED
    told = [e.body_text for e in sent_emails(app) if e.template == "order_refunded"]
    assert len(told) == 2
    assert "We have refunded £550 for your order" in told[1]
    assert "is now refunded in full" in told[1]


def refunds_told(app: Flask) -> list[str]:
    """The words of the shopper's refund and cancellation emails, each of which tells refunds."""
    told = ("order_refunded", "order_cancelled")
    return [e.body_text for e in sent_emails(app) if e.template in told]


def a_cancel_waiting_on_stripe(shop: Shop) -> tuple[str, ShopClient, float]:
    """A paid order staff cancelled (the customer to be told) while Stripe was down, its
    refund waiting; Stripe's clock a minute on, as a colleague opens its dashboard: the
    order's number, the staff member's browser and that minute."""
    number, _ = buy(shop)
    staff = staff_client(shop.app)
    shop.fake.down()
    waiting = act(staff, number, "cancel", reason="Customer asked", notify="y", request_key="c")
    assert waiting.status_code == 503
    shop.fake.up()
    a_minute_later = time.time() + 60
    shop.fake.clock = lambda: a_minute_later
    return number, staff, a_minute_later


def test_a_dashboard_refund_made_while_a_cancels_refund_waited_is_told_once(
    shop: Shop, app: Flask
) -> None:
    """Staff cancelled the paid order (the customer to be told) while Stripe was down, its
    refund waiting; a colleague gave the whole payment back in Stripe's dashboard, and the
    cancel, sent again, finished with nothing left to refund. The shopper read "We have
    refunded £650" twice: from the dashboard's refund and from the cancellation, which tells
    every refund (found by review)."""
    number, staff, _ = a_cancel_waiting_on_stripe(shop)
    shop.fake.refund_from_dashboard(intent_of(app, number))
    shop.fake.wait_for_deliveries()
    [form] = retry_forms(staff, number)
    assert staff.post(str(form["action"]), data=form_fields(form)).status_code == 409
    done = act(staff, number, "cancel", reason="Customer asked", notify="y", request_key="d")
    assert done.status_code == 303, page_text(done)

    assert order_of(app, number)["status"] is S.CANCELLED
    assert sum("We have refunded £650" in text for text in refunds_told(app)) == 1


def test_a_dashboard_refund_told_by_the_cancellation_is_not_told_again_when_its_word_is_late(
    shop: Shop, app: Flask
) -> None:
    """As above, Stripe's word of the dashboard's refund failing to come until the cancel had
    finished (it retries): the shopper read "We have refunded £650" from the cancellation,
    then again from the refund's own email (found by review)."""
    number, staff, a_minute_later = a_cancel_waiting_on_stripe(shop)
    shop.fake.auto_deliver = False
    shop.fake.refund_from_dashboard(intent_of(app, number))
    created = [e for e in shop.fake.pending if shop.fake.event(e)["type"] == "refund.created"]
    shop.fake.deliver_pending([e for e in shop.fake.pending if e not in created])
    shop.fake.auto_deliver = True
    with time_machine.travel(a_minute_later + 5):  # the shop's clock agrees with Stripe's
        [form] = retry_forms(staff, number)
        assert staff.post(str(form["action"]), data=form_fields(form)).status_code == 409
        done = act(staff, number, "cancel", reason="Customer asked", notify="y", request_key="d")
        assert done.status_code == 303, page_text(done)
        shop.fake.deliver_pending(created)  # Stripe's retry
        shop.fake.wait_for_deliveries()

    assert order_of(app, number)["status"] is S.CANCELLED
    assert sum("We have refunded £650" in text for text in refunds_told(app)) == 1


def test_a_dashboard_refund_a_refund_here_counted_first_is_never_told_as_in_full(
    shop: Shop, app: Flask
) -> None:
    """£100 given back in the dashboard (told), then £300 there whose events came late;
    staff refunded £100 here, which read Stripe's list and counted the £300. The £300 was
    then told "Your order (£650) is now refunded in full", £150 still paid (found by
    review). Where the shop can't be sure, the email says the order's total alone."""
    number, _ = buy(shop)
    staff = staff_client(shop.app)
    start = time.time() - 600
    shop.fake.clock = lambda: start
    shop.fake.refund_from_dashboard(intent_of(app, number), amount=10000)
    shop.fake.wait_for_deliveries()
    shop.fake.clock = lambda: start + 60
    shop.fake.auto_deliver = False
    shop.fake.refund_from_dashboard(intent_of(app, number), amount=30000)
    late = list(shop.fake.pending)
    shop.fake.clock = time.time
    done = act(staff, number, "refund", amount="100", reason="Scratch", request_key="k")
    assert done.status_code == 303, page_text(done)
    ours = [e for e in shop.fake.pending if e not in late]
    shop.fake.deliver_pending(late + ours)
    shop.fake.auto_deliver = True

    assert order_of(app, number)["refunded"] == 50000
    told = [e.body_text for e in sent_emails(app) if e.template == "order_refunded"]
    assert len(told) == 2
    assert not any("refunded in full" in text for text in told)
    assert "We have refunded £300 for your order" in told[1]
    assert "Your order's total was £650." in told[1]


def test_money_given_back_in_the_dashboard_while_a_give_back_waited_is_told(
    shop: Shop, app: Flask
) -> None:
    """A payment came after its order was cancelled; staff pressed Give back, and while its
    refund waited on Stripe a colleague gave the £650 back in the dashboard (so Stripe
    refused the shop's). The refund's word was taken for a cancel under way and dropped: the
    shopper was never told her money came back (found by review)."""
    number, intent = paid_after_it_ended(shop, app, S.CANCELLED)
    staff = staff_client(shop.app)
    later: list[str] = []

    def colleague(method: str, path: str) -> None:
        if (method, path) == ("POST", "/v1/refunds") and not later:
            shop.fake.on_request = None
            shop.fake.auto_deliver = False
            shop.fake.refund_from_dashboard(intent)
            for event_id in list(shop.fake.pending):
                if shop.fake.event(event_id)["type"] == "refund.created":
                    shop.fake.deliver(event_id)  # comes while the shop's refund waits
                else:
                    later.append(event_id)
            shop.fake.auto_deliver = True

    shop.fake.on_request = colleague
    act(staff, number, "give-back", reason="Piece sold again", notify="y")
    shop.fake.deliver_pending(later)
    shop.fake.wait_for_deliveries()
    act(staff, number, "give-back", reason="Piece sold again", notify="y")
    shop.fake.wait_for_deliveries()

    assert order_of(app, number)["refunded"] == 65000
    told = [e.body_text for e in sent_emails(app) if e.template == "order_refunded"]
    assert sum("We have refunded £650" in text for text in told) == 1


def test_a_dashboard_refund_whose_report_comes_first_is_not_told_as_the_whole(
    shop: Shop, app: Flask
) -> None:
    """£400 of £650 given back in Stripe's dashboard, its report delivered before its own
    word (Stripe keeps no order): the report, made in the same second, was taken for money
    given back before it, and the shopper read "now refunded in full" with £250 still paid
    (found by the fuzzing review)."""
    number, _ = buy(shop)
    shop.fake.auto_deliver = False
    shop.fake.refund_from_dashboard(intent_of(app, number), amount=40000)
    [created] = shop.fake.events_of_type("refund.created")
    [reported] = shop.fake.events_of_type("charge.refunded")
    assert shop.fake.deliver(reported["id"]).status == 200
    assert shop.fake.deliver(created["id"]).status == 200

    [email] = [e.body_text for e in sent_emails(app) if e.template == "order_refunded"]
    assert "We have refunded £400 for your order" in email
    assert "refunded in full" not in email


def test_a_refund_left_waiting_then_the_order_cancelled_is_told_once(
    shop: Shop, app: Flask
) -> None:
    """Staff refunded £2 (to be told) while Stripe was down, then cancelled the order (to be
    told): the cancellation said "£650 in all: £2 …, £648 …", and the £2's Retry then said
    "We have refunded £2 … now refunded in full", £652 of a £650 order (found by the fuzzing
    review)."""
    number, _ = buy(shop)
    staff = staff_client(shop.app)
    form = {"amount": "2", "reason": "Scratch", "notify": "y", "request_key": "k"}
    shop.fake.down()
    assert act(staff, number, "refund", **form).status_code == 503
    shop.fake.up()
    cancelled = act(staff, number, "cancel", reason="Asked", notify="y", request_key="c")
    assert cancelled.status_code == 303, page_text(cancelled)
    assert act(staff, number, "refund", **form).status_code == 303
    shop.fake.wait_for_deliveries()

    told = [
        e.body_text for e in sent_emails(app) if e.template in ("order_refunded", "order_cancelled")
    ]
    said = [
        round(float(amount) * 100)
        for text in told
        for amount in re.findall(r"We have refunded £([\d.]+)", text)
    ]
    assert said == [TOTAL]


def test_money_given_back_again_in_the_dashboard_after_a_refund_there_failed_is_told_again(
    shop: Shop, app: Flask
) -> None:
    """£100 given back in Stripe's dashboard (told) failed; staff gave the £100 back there
    again. Stripe's total read £100 as before, and the shopper was told of money given back
    once per total reached, so the second £100, the one that reached her, was never told."""
    number, _ = buy(shop)
    shop.fake.refund_from_dashboard(intent_of(app, number), amount=10000)
    [first] = shop.fake.refunds.values()
    shop.fake.fail_refund(first["id"])
    a_minute_later = time.time() + 60
    shop.fake.clock = lambda: a_minute_later  # staff read the warning and give it again
    shop.fake.refund_from_dashboard(intent_of(app, number), amount=10000)
    shop.fake.wait_for_deliveries()

    assert order_of(app, number)["refunded"] == 10000
    told = [e.body_text for e in sent_emails(app) if e.template == "order_refunded"]
    assert len(told) == 2
    assert all(f"We have refunded £100 for your order {number}." in text for text in told)


@pytest.mark.parametrize("then", ["cancel", "refund"])
def test_a_refund_that_failed_then_given_back_by_a_later_one_leaves_nothing_held(
    shop: Shop, app: Flask, then: str
) -> None:
    """A £100 refund failed while the order was paid; then the order was cancelled (or the
    rest refunded), which gave everything back. Its warning stayed, and the order offered
    "Give back the money held", which wrote a £0 refund on the timeline."""
    number, _ = buy(shop)
    staff = staff_client(shop.app)
    assert act(staff, number, "refund", amount="100", request_key="a").status_code == 303
    shop.fake.wait_for_deliveries()
    [first] = shop.fake.refunds.values()
    shop.fake.fail_refund(first["id"])
    shop.fake.wait_for_deliveries()
    data = {"amount": "650"} if then == "refund" else {}
    assert act(staff, number, then, reason="Returned", request_key="b", **data).status_code == 303
    shop.fake.wait_for_deliveries()

    after = order_of(app, number)
    assert (after["refunded"], after["flagged"]) == (TOTAL, False)
    page = Page(staff.get(f"/staff/orders/{number}"))
    assert not page.select("#action-give-back")
    refused = act(staff, number, "give-back", reason="Just in case")
    assert refused.status_code == 409


def test_stripes_report_between_a_cancels_refund_and_the_cancel_never_strands_the_order(
    shop: Shop, app: Flask
) -> None:
    """£200 given back in the dashboard, then Cancel: its refund of the rest went through,
    and Stripe's report of the whole came before the cancel itself. The report made the order
    refunded in full, which can't be cancelled: its piece never went back on sale, and its
    "cancel it again" flag could never come off."""
    number, _ = buy(shop)
    staff = staff_client(shop.app)
    shop.fake.refund_from_dashboard(intent_of(app, number), amount=20000)
    shop.fake.auto_deliver = False

    # Cancel's third lock of the order: after the refund was written and answered.
    with meanwhile(shop.app, nth_lock_of_an_order(3), lambda: stripes_latest_report(shop)) as ran:
        cancelled = act(staff, number, "cancel", reason="Customer asked", request_key="c")

    assert ran
    assert cancelled.status_code == 303, page_text(cancelled)
    after = order_of(app, number)
    assert (after["status"], after["refunded"], after["flagged"]) == (S.CANCELLED, TOTAL, False)
    assert stock(app) == (3, 0)


def test_a_piece_put_back_on_sale_before_packing_is_not_packed_nor_said_sent(
    shop: Shop, app: Flask
) -> None:
    """Two chains paid; staff refunded one and put it back on sale, then fulfilled the
    order: the packing slip still said pack 2 (the workshop would send the piece now for
    sale again), and the shipped email said both were bought for £1,300 with no refund in
    it (found by the outside review)."""
    client = shop.client()
    add_chain(client, quantity=2)
    session_id = session_id_from(check_out(client).location)
    shop.fake.pay(session_id)
    shop.fake.wait_for_deliveries()
    with app.app_context():
        order = db.session.scalars(
            select(Order).where(Order.stripe_checkout_session_id == session_id)
        ).one()
        number, line_id = order.number, order.lines[0].id
        db.session.remove()
    staff = staff_client(shop.app)
    refund = {"amount": "650", "reason": "Wants one", f"restock-{line_id}": "1", "request_key": "r"}
    assert act(staff, number, "refund", **refund).status_code == 303
    assert act(staff, number, "fulfil").status_code == 303

    slip = Page(staff.get(f"/staff/orders/{number}/packing-slip"))
    assert [text_of(row.select("td")[0]) for row in slip.select(".packing-slip__line")] == ["1"]
    assert act(staff, number, "ship", **SHIP).status_code == 303
    [shipped] = [e for e in sent_emails(app) if e.template == "order_shipped"]
    assert "2: £1,300 (1 refunded, not sent)" in shipped.body_text
    assert "Total: £1,300, of which £650 refunded" in shipped.body_text


def test_a_cancel_sent_as_another_refund_lands_refunds_the_rest_and_cancels(
    shop: Shop, app: Flask
) -> None:
    """Two of the staff on one paid order: one refunds £100 as the other presses Cancel. The
    cancel worked out "the rest" (£650) before the refund landed and asked for that under the
    lock, where £550 was left: a 422 whose only message, "At most £550 can be refunded.", sat
    under the Refund form's empty Amount field, and nothing was cancelled (found by review)."""
    number, _ = buy(shop)
    canceller = staff_client(shop.app)
    refunder = staff_client(shop.app, "second@elysium.example")
    refund_form = Page(refunder.get(f"/staff/orders/{number}")).one(
        '#order-actions form[action$="/refund"]'
    )
    cancel_form = Page(canceller.get(f"/staff/orders/{number}")).one(
        '#order-actions form[action$="/cancel"]'
    )
    refunded: list[int] = []

    def refund_meanwhile() -> None:
        fields = {**form_fields(refund_form), "amount": "100", "reason": "Scratch"}
        in_another_window(
            lambda: refunded.append(
                refunder.post(str(refund_form["action"]), data=fields).status_code
            )
        )

    with meanwhile(shop.app, nth_lock_of_an_order(1), refund_meanwhile) as ran:
        response = canceller.post(
            str(cancel_form["action"]),
            data={**form_fields(cancel_form), "reason": "Customer changed her mind"},
        )
    shop.fake.wait_for_deliveries()

    assert ran
    assert refunded == [303]
    assert response.status_code == 303, (response.status_code, field_error(response, "amount"))
    after = order_of(app, number)
    assert after["status"] is S.CANCELLED
    assert after["refunded"] == TOTAL
    assert sorted(after["refunds"]) == [
        (10000, RefundStatus.SUCCEEDED),
        (TOTAL - 10000, RefundStatus.SUCCEEDED),
    ]


def test_a_paid_order_is_cancelled_with_a_reason_as_long_as_its_box_takes(
    shop: Shop, app: Flask
) -> None:
    """The cancel form's box takes 500 characters, and so does the cancel; but the refund it
    makes first was given the reason as "Order cancelled: <reason>", checked again against
    500: a reason of 484 to 500 characters was refused (found by review)."""
    number, _ = buy(shop)
    staff = staff_client(shop.app)
    reason = ("The customer rang: the ring was to be a surprise, and now it is not. " * 8)[:490]
    assert len(reason) == len(" ".join(reason.split())) == 490

    response = act(staff, number, "cancel", reason=reason, notify="y", request_key="long")
    shop.fake.wait_for_deliveries()

    assert response.status_code == 303, field_error(response, "cancel-reason")
    assert order_of(app, number)["status"] is S.CANCELLED


def test_a_reason_its_box_took_with_line_breaks_is_not_refused_as_too_long(
    shop: Shop, app: Flask
) -> None:
    """A browser counts a line break as one character against the box's maxlength (500) and
    sends it as two (CR LF) without JavaScript: ten lines the box took were refused with "Use
    at most 500 characters.", shown under the Cancel form's reason too (found by review)."""
    number, _ = buy(shop)
    staff = staff_client(shop.app)
    lines = [f"Line {n} of what the customer said on the phone".ljust(49, ".") for n in range(10)]
    assert len("\n".join(lines)) == 499  # as the box counts it: within maxlength="500"

    response = act(
        staff, number, "refund", amount="10", reason="\r\n".join(lines), request_key="lines"
    )

    assert response.status_code == 303, (
        field_error(response, "reason"),
        field_error(response, "cancel-reason"),
    )
    assert order_of(app, number)["refunds"] == [(1000, RefundStatus.SUCCEEDED)]


def test_a_refunds_message_shows_beside_the_refund_form_alone(shop: Shop, app: Flask) -> None:
    """Three forms on the panel have a reason: a refund refused for its reason showed the
    message under the Cancel form's reason too."""
    number, _ = buy(shop)
    staff = staff_client(shop.app)

    response = act(staff, number, "refund", amount="10", reason="x" * 501, request_key="long")

    assert response.status_code == 422
    assert field_error(response, "reason") == "Use at most 500 characters."
    assert field_error(response, "cancel-reason") == ""


@pytest.mark.parametrize("paying", ["card", "bank"])
def test_a_cancel_form_drawn_before_the_payment_came_is_read_again_before_refunding(
    shop: Shop, app: Flask, paying: str
) -> None:
    """Staff opened an order still on its payment page, whose Cancel says only "Its reserved
    pieces go back on sale", and pressed it after the shopper had paid: the paid order was
    refunded in full and cancelled, a refund nobody was shown, the shopper told their order
    was cancelled moments after paying for it (found by review). A cancel drawn for an
    unpaid order is refused once the order is paid, and the page drawn again says what
    cancelling it now does."""
    number, session_id = buy(shop, pay=None if paying == "card" else "bank")
    staff = staff_client(shop.app)
    page = Page(staff.get(f"/staff/orders/{number}"))
    form = page.one('#order-actions form[action$="/cancel"]')
    assert "Its reserved pieces go back on sale." in text_of(form)
    drawn = {**form_fields(form), "reason": "Abandoned checkout: the piece is wanted"}

    # The money arrives while the order's page is open.
    if paying == "card":
        shop.fake.pay(session_id)
    else:
        shop.fake.bank_payment_succeeds(session_id)
    assert order_of(app, number)["status"] is S.PAID

    response = staff.post(f"/staff/orders/{number}/cancel", data=drawn)

    assert response.status_code == 409
    assert "it has been paid since, and cancelling it now refunds the payment" in page_text(
        response
    )
    after = order_of(app, number)
    assert after["status"] is S.PAID
    assert after["refunds"] == []
    assert not shop.fake.refunds
    assert "order_cancelled" not in after["emails"]
    # Drawn again, the form says it refunds, and does.
    form = Page(staff.get(f"/staff/orders/{number}")).one('#order-actions form[action$="/cancel"]')
    assert "The rest of the payment is refunded through Stripe" in text_of(form)
    again = staff.post(
        f"/staff/orders/{number}/cancel",
        data={**form_fields(form), "reason": "Abandoned checkout: the piece is wanted"},
    )
    shop.fake.wait_for_deliveries()
    assert again.status_code == 303
    assert order_of(app, number)["status"] is S.CANCELLED


def test_a_shipped_order_being_given_back_in_full_is_refused_in_words_that_fit_it(
    shop: Shop, app: Flask
) -> None:
    """A shipped order's full refund, Stripe not yet answering. Marking it delivered was
    refused with "Cancel it to put its pieces back on sale" (a shipped order can't be
    cancelled), and a second refund with "it is paid"."""
    number = order_in(shop, app, S.SHIPPED)
    staff = staff_client(shop.app)
    shop.fake.down()
    full = {"amount": "650", "reason": "Returned", "request_key": "r1"}
    assert act(staff, number, "refund", **full).status_code == 503
    shop.fake.up()

    delivered = act(staff, number, "deliver", notify="y")
    again = act(staff, number, "refund", **{**full, "amount": "1", "request_key": "r2"})

    assert delivered.status_code == 409
    told = page_text(delivered)
    assert "can't be marked delivered: its payment is given back, or being given back." in told
    assert "Cancel it" not in told
    assert again.status_code == 409
    assert "can't be refunded: all of its payment is given back, or being given back." in (
        page_text(again)
    )
    assert order_of(app, number)["status"] is S.SHIPPED
