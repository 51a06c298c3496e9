"""A PENDING order as checkout leaves it, built straight in the database, for tests of what
comes after (webhooks, emails) that don't need to go through the checkout pages."""

from __future__ import annotations

from itertools import count

from flask import Flask
from sqlalchemy import select

from elysium.extensions import db
from elysium.models import Cart, CartLine, Order, OrderLine, Product
from elysium.models.types import utcnow
from elysium.services import inventory

CHAIN_PRICE = 65000
_order_numbers = count(1)


def make_order() -> int:
    """A bare order for stock to be reserved against (in the app context); its id."""
    order = Order(
        number=f"ELY-TEST{next(_order_numbers):04d}",
        email="shopper@example.com",
        currency="GBP",
        subtotal=0,
        total=0,
        shipping_address={},
        billing_address={},
    )
    db.session.add(order)
    db.session.flush()
    return order.id


def pending_chain_order(
    app: Flask,
    *,
    number: str = "ELY-WEBHOOK1",
    checkout_session_id: str = "cs_test_1",
    stock_level: int = 5,
    with_cart: bool = True,
) -> dict:
    """A PENDING order for one yellow-gold Aurelia Fine Chain, on the payment page
    ``checkout_session_id``: its unit reserved out of ``stock_level``, and (``with_cart``)
    the shopper's cart frozen under it."""
    with app.app_context():
        product = db.session.scalars(
            select(Product).where(Product.slug == "aurelia-fine-chain")
        ).one()
        stock = next(row for row in product.inventory if row.variant_key == "yellow-gold")
        stock.stock_level, stock.reserved = stock_level, 0
        cart = None
        if with_cart:
            cart = Cart(token="t" * 43, currency="GBP", frozen_at=utcnow())
            cart.lines.append(
                CartLine(
                    product=product,
                    variant_key="yellow-gold",
                    configuration={"metal": "yellow-gold"},
                    configuration_hash="h" * 64,
                    quantity=1,
                )
            )
            db.session.add(cart)
        order = Order(
            number=number,
            stripe_checkout_session_id=checkout_session_id,
            email="shopper@example.com",
            currency="GBP",
            subtotal=CHAIN_PRICE,
            total=CHAIN_PRICE,
            shipping_address={"full_name": "Ada Lovelace"},
            billing_address={"full_name": "Ada Lovelace"},
        )
        order.lines.append(
            OrderLine(
                product_id=product.id,
                inventory_id=stock.id,
                product_name=product.name,
                product_slug=product.slug,
                variant_key="yellow-gold",
                configuration={"metal": "yellow-gold"},
                configuration_summary="18k yellow gold",
                unit_price=CHAIN_PRICE,
                quantity=1,
            )
        )
        db.session.add(order)
        db.session.flush()
        if cart is not None:
            order.cart_id = cart.id
        inventory.reserve(db.session, stock.id, 1, order_id=order.id)
        db.session.commit()
        found = {
            "id": order.id,
            "number": order.number,
            "inventory_id": stock.id,
            "cart_id": cart.id if cart is not None else None,
        }
        db.session.remove()
        return found
