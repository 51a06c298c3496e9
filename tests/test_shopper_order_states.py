"""What a shopper reads about an order as staff move it along (in the workshop, shipped with a
courier, delivered, cancelled, refunded in part or in full): on their account's order page,
on the page the emailed link opens, and in the emails. Staff notes and reasons never show.

Orders are bought through the real checkout and paid through the fake Stripe; the later states
are then set in the database the way the staff actions set them.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import pytest
from flask import Flask
from jinja2 import StrictUndefined, Undefined
from sqlalchemy import select

from elysium.extensions import db
from elysium.models import Order, OrderStatus, Refund, RefundStatus
from elysium.money import format_money
from elysium.services import orders
from elysium.services.outbox import queue_email
from elysium.urls import absolute_url
from tests.conftest import (
    PASSWORD,
    ShopClient,
    create_user,
    link_in,
    page_text,
    sent_emails,
)
from tests.html import Page, elements, text_of
from tests.support.checkout import Shop, add_chain, check_out, session_id_from
from tests.support.staff import create_staff, staff_client

S = OrderStatus
SHOPPER = "grace@example.com"
STAFF_NAME = "Kit Keeper"
STAFF_NOTE = "internal: customer was rude"
STAFF_REASON = "internal: suspected fraud, say nothing"
GIFT = '<script>alert("x")</script> Love & kisses'
PRODUCT = 'Aurelia "Fine" Chain & Clasp <b>bold</b>'
SHIPPED_AT = datetime(2025, 12, 2, 10, 30, tzinfo=UTC)
REFUNDED_AT = datetime(2025, 12, 3, 9, 15, tzinfo=UTC)
DELIVERED_AT = datetime(2025, 12, 5, 14, 0, tzinfo=UTC)
ROYAL_MAIL = "Royal Mail Special Delivery"
# Built by hand from the courier's address: the space in the number is percent-encoded.
ROYAL_MAIL_LINK = (
    "https://www.royalmail.com/track-your-item#/tracking-results/AB%201234%205678%20GB"
)
SHIPPED = {
    "carrier": "royal-mail",
    "tracking_number": "AB 1234 5678 GB",
    "shipped_at": SHIPPED_AT,
}


@dataclass
class Bought:
    """A paid order: its number, the buyer's signed-in browser and the link in their email."""

    number: str
    total: int
    account: ShopClient
    emailed_link: str
    staff_id: int


@pytest.fixture
def bought(shop: Shop, app: Flask) -> Bought:
    with app.app_context():
        create_user(SHOPPER, first_name="Grace", last_name="Hopper")
        db.session.remove()
    staff_id, _ = create_staff(app)
    client = shop.client()
    client.submit("/auth/login", {"email": SHOPPER, "password": PASSWORD})
    add_chain(client)
    session_id = session_id_from(check_out(client, email=SHOPPER, gift_message=GIFT).location)
    shop.fake.pay(session_id)
    [confirmation] = [e for e in sent_emails(app, SHOPPER) if e.template == "order_confirmation"]
    with app.app_context():
        order = db.session.scalars(select(Order)).one()
        assert order.status is S.PAID
        number, total = order.number, order.total
        db.session.remove()
    return Bought(number, total, client, link_in(confirmation, "/orders/"), staff_id)


def move(app: Flask, bought: Bought, *statuses: OrderStatus, **fields: Any) -> None:
    """Staff move the order on (each move with an internal reason) and leave a note."""
    with app.app_context():
        order = _order(bought.number)
        for status in statuses:
            orders.transition_to(
                order, status, actor=STAFF_NAME, note=STAFF_REASON, actor_user_id=bought.staff_id
            )
        for name, value in fields.items():
            setattr(order, name, value)
        orders.add_note(order, STAFF_NOTE, actor=STAFF_NAME, actor_user_id=bought.staff_id)
        db.session.commit()
        db.session.remove()


def refund(
    app: Flask,
    bought: Bought,
    amount: int,
    status: RefundStatus = RefundStatus.SUCCEEDED,
    at: datetime = REFUNDED_AT,
) -> None:
    with app.app_context():
        order = _order(bought.number)
        order.refunds.append(
            Refund(
                amount=amount,
                currency=order.currency,
                reason=STAFF_REASON,
                status=status,
                idempotency_key=f"refund:{order.id}:{len(order.refunds)}",
                actor_user_id=bought.staff_id,
                created_at=at,
            )
        )
        if status is RefundStatus.SUCCEEDED:
            order.refunded_amount += amount
        db.session.commit()
        db.session.remove()


