"""A GET never changes the shop: a tour of every page, as every kind of visitor, plain and
htmx, leaves every table exactly as it was (so any page can come from a read replica and be
reloaded safely). The one exception: a product page records that it was viewed, in
``product_views`` and nowhere else."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from flask import Flask
from sqlalchemy import select, text

from elysium.extensions import db
from elysium.models import Address, Collection, Inventory, Order, Product
from elysium.models.engagement import BespokeLead, BespokeQuote
from elysium.models.types import utcnow
from elysium.services import bespoke, wishlist
from elysium.services import staff as staff_accounts
from elysium.services.quotes import quote_token
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
# The pages that may write, and the one table they may write: a product page records its view.
RECORDING_PAGES = {"shop.product"}


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
    paying.submit(
        "/account/profile",
        {"email": "augusta@example.com", "current_password": PASSWORD},
        action="/account/email",
    )
    [email_change] = sent_emails(app, "augusta@example.com")
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
            "email_change": link_in(email_change, "/account/email/confirm/"),
        }
        db.session.remove()
    with app.app_context():
        newcomer_link = staff_accounts.create_staff(db.session, "newcomer@elysium.example").link
        values["welcome"] = "/auth/welcome/" + newcomer_link.rsplit("/auth/welcome/", 1)[1]
        values["stock"] = str(db.session.scalars(select(Inventory.id)).first())
        lead = BespokeLead(name="Grace Hopper", email="grace@example.com", message="A ring")
        db.session.add(lead)
        db.session.flush()
        values["lead"] = str(lead.id)
        quote = BespokeQuote(
            lead=lead,
            description="A ring",
            price=480000,
            currency="GBP",
            deposit_percent=30,
            deposit_amount=144000,
            valid_until=utcnow().date() + timedelta(days=30),
        )
        db.session.add(quote)
        db.session.commit()
        with shop.app.test_request_context():
            values["quote_token"] = quote_token(quote)
        db.session.remove()
    # Ada has asked for a bespoke piece: her thank-you page and her commissions have a lead.
    paying.get("/bespoke")
    with shop.app.app_context():
        started = bespoke.fill_token(time.time() - 10)
    sent = paying.post(
        "/bespoke",
        data={
            "csrf_token": paying.csrf_token,
            "started": started,
            "piece": "from=aurelia-solitaire-ring&metal=platinum",
            "use_piece": "y",
            "name": "Ada Lovelace",
            "email": "ada@example.com",
            "piece_type": "ring",
            "metal": "platinum",
            "budget": "5000-10000",
            "message": "A ring like the one in the portrait",
            "consent": "y",
        },
    )
    assert sent.status_code == 303
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
        "shop.recently_viewed": ["/recently-viewed", f"/recently-viewed?exclude={piece}"],
        "shop.collection": [f"/collections/{values['collection']}"],
        "bespoke.form": [
            "/bespoke",
            "/bespoke?from=aurelia-solitaire-ring&metal=platinum&diamond=0.50ct",
            "/bespoke?from=no-such-piece&metal=x",
        ],
        "bespoke.thanks": ["/bespoke/thanks"],
        "account.commissions": ["/account/commissions"],
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
        "account.confirm_new_email": [values["email_change"]],
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
        "art.raster": [f"/art/{piece}/platinum/0.50ct.png", "/art/nothing/platinum/none.png"],
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
        "staff.leads.list": ["/staff/leads", "/staff/leads?tab=all&q=B00001&assignee=me&page=2"],
        "staff.leads.detail": [f"/staff/leads/{values['lead']}"],
        "staff.quotes.show": [f"/staff/leads/{values['lead']}/quotes"],
        "quotes.show": [f"/bespoke/quote/{values['quote_token']}", "/bespoke/quote/tampered"],
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
    # Every page but the product pages first: nothing at all changes. Then the product pages.
    for endpoints in (set(tour) - RECORDING_PAGES, RECORDING_PAGES):
        for client in visitors.values():
            for endpoint in sorted(endpoints):
                for url in tour[endpoint]:
                    statuses.add(client.get(url).status_code)
                    statuses.add(client.htmx("GET", url).status_code)
        if endpoints is not RECORDING_PAGES:
            assert snapshot(app) == before

    after = snapshot(app)
    viewed_before, viewed = before.pop("product_views"), after.pop("product_views")
    assert after == before
    assert viewed[: len(viewed_before)] == viewed_before
    viewed = viewed[len(viewed_before) :]
    # At most one view per visitor (the rest are repeats within 30 minutes), of the piece seen.
    columns = [column.name for column in db.metadata.tables["product_views"].columns]
    with app.app_context():
        piece_id = db.session.scalars(
            select(Product.id).where(Product.slug == "aurelia-solitaire-ring")
        ).one()
        db.session.remove()
    assert 1 <= len(viewed) <= len(visitors)
    assert {dict(zip(columns, row, strict=True))["product_id"] for row in viewed} == {piece_id}
    assert 500 not in statuses
    assert {200, 303} <= statuses
