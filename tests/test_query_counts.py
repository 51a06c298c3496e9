"""Pages whose query counts other modules don't assert yet: each costs the same number of
queries for one thing as for many (no query per order, line, collection or stock row)."""

from __future__ import annotations

from datetime import timedelta
from itertools import count

import pytest
from flask import Flask
from sqlalchemy import select

from elysium.extensions import db
from elysium.models import Order, OrderEvent, OrderLine, OrderStatus, Product, User
from elysium.models.engagement import BespokeLead, BespokeQuote, LeadStatus
from elysium.models.types import utcnow
from elysium.web.fragments import forget_kept
from tests.conftest import ShopClient
from tests.support.staff import STAFF_EMAIL, staff_client

numbers = count(1)


def orders_for(app: Flask, email: str, how_many: int, lines: int) -> list[str]:
    """``how_many`` paid orders of ``email``'s account, each of ``lines`` different pieces."""
    made = []
    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == email))
        products = db.session.scalars(select(Product).order_by(Product.id).limit(lines)).all()
        for _ in range(how_many):
            order = Order(
                number=f"ELY-QC{next(numbers):05d}",
                user_id=user.id,
                email=email,
                status=OrderStatus.PAID,
                currency="GBP",
                subtotal=1000 * lines,
                total=1000 * lines,
                shipping_address={"full_name": "Ada Lovelace", "country": "GB"},
                billing_address={"full_name": "Ada Lovelace", "country": "GB"},
                paid_at=utcnow(),
            )
            for product in products:
                metal = product.metals[0].code
                order.lines.append(
                    OrderLine(
                        product_id=product.id,
                        product_name=product.name,
                        product_slug=product.slug,
                        variant_key=metal,
                        configuration={"metal": metal},
                        configuration_summary=product.metals[0].label,
                        unit_price=1000,
                        quantity=1,
                    )
                )
            order.events.append(
                OrderEvent(to_status=OrderStatus.PAID, actor="stripe", note="Paid.")
            )
            db.session.add(order)
            made.append(order.number)
        db.session.commit()
        db.session.remove()
    return made


def cost(queries, client: ShopClient, path: str) -> int:
    with queries() as statements:
        response = client.get(path)
    assert response.status_code == 200, path
    return len(statements)


@pytest.fixture
def shopper(auth, catalogue) -> ShopClient:
    auth.create_user()
    auth.login()
    return auth.client


def test_the_account_orders_list_costs_the_same_for_one_order_or_eight(app, shopper, queries):
    orders_for(app, "ada@example.com", 1, 1)
    one = cost(queries, shopper, "/account/orders")
    orders_for(app, "ada@example.com", 7, 3)
    assert cost(queries, shopper, "/account/orders") == one


def test_an_order_page_costs_the_same_for_one_line_or_six(app, shopper, queries):
    (small,) = orders_for(app, "ada@example.com", 1, 1)
    (large,) = orders_for(app, "ada@example.com", 1, 6)
    assert cost(queries, shopper, f"/account/orders/{large}") == cost(
        queries, shopper, f"/account/orders/{small}"
    )


def test_the_staff_stock_list_and_packing_slip_cost_the_same_for_few_or_many(
    app, catalogue, queries
):
    staff = staff_client(app)
    (small,) = orders_for(app, STAFF_EMAIL, 1, 1)
    (large,) = orders_for(app, STAFF_EMAIL, 1, 6)
    assert cost(queries, staff, f"/staff/orders/{large}/packing-slip") == cost(
        queries, staff, f"/staff/orders/{small}/packing-slip"
    )

    whole = cost(queries, staff, "/staff/inventory")
    with app.app_context():
        for product in db.session.scalars(select(Product)).all()[4:]:
            product.published = False
        db.session.commit()
        db.session.remove()
    assert cost(queries, staff, "/staff/inventory") == whole


def test_the_home_page_costs_the_same_whatever_the_number_of_collections(
    app, client, catalogue, queries
):
    def uncached() -> int:
        """What the page costs before anything of it is cached (the catalogue it keeps, the
        trending pieces)."""
        with app.app_context():
            forget_kept()
        return cost(queries, client, "/")

    all_collections = uncached()
    with app.app_context():
        from elysium.models import Collection

        for collection in db.session.scalars(select(Collection)).all()[1:]:
            collection.published = False
        db.session.commit()
        db.session.remove()
    assert uncached() == all_collections


def commissions_for(app: Flask, email: str, how_many: int) -> None:
    """``how_many`` commissions of ``email``'s account, each quoted twice (the first quote
    withdrawn), and the first one's current quote with its deposit on its way from the bank."""
    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == email))
        for made in range(how_many):
            lead = BespokeLead(
                name="Ada Lovelace",
                email=email,
                message="A ring with a sapphire",
                status=LeadStatus.QUOTED,
                user_id=user.id,
            )
            for withdrawn in (utcnow(), None):
                lead.quotes.append(
                    BespokeQuote(
                        description="Sapphire ring",
                        price=100_000,
                        currency="GBP",
                        deposit_percent=30,
                        deposit_amount=30_000,
                        valid_until=utcnow().date() + timedelta(days=30),
                        withdrawn_at=withdrawn,
                    )
                )
            db.session.add(lead)
            db.session.flush()
            if made == 0:
                db.session.add(
                    Order(
                        number=f"ELY-QC{next(numbers):05d}",
                        user_id=user.id,
                        email=email,
                        status=OrderStatus.PROCESSING,
                        currency="GBP",
                        subtotal=30_000,
                        total=30_000,
                        shipping_address={},
                        billing_address={},
                        bespoke_quote_id=lead.quotes[-1].id,
                    )
                )
        db.session.commit()
        db.session.remove()


def test_the_account_commissions_page_costs_the_same_for_one_commission_or_five(
    app, shopper, queries
):
    """It asked, for each commission, whether another of its quotes had a deposit on its way."""
    commissions_for(app, "ada@example.com", 1)
    one = cost(queries, shopper, "/account/commissions")
    commissions_for(app, "ada@example.com", 4)
    assert cost(queries, shopper, "/account/commissions") == one
    assert shopper.get("/account/commissions").get_data(as_text=True).count("See your quote") == 5