def _order(number: str) -> Order:
    return db.session.scalars(select(Order).where(Order.number == number)).one()


def order_pages(shop: Shop, bought: Bought) -> list[Page]:
    """The order as the signed-in buyer sees it, and through the emailed link in a fresh browser."""
    pages = []
    for response in (
        bought.account.get(f"/account/orders/{bought.number}"),
        shop.client().get(bought.emailed_link),
    ):
        assert response.status_code == 200
        pages.append(Page(response))
    return pages


def shopper_reads(page: Page) -> str:
    return text_of(page, ".order-detail")


def headline(page: Page) -> str:
    return text_of(page, ".order-detail__status .status")


def assert_nothing_internal(page: Page) -> None:
    """No staff note, reason or name anywhere on the page, markup included."""
    for secret in (STAFF_NOTE, STAFF_REASON, "internal:", STAFF_NAME):
        assert secret not in html.unescape(page.html)


def money(amount: int) -> str:
    return format_money(amount, "GBP")


@pytest.mark.parametrize(
    ("statuses", "fields", "expected_headline", "expected_words"),
    [
        ((), {}, "Paid", ["Payment received, thank you"]),
        (
            (S.FULFILLED,),
            {},
            "Being prepared in our workshop",
            ["Your piece is being finished and packed in our workshop"],
        ),
        (
            (S.FULFILLED, S.SHIPPED),
            SHIPPED,
            f"Shipped with {ROYAL_MAIL}",
            [
                f"Shipped with {ROYAL_MAIL} on 2 December 2025 — track it.",
                "Tracking number AB 1234 5678 GB",
                f"Sent with {ROYAL_MAIL}, insured and signed for",
            ],
        ),
        (
            (S.FULFILLED, S.SHIPPED, S.DELIVERED),
            {**SHIPPED, "delivered_at": DELIVERED_AT},
            "Delivered",
            ["Delivered on 5 December 2025", f"Shipped with {ROYAL_MAIL} on 2 December 2025"],
        ),
        ((S.CANCELLED,), {}, "Cancelled", ["This order was cancelled."]),
    ],
    ids=["paid", "fulfilled", "shipped", "delivered", "cancelled"],
)
def test_each_state_reads_in_plain_words_on_the_account_and_emailed_link_pages(
    shop: Shop, app: Flask, bought: Bought, statuses, fields, expected_headline, expected_words
) -> None:
    move(app, bought, *statuses, **fields)
    for page in order_pages(shop, bought):
        assert headline(page) == expected_headline
        text = shopper_reads(page)
        for words in expected_words:
            assert words in text
        assert "nothing was charged" not in text
        assert_nothing_internal(page)


@pytest.mark.parametrize(
    ("carrier", "number", "name", "link"),
    [
        ("royal-mail", "AB 1234 5678 GB", ROYAL_MAIL, ROYAL_MAIL_LINK),
        (
            "dhl",
            "JD014600006281230701",
            "DHL Express",
            "https://www.dhl.com/gb-en/home/tracking.html?tracking-id=JD014600006281230701",
        ),
    ],
)
def test_a_shipped_order_links_to_the_couriers_tracking_page(
    shop: Shop, app: Flask, bought: Bought, carrier, number, name, link
) -> None:
    move(
        app,
        bought,
        S.FULFILLED,
        S.SHIPPED,
        carrier=carrier,
        tracking_number=number,
        shipped_at=SHIPPED_AT,
    )
    for page in order_pages(shop, bought):
        [track] = [a for a in elements(page, ".order-detail a[href]") if a["href"] == link]
        assert " ".join(track.get_text().split()) == "track it"
        assert {"noopener", "noreferrer"} <= set(track["rel"])
        assert track["aria-label"] == f"Track it on the {name} website"
        assert f"Shipped with {name}" in shopper_reads(page)
        assert f"Tracking number {number}" in shopper_reads(page)

    listing = Page(bought.account.get("/account/orders"))
    assert text_of(listing, ".order-list__item .status") == f"Shipped with {name}"


