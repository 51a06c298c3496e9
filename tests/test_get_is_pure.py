"""A GET never changes the shop: a tour of every page, as every kind of visitor, plain and
htmx, leaves every table exactly as it was (so any page can come from a read replica and be
reloaded safely)."""

from __future__ import annotations

from typing import Any

from flask import Flask
from sqlalchemy import select, text

from elysium.extensions import db
from elysium.models import Address, Collection, Inventory, Order, Product
from elysium.services import staff as staff_accounts
from elysium.services import wishlist
from tests.conftest import PASSWORD, ShopClient, create_user, link_in, sent_emails
from tests.support.checkout import (
    Shop,
    add_chain,
    check_out,
    session_id_from,
    set_stock,
)
from tests.support.staff import staff_client

# Every GET endpoint must be on the tour; this one is the OAuth provider's way back (a
# redirect it chooses), and with Google sign-in off it only sends the visitor to sign in.
NOT_A_PAGE = {"static"}


def snapshot(app: Flask) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in primary-key order."""
    tables: dict[str, list[tuple[Any, ...]]] = {}
    with app.app_context(), db.engine.connect() as connection:
        for table in db.metadata.sorted_tables:
            order = ", ".join(column.name for column in table.primary_key.columns)
            rows = connection.execute(text(f"SELECT * FROM {table.name} ORDER BY {order}"))
            tables[table.name] = [tuple(row) for row in rows]
    return tables


def _visitors(shop: Shop, app: Flask) -> tuple[dict[str, ShopClient], dict[str, str]]:
    """A stranger; a guest whose bag asks for more than is left; a signed-in shopper paying
    (her bag frozen); and a guest who has paid. Returns them and the URLs their pages need."""
    stranger = shop.client()

    over_stock = shop.client()
    add_chain(over_stock, quantity=3)

    paying = shop.client()
    with app.app_context():
        user_id = create_user("ada@example.com")
        db.session.add(
            Address(
                user_id=user_id,
                full_name="Ada Lovelace",
                line1="12 St James's Square",
                city="London",
                postcode="SW1Y 4JH",
                country="GB",
            )
        )
        product = db.session.scalars(select(Product).order_by(Product.id)).first()
        wishlist.toggle_piece(db.session, user_id, product)
        db.session.commit()
        db.session.remove()
    paying.submit("/auth/login", {"email": "ada@example.com", "password": PASSWORD})
    add_chain(paying)
    paying_session = session_id_from(check_out(paying).location)

    paid = shop.client()
    add_chain(paid)
    paid_session = session_id_from(check_out(paid).location)
    shop.fake.pay(paid_session)

    set_stock(app, 2, reserved=2)  # the over-stock bag now asks for 3 with 0 left

    newcomer = shop.client()
    newcomer.submit(
        "/auth/register", {"email": "grace@example.com", "password": "a fine long password"}
    )
    newcomer.submit("/auth/forgot", {"email": "ada@example.com"})
    [confirm] = sent_emails(app, "grace@example.com")
    [*_, reset] = sent_emails(app, "ada@example.com")
    with app.app_context():
        paid_order = db.session.scalars(
            select(Order).where(Order.stripe_checkout_session_id == paid_session)
        ).one()
        ada_order = db.session.scalars(select(Order).where(Order.user_id.is_not(None))).one()
        address_id = db.session.scalars(select(Address.id)).one()
        collection = db.session.scalars(select(Collection.slug)).first()
        from elysium.services.orders import guest_link_token

        with shop.app.test_request_context():
            token = guest_link_token(paid_order)
        values = {
            "paying_session": paying_session,
            "paid_session": paid_session,
            "paid_number": paid_order.number,
            "paid_token": token,
            "ada_number": ada_order.number,
            "address_id": str(address_id),
            "collection": collection,
            "confirm": link_in(confirm, "/auth/confirm/"),
            "reset": link_in(reset, "/auth/reset/"),
        }
        db.session.remove()
    with app.app_context():
        newcomer_link = staff_accounts.create_staff(db.session, "newcomer@elysium.example").link
        values["welcome"] = "/auth/welcome/" + newcomer_link.rsplit("/auth/welcome/", 1)[1]
        values["stock"] = str(db.session.scalars(select(Inventory.id)).first())
        db.session.commit()
        db.session.remove()
    visitors = {
        "stranger": stranger,
        "over_stock": over_stock,
        "paying": paying,
        "paid": paid,
        "staff": staff_client(shop.app),
    }
    return visitors, values


def _tour(values: dict[str, str]) -> dict[str, list[str]]:
    """Every GET page, by endpoint, with the URLs that show it in its states."""
    piece = "aurelia-solitaire-ring"
    return {
        "shop.home": ["/"],
        "shop.listing": ["/shop", "/shop?category=ring&sort=price-asc&page=2", "/shop?q=gold"],
        "shop.product": [f"/shop/{piece}", f"/shop/{piece}?metal=platinum&size=99"],
        "shop.price": [f"/shop/{piece}/price?metal=white-gold&diamond=0.50ct"],
        "shop.collection": [f"/collections/{values['collection']}"],
        "cart.show": ["/cart"],
        "checkout.show": ["/checkout"],
        "checkout.success": [
            f"/checkout/success?session_id={values['paying_session']}",
            f"/checkout/success?session_id={values['paid_session']}",
        ],
        "orders.detail": [f"/orders/{values['paid_number']}?token={values['paid_token']}"],
        "account.overview": ["/account"],
        "account.address_book": ["/account/addresses"],
        "account.address": [f"/account/addresses/{values['address_id']}"],
        "account.edit_address": [f"/account/addresses/{values['address_id']}/edit"],
        "account.close_account": ["/account/delete"],
        "account.export": ["/account/export"],
        "account.goodbye": ["/account/goodbye"],
        "account.orders_list": ["/account/orders"],
        "account.order_detail": [f"/account/orders/{values['ada_number']}"],
        "account.profile": ["/account/profile"],
        "auth.check_inbox": ["/auth/check-inbox"],
        "auth.confirm_email": [values["confirm"]],
        "auth.forgot_password": ["/auth/forgot"],
        "auth.google_login": [],
        "auth.google_callback": ["/auth/google/callback?code=x&state=y"],
        "auth.google_link": ["/auth/google/link"],
        "auth.login": ["/auth/login"],
        "auth.register": ["/auth/register"],
        "auth.reset_password": [values["reset"]],
        "site.healthz": ["/healthz"],
        "art.drawing": [f"/art/{piece}/platinum/0.50ct.svg", "/art/nothing/platinum/none.svg"],
        "site.robots": ["/robots.txt"],
        "site.favicon": ["/favicon.ico"],
        "site.sitemap": ["/sitemap.xml"],
        "wishlist.show": ["/wishlist"],
        "wishlist.heart": [f"/wishlist/heart/{piece}?metal=rose-gold"],
        "auth.welcome": [values["welcome"]],
        "staff.dashboard": ["/staff"],
        "staff.orders.list": [
            "/staff/orders",
            "/staff/orders?tab=all&q=ada&placed_from=2024-01-01&sort=total-desc&page=2",
        ],
        "staff.orders.counts": ["/staff/orders/counts?tab=attention"],
        "staff.orders.csv": ["/staff/orders.csv?tab=all"],
        "staff.orders.detail": [f"/staff/orders/{values['paid_number']}"],
        "staff.orders.packing_slip": [f"/staff/orders/{values['paid_number']}/packing-slip"],
        "staff.inventory.list": ["/staff/inventory", "/staff/inventory?low=1&metal=platinum"],
        "staff.inventory.variant": [f"/staff/inventory/{values['stock']}"],
        "staff.security.second_factor": ["/staff/security/second-factor"],
        "staff.security.recovery_codes": ["/staff/security/recovery-codes"],
    }


def test_a_tour_of_every_page_by_every_visitor_changes_nothing(shop: Shop, app: Flask) -> None:
    visitors, values = _visitors(shop, app)
    tour = _tour(values)
    get_endpoints = {
        rule.endpoint for rule in shop.app.url_map.iter_rules() if "GET" in rule.methods
    }
    assert get_endpoints - NOT_A_PAGE <= set(tour), "a GET page is missing from the tour"
    before = snapshot(app)

    statuses: set[int] = set()
    for client in visitors.values():
        for urls in tour.values():
            for url in urls:
                statuses.add(client.get(url).status_code)
                statuses.add(client.htmx("GET", url).status_code)

    assert snapshot(app) == before
    assert 500 not in statuses
    assert {200, 303} <= statuses
