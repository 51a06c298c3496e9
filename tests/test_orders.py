"""Orders for shoppers: their list and pages, and the signed link for guests."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select, update

from elysium.extensions import db
from elysium.models import Order, OrderLine, OrderStatus
from elysium.services import orders
from tests.conftest import page_text


def place_order(email: str, user_id: int | None, status: OrderStatus = OrderStatus.PAID) -> str:
    order = Order(
        number=orders.new_order_number(db.session),
        user_id=user_id,
        email=email,
        status=OrderStatus.PENDING,
        currency="GBP",
        subtotal=185000,
        total=185000,
        shipping_address={
            "full_name": "Ada Lovelace",
            "line1": "1 Piccadilly",
            "city": "London",
            "postcode": "W1J 0DA",
            "country": "GB",
        },
        billing_address={
            "full_name": "Ada Lovelace",
            "line1": "1 Piccadilly",
            "city": "London",
            "postcode": "W1J 0DA",
            "country": "GB",
        },
    )
    order.lines.append(
        OrderLine(
            product_name="Aurelia Solitaire Ring",
            product_slug="aurelia-solitaire-ring",
            variant_key="yellow-gold/0.30ct",
            configuration={"metal": "yellow-gold"},
            configuration_summary="18k yellow gold with 0.30 ct, US size 6.5",
            unit_price=185000,
            quantity=1,
        )
    )
    db.session.add(order)
    orders.transition_to(
        order, status, actor="stripe"
    ) if status is not OrderStatus.PENDING else None
    db.session.commit()
    return order.number


@pytest.fixture
def ada(app, auth):
    user_id = auth.create_user("ada@example.com")
    with app.app_context():
        number = place_order("ada@example.com", user_id)
    return user_id, number


def test_a_shopper_sees_their_orders_and_each_order_page(app, client, auth, ada):
    _, number = ada
    auth.login()
    listing = page_text(client.get("/account/orders"))
    assert number in listing
    assert "£1,850" in listing
    assert "Paid" in listing
    assert number in page_text(client.get("/account"))
    page = client.get(f"/account/orders/{number}")
    assert page.status_code == 200
    text = page_text(page)
    assert "Aurelia Solitaire Ring" in text
    assert "18k yellow gold with 0.30 ct, US size 6.5" in text
    assert "1 Piccadilly" in text
    assert "Payment received, thank you" in text
    assert page.headers["Cache-Control"] == "no-store"


def test_an_order_placed_late_on_a_summer_evening_shows_londons_date(app, client, auth, ada):
    """23:30 UTC on 14 July is 00:30 on the 15th in London (BST): the date the shopper saw on
    her clock when she ordered, on the list and the order page (and the packing slip)."""
    _, number = ada
    with app.app_context():
        db.session.execute(
            update(Order)
            .where(Order.number == number)
            .values(created_at=datetime(2026, 7, 14, 23, 30, tzinfo=UTC))
        )
        db.session.commit()
    auth.login()

    assert "15 July 2026" in page_text(client.get("/account/orders"))
    page = page_text(client.get(f"/account/orders/{number}"))
    assert "placed 15 July 2026" in page
    assert "14 July" not in page


def test_someone_elses_order_is_a_404(app, client, auth, ada):
    _, number = ada
    auth.create_user("grace@example.com")
    auth.login("grace@example.com")
    assert client.get(f"/account/orders/{number}").status_code == 404
    assert number not in page_text(client.get("/account/orders"))
    assert client.get("/account/orders/ELY-NOSUCH00").status_code == 404


@pytest.mark.parametrize("url", ["/account/orders", "/account/orders/ELY-ANYTHING"])
def test_order_pages_need_sign_in(client, url):
    response = client.get(url)
    assert response.status_code == 303
    assert response.headers["Location"].startswith("/auth/login?next=")


@pytest.mark.parametrize("email", ["guest@example.com", "josé@bücher.example"])
def test_a_guest_reaches_their_order_with_the_signed_link(app, client, email):
    """An address with a letter outside ASCII (the checkout's email field takes one) is
    compared as bytes: compared as text, the link answered 500."""
    with app.test_request_context():
        number = place_order(email, None)
        order = db.session.scalar(select(Order).where(Order.number == number))
        token = orders.guest_link_token(order)
    page = client.get(f"/orders/{number}?token={token}")
    assert page.status_code == 200
    assert "Aurelia Solitaire Ring" in page_text(page)
    assert page.headers["Referrer-Policy"] == "same-origin"


def test_a_wrong_or_borrowed_token_is_a_404(app, client):
    with app.test_request_context():
        first = place_order("guest@example.com", None)
        second = place_order("other@example.com", None)
        token = orders.guest_link_token(
            db.session.scalar(select(Order).where(Order.number == first))
        )
    assert client.get(f"/orders/{first}").status_code == 404
    assert client.get(f"/orders/{first}?token=nonsense").status_code == 404
    assert client.get(f"/orders/{second}?token={token}").status_code == 404
    assert client.get(f"/orders/{first}?token={token[:-2]}xx").status_code == 404


def test_the_link_dies_when_the_order_is_anonymised(app, client):
    with app.test_request_context():
        number = place_order("guest@example.com", None)
        order = db.session.scalar(select(Order).where(Order.number == number))
        token = orders.guest_link_token(order)
        order.email = ""
        db.session.commit()
    assert client.get(f"/orders/{number}?token={token}").status_code == 404


def test_the_timeline_is_in_plain_words_and_hides_internal_notes(app, client, auth, ada):
    _, number = ada
    with app.app_context():
        order = db.session.scalar(select(Order).where(Order.number == number))
        orders.add_note(order, "Stripe evt_123 amount check passed", actor="stripe")
        orders.transition_to(order, OrderStatus.FULFILLED, actor="staff:1", note="QC by Jo")
        db.session.commit()
    auth.login()
    text = page_text(client.get(f"/account/orders/{number}"))
    assert "Being prepared" in text
    assert "finished and packed in our workshop" in text
    assert "evt_123" not in text
    assert "QC by Jo" not in text