def test_there_is_no_tracking_link_before_the_order_ships_or_after_a_full_refund(
    shop: Shop, app: Flask, bought: Bought
) -> None:
    move(app, bought, S.FULFILLED, tracking_number="AB 1234 5678 GB", carrier="royal-mail")
    for page in order_pages(shop, bought):
        assert not elements(page, ".order-detail a[rel]")
        assert "track it" not in shopper_reads(page)
    move(app, bought, S.SHIPPED, S.REFUNDED, shipped_at=SHIPPED_AT)
    for page in order_pages(shop, bought):
        assert not elements(page, ".order-detail a[rel]")


def test_a_cancelled_paid_order_shows_the_refund_but_never_the_reason(
    shop: Shop, app: Flask, bought: Bought
) -> None:
    move(app, bought, S.CANCELLED)
    refund(app, bought, bought.total)
    for page in order_pages(shop, bought):
        assert headline(page) == "Cancelled"
        text = shopper_reads(page)
        assert "This order was cancelled." in text
        assert f"{money(bought.total)} refunded on 3 December 2025" in text
        assert "nothing was charged" not in text
        assert_nothing_internal(page)


def cancelled_before_payment(shop: Shop, app: Flask) -> tuple[ShopClient, Order]:
    """A signed-in shopper checks out, then cancels on the way to Stripe's page: her browser
    and the order (detached)."""
    with app.app_context():
        create_user(SHOPPER)
        db.session.remove()
    client = shop.client()
    client.submit("/auth/login", {"email": SHOPPER, "password": PASSWORD})
    add_chain(client)
    check_out(client, email=SHOPPER)
    client.submit("/cart", {}, action="/checkout/cancel")
    with app.app_context():
        order = db.session.scalars(select(Order)).one()
        db.session.expunge(order)
        db.session.remove()
    return client, order


def paid_page(order: Order) -> dict[str, Any]:
    """Stripe's report of the order's payment page, paid in full."""
    session_id = order.stripe_checkout_session_id
    return {
        "id": session_id,
        "object": "checkout.session",
        "client_reference_id": order.number,
        "metadata": {"order_number": order.number},
        "amount_total": order.total,
        "currency": "gbp",
        "payment_status": "paid",
        "status": "complete",
        "payment_intent": f"pi_{session_id}",
    }


def stripe_reports(shop: Shop, event_type: str, obj: dict[str, Any]) -> None:
    """An event of Stripe's about ``obj``, signed, as its webhook delivers it."""
    payload, signature = shop.fake.signed_event(event_type, obj)
    answer = shop.app.test_client().post(
        "/webhooks/stripe",
        data=payload,
        headers={"Content-Type": "application/json", "Stripe-Signature": signature},
    )
    assert answer.status_code == 200


def test_an_order_cancelled_before_payment_says_nothing_was_charged(shop: Shop, app: Flask) -> None:
    client, order = cancelled_before_payment(shop, app)
    number = order.number

    page = Page(client.get(f"/account/orders/{number}"))

    assert headline(page) == "Cancelled"
    assert "This order was cancelled and nothing was charged." in shopper_reads(page)
    assert "refunded" not in shopper_reads(page)


def test_a_payment_that_arrives_after_the_order_was_cancelled_is_owned_up_to(
    shop: Shop, app: Flask
) -> None:
    """The order stays cancelled (staff refund it or sell the piece again), but the page no
    longer says nothing was charged, and the shopper is sent a receipt that promises
    nothing."""
    client, order = cancelled_before_payment(shop, app)
    number, session_id, total = order.number, order.stripe_checkout_session_id, order.total

    def stripe_says(event_type: str, obj: dict[str, Any]) -> None:
        stripe_reports(shop, event_type, obj)

    stripe_says("checkout.session.completed", paid_page(order))

    page = Page(client.get(f"/account/orders/{number}"))
    assert headline(page) == "Cancelled"
    text = shopper_reads(page)
    assert "nothing was charged" not in text
    assert "Your payment arrived after it was cancelled" in text
    assert_nothing_internal(page)
    receipt = sent_emails(app, SHOPPER)[-1]
    assert receipt.template == "payment_received"
    assert receipt.subject == f"Your payment for order {number} is received"
    assert f"we have received your payment of {money(total)} for order {number}" in (
        receipt.body_text
    )
    assert "nothing was charged" not in receipt.body_text

    # Staff give it back in Stripe's dashboard: the order stays cancelled, and says so.
    stripe_says(
        "charge.refunded",
        {
            "id": f"ch_{session_id}",
            "object": "charge",
            "payment_intent": f"pi_{session_id}",
            "amount_refunded": total,
            "metadata": {"order_number": number},
        },
    )
    stripe_says(
        "refund.created",
        {
            "id": f"re_{session_id}",
            "object": "refund",
            "charge": f"ch_{session_id}",
            "payment_intent": f"pi_{session_id}",
            "amount": total,
            "currency": "gbp",
            "status": "succeeded",
            "metadata": {},
        },
    )
    page = Page(client.get(f"/account/orders/{number}"))
    assert headline(page) == "Cancelled"
    assert "Your payment arrived after it was cancelled" not in shopper_reads(page)
    assert [text_of(item) for item in elements(page, ".order-refunds li")] == [
        f"{money(total)} refunded"
    ]
    refund = sent_emails(app, SHOPPER)[-1]
    assert refund.template == "order_refunded"
    assert f"We have refunded {money(total)} for your order {number}." in refund.body_text


def test_a_bank_payment_that_failed_then_arrived_says_so_and_once_refunded_no_more(
    shop: Shop, app: Flask, bought: Bought
) -> None:
    move(app, bought, status=S.PAYMENT_FAILED, paid_at=None, late_payment_at=REFUNDED_AT)
    for page in order_pages(shop, bought):
        text = shopper_reads(page)
        assert "Your bank payment first failed, then arrived after all." in text
        assert "we'll refund your payment" in text
        assert "Nothing was taken" not in text

    refund(app, bought, bought.total)
    for page in order_pages(shop, bought):
        text = shopper_reads(page)
        assert "arrived after all" in text
        assert "we'll refund your payment" not in text
        assert f"{money(bought.total)} refunded on 3 December 2025" in text


def test_a_partial_refund_shows_how_much_and_when_and_the_order_carries_on(
    shop: Shop, app: Flask, bought: Bought
) -> None:
    move(app, bought, S.FULFILLED, S.SHIPPED, S.DELIVERED, **SHIPPED, delivered_at=DELIVERED_AT)
    refund(app, bought, 25000)
    refund(app, bought, 10000, status=RefundStatus.FAILED)
    refund(app, bought, 5000, status=RefundStatus.PENDING, at=datetime(2025, 12, 4, tzinfo=UTC))

    for page in order_pages(shop, bought):
        assert headline(page) == "Delivered"
        refunds = [text_of(item) for item in elements(page, ".order-refunds li")]
        assert refunds == [
            "£250 refunded on 3 December 2025",
            "£50 refund issued on 4 December 2025, on its way to you",
        ]
        assert "£100" not in shopper_reads(page)
        totals = {
            text_of(row, "dt"): text_of(row, "dd") for row in elements(page, ".order-totals div")
        }
        assert totals["Refunded"] == "£250"
        assert_nothing_internal(page)

    listing = Page(bought.account.get("/account/orders"))
    assert text_of(listing, ".order-list__item .status") == "Delivered · £250 refunded"


def test_a_full_refund_reads_refunded_in_full(shop: Shop, app: Flask, bought: Bought) -> None:
    move(app, bought, S.FULFILLED, S.SHIPPED, **SHIPPED)
    refund(app, bought, 25000, at=datetime(2025, 12, 1, tzinfo=UTC))
    refund(app, bought, bought.total - 25000)
    move(app, bought, S.REFUNDED)

    for page in order_pages(shop, bought):
        assert headline(page) == "Refunded in full"
        assert "This order was refunded in full, to your original payment method." in (
            shopper_reads(page)
        )
        assert [text_of(item) for item in elements(page, ".order-refunds li")] == [
            "£250 refunded on 1 December 2025",
            f"{money(bought.total - 25000)} refunded on 3 December 2025",
        ]
        assert_nothing_internal(page)


def test_a_refund_made_in_stripes_dashboard_shows_and_is_emailed_with_its_amount(
    shop: Shop, app: Flask, bought: Bought
) -> None:
    with shop.app.app_context():
        intent = _order(bought.number).stripe_payment_intent_id
        db.session.remove()
    deliveries = shop.fake.refund_from_dashboard(intent)
    assert [d.status for d in deliveries if d.type in ("refund.created", "charge.refunded")] == [
        200,
        200,
    ]

    for page in order_pages(shop, bought):
        assert headline(page) == "Refunded in full"
        assert [text_of(item) for item in elements(page, ".order-refunds li")] == [
            f"{money(bought.total)} refunded"
        ]
    [email] = [e for e in sent_emails(app, SHOPPER) if e.template == "order_refunded"]
    assert f"We have refunded {money(bought.total)} for your order {bought.number}." in (
        email.body_text
    )
    assert "now refunded in full" in email.body_text


def test_a_partial_refund_made_in_stripes_dashboard_is_emailed_once(
    shop: Shop, app: Flask, bought: Bought
) -> None:
    """A full refund made in Stripe's dashboard was emailed; a partial one was only a note on
    the timeline: the shopper's money moved and nobody told them."""
    with shop.app.app_context():
        intent = _order(bought.number).stripe_payment_intent_id
        db.session.remove()
    deliveries = shop.fake.refund_from_dashboard(intent, amount=20000)
    [report] = [d for d in deliveries if d.type == "charge.refunded"]
    assert shop.fake.deliver(report.event_id).status == 200  # sent again: told once

    [email] = [e for e in sent_emails(app, SHOPPER) if e.template == "order_refunded"]
    assert f"We have refunded {money(20000)} for your order {bought.number}." in email.body_text
    assert "now refunded in full" not in email.body_text
    for page in order_pages(shop, bought):
        assert headline(page) == "Paid"


def refund_comes_back(shop: Shop, bought: Bought) -> None:
    """The order refunded in full in Stripe's dashboard, then the refund failed (a closed
    card): the money is back with the shop."""
    with shop.app.app_context():
        intent = _order(bought.number).stripe_payment_intent_id
        db.session.remove()
    shop.fake.refund_from_dashboard(intent)
    [refund_id] = list(shop.fake.refunds)
    shop.fake.fail_refund(refund_id)


def test_a_full_refund_that_fails_at_stripe_no_longer_reads_refunded(
    shop: Shop, app: Flask, bought: Bought
) -> None:
    """Refunded in full, then the refund failed at Stripe (a closed card): the money came back
    to the shop, whose staff give it back another way. The page still said "refunded in full,
    to your original payment method"."""
    refund_comes_back(shop, bought)

    for page in order_pages(shop, bought):
        assert headline(page) == "Refund to be arranged"
        text = shopper_reads(page)
        assert "refunded in full" not in text
        assert "it came back to us. We'll be in touch to give it back to you another way." in text
    listing = Page(bought.account.get("/account/orders"))
    assert text_of(listing, ".order-list__item .status") == "Refund to be arranged"


def test_a_bank_payment_that_failed_is_said_so_and_never_on_hold(shop: Shop, app: Flask) -> None:
    """The payment-failed email said "the order is on hold" of an order that can only be
    cancelled; the success page said "Nothing was taken" once the money arrived after all."""
    guest = shop.client()
    add_chain(guest)
    session_id = session_id_from(check_out(guest).location)
    shop.fake.pay_later(session_id)
    shop.fake.bank_payment_fails(session_id)
    [failed] = [e for e in sent_emails(app) if e.template == "payment_failed"]
    assert "on hold" not in failed.body_text + failed.body_html
    assert "nothing has been charged and the order won't be sent" in failed.body_text

    intent = shop.fake.session(session_id)["payment_intent"]
    shop.fake.payment_intents[intent]["status"] = "processing"  # the bank tried again
    shop.fake.bank_payment_succeeds(session_id)  # and the money arrived after all

    status = text_of(Page(guest.get(f"/checkout/success?session_id={session_id}")), "#order-status")
    assert "Nothing was taken" not in status
    assert "first failed, then arrived after all" in status


def test_the_account_lists_how_many_pieces_each_order_holds(shop: Shop, app: Flask) -> None:
    with app.app_context():
        create_user(SHOPPER)
        db.session.remove()
    client = shop.client()
    client.submit("/auth/login", {"email": SHOPPER, "password": PASSWORD})
    add_chain(client, quantity=3)
    shop.fake.pay(session_id_from(check_out(client, email=SHOPPER).location))

    listing = text_of(Page(client.get("/account/orders")), ".order-list__item")

    assert "3 pieces" in listing


# The emails staff actions queue. Rendered with StrictUndefined: a template that reads a name
# outside its documented context fails here instead of printing nothing.


def render(
    shop: Shop, bought: Bought, template: str, change: dict[str, Any] | None = None, **context: Any
) -> tuple[str, str, str]:
    """Queue ``template`` for the order (changed by ``change``, its first piece renamed to
    ``PRODUCT``) with ``order``, ``order_url`` and ``context``, as a staff action would; returns
    the text and HTML bodies and the order's link, and rolls everything back."""
    environment = shop.app.jinja_env
    environment.undefined = StrictUndefined
    try:
        with shop.app.test_request_context():
            order = _order(bought.number)
            order.lines[0].product_name = PRODUCT
            for name, value in (change or {}).items():
                setattr(order, name, value)
            order_url = absolute_url(
                "orders.detail", number=order.number, token=orders.guest_link_token(order)
            )
            email = queue_email(
                db.session,
                to=order.email,
                subject=f"Your order {order.number}",
                template=template,
                context={"order": order, "order_url": order_url, **context},
                user_id=order.user_id,
                order_id=order.id,
                dedupe_key=f"order:{order.id}:{template}",
            )
            rendered = (email.body_text, email.body_html, order_url)
            db.session.rollback()
            db.session.remove()
            return rendered
    finally:
        environment.undefined = Undefined


def assert_safe(text: str, html: str) -> None:
    """Names with '&' read as written in the text; the HTML shows markup, never runs it."""
    for entity in ("&amp;", "&lt;", "&gt;", "&quot;", "&#"):
        assert entity not in text
    assert "<script>" not in html
    assert "<b>bold</b>" not in html
    assert "Chain & Clasp <b>bold</b>" in text
    assert "Chain & Clasp <b>bold</b>" in text_of(Page(html))


def test_the_shipped_email_names_the_carrier_and_links_to_the_tracking_page(
    shop: Shop, bought: Bought
) -> None:
    text, html, order_url = render(
        shop,
        bought,
        "order_shipped",
        change=SHIPPED,
        carrier_name=ROYAL_MAIL,
        tracking_link=ROYAL_MAIL_LINK,
    )
    assert f"on its way with {ROYAL_MAIL}" in text
    assert f"Track your parcel: {ROYAL_MAIL_LINK}" in text
    assert "Tracking number: AB 1234 5678 GB" in text
    assert f'\n\nYour gift message travels with it:\n"{GIFT}"\n\n' in text
    assert order_url in text
    page = Page(html)
    assert f"on its way with {ROYAL_MAIL}" in text_of(page)
    assert [a.get_text() for a in elements(page, f'a[href="{ROYAL_MAIL_LINK}"]')] == [
        "Track your parcel"
    ]
    assert elements(page, f'a[href="{order_url}"]')
    assert GIFT in text_of(page)
    assert_safe(text, html)


def test_the_delivered_email_says_when(shop: Shop, bought: Bought) -> None:
    text, html, order_url = render(
        shop,
        bought,
        "order_delivered",
        change={"delivered_at": DELIVERED_AT},
        delivered_on=date(2025, 12, 5),
    )
    sentence = f"Your order {bought.number} was delivered on 5 December 2025."
    assert sentence in text
    assert sentence in text_of(Page(html))
    assert order_url in text
    assert_safe(text, html)


def test_the_cancelled_email_tells_the_refund_and_never_the_reason(
    shop: Shop, app: Flask, bought: Bought
) -> None:
    move(app, bought, S.CANCELLED)
    total = money(bought.total)
    text, html, order_url = render(
        shop,
        bought,
        "order_cancelled",
        total=total,
        refunded_amount=total,
        money_taken=True,
        back_in_bag=False,
    )
    for body in (text, text_of(Page(html))):
        assert f"Your order {bought.number} ({total}) has been cancelled." in body
        assert f"We have refunded {total} to your original payment method." in body
        assert STAFF_REASON not in body
        assert "nothing has been charged" not in body
    assert order_url in text

    text, html, _ = render(
        shop,
        bought,
        "order_cancelled",
        total=total,
        refunded_amount=None,
        money_taken=True,
        back_in_bag=False,
    )
    assert "has been cancelled" in text
    assert "We have refunded" not in text
    assert "We have refunded" not in html


def test_a_checkout_that_expires_unpaid_is_cancelled_by_email_with_nothing_charged(
    shop: Shop, app: Flask
) -> None:
    client = shop.client()
    add_chain(client)
    shop.fake.expire(session_id_from(check_out(client).location))
    [email] = [e for e in sent_emails(app) if e.template == "order_cancelled"]
    assert "was cancelled before its payment was completed, so nothing has been charged" in (
        email.body_text
    )
    assert "We have refunded" not in email.body_text


@pytest.mark.parametrize(
    ("amount", "full", "says"),
    [
        (25000, False, "This is part of your order's total of {total}."),
        (None, True, "Your order ({total}) is now refunded in full."),
    ],
    ids=["partial", "full"],
)
def test_the_refunded_email_tells_the_amount_of_this_refund(
    shop: Shop, bought: Bought, amount, full, says
) -> None:
    total = money(bought.total)
    this_refund = money(amount or bought.total)
    text, html, order_url = render(
        shop, bought, "order_refunded", total=total, amount=this_refund, full=full
    )
    for body in (text, text_of(Page(html))):
        assert f"We have refunded {this_refund} for your order {bought.number}." in body
        assert says.format(total=total) in body
    assert order_url in text
    assert ("refunded in full" in text) is full


def test_an_account_stays_open_while_a_refund_that_came_back_is_owed_to_it(
    shop: Shop, app: Flask, bought: Bought
) -> None:
    """Refunded in full, then the refund failed at Stripe: the money is back with the shop,
    and the order's pages promise "We'll be in touch to give it back to you another way".
    Closing the account was allowed all the same, and erased the order's email and addresses:
    nobody could be in touch, and the shopper's money stayed with the shop."""
    refund_comes_back(shop, bought)

    closing = bought.account.submit("/account/delete", {"password": PASSWORD})

    assert closing.status_code == 422
    assert f"we hold money of order {bought.number} that may be yours to have back" in page_text(
        closing
    )
    with app.app_context():
        order = _order(bought.number)
        assert order.email == SHOPPER
        assert order.shipping_address["full_name"]
        db.session.remove()
    # Once staff have given it back (and take the warning off), the account can be closed.
    staff = staff_client(app, "second.keeper@elysium.example")
    page = Page(staff.get(f"/staff/orders/{bought.number}"))
    settled = staff.submit(
        f"/staff/orders/{bought.number}/notes",
        {"note": "Paid back by bank transfer.", "settles": "y", "seen": page.one("#seen")["value"]},
    )
    assert settled.status_code == 303
    assert bought.account.submit("/account/delete", {"password": PASSWORD}).status_code == 303
    with app.app_context():
        assert _order(bought.number).email == ""
        db.session.remove()


def test_an_account_stays_open_while_a_late_payment_is_held_until_it_is_given_back(
    shop: Shop, app: Flask
) -> None:
    """The order was cancelled, then its payment came after all: the page says "we'll refund
    it or be in touch", and closing the account erased the address to be in touch at."""
    client, order = cancelled_before_payment(shop, app)
    stripe_reports(shop, "checkout.session.completed", paid_page(order))

    closing = client.submit("/account/delete", {"password": PASSWORD})

    assert closing.status_code == 422
    assert f"we hold money of order {order.number}" in page_text(closing)
    # Given back in full in Stripe's dashboard: nothing is held, the account may close.
    given_back = {
        "id": f"ch_{order.stripe_checkout_session_id}",
        "object": "charge",
        "payment_intent": f"pi_{order.stripe_checkout_session_id}",
        "amount_refunded": order.total,
        "metadata": {"order_number": order.number},
    }
    stripe_reports(shop, "charge.refunded", given_back)
    assert client.submit("/account/delete", {"password": PASSWORD}).status_code == 303
