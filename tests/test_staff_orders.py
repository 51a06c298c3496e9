"""The back office's orders: the list (tabs and counts, search, dates, sort, pages), the CSV,
one order in full with its timeline and internal notes, and the packing slip."""

from __future__ import annotations

import csv
import io
import json
import time
from datetime import UTC, datetime
from itertools import count

import pytest
from flask import Flask
from sqlalchemy import insert, select, update

from devtools.fake_stripe.webhooks import sign
from elysium.extensions import db
from elysium.models import (
    Order,
    OrderEvent,
    OrderLine,
    OrderStatus,
    OutboxEmail,
    OutboxStatus,
    Refund,
    User,
)
from elysium.models.types import utcnow
from elysium.services import checkout, fulfilment
from elysium.services.payments import REFUND_FAILED_FLAG
from elysium.web.staff_session import LAST_SEEN
from tests.conftest import WEBHOOK_SECRET, ShopClient, create_user, page_text
from tests.html import Page, elements, field_error, form_fields, text_of
from tests.support.checkout import Shop, add_chain, check_out, session_id_from, set_stock
from tests.support.orders import CHAIN_PRICE, pending_chain_order
from tests.support.staff import STAFF_EMAIL, staff_client

S = OrderStatus
event_ids = count(1)
numbers = count(1)
ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"


def next_number() -> str:
    """ELY- and eight characters, as the shop makes them, but predictable."""
    n, chars = next(numbers), []
    for _ in range(8):
        n, digit = divmod(n, len(ALPHABET))
        chars.append(ALPHABET[digit])
    return "ELY-" + "".join(reversed(chars))


def signed_event(client: ShopClient, event_type: str, obj: dict) -> None:
    payload = json.dumps(
        {
            "id": f"evt_staff_{next(event_ids)}",
            "object": "event",
            "type": event_type,
            "created": int(time.time()),
            "data": {"object": obj},
            "livemode": False,
        }
    ).encode()
    response = client.post(
        "/webhooks/stripe",
        data=payload,
        headers={
            "Content-Type": "application/json",
            "Stripe-Signature": sign(payload, WEBHOOK_SECRET),
        },
    )
    assert response.status_code == 200, response.get_data(as_text=True)


def checkout_completed(number: str, session_id: str, **changes) -> dict:
    return {
        "id": session_id,
        "object": "checkout.session",
        "client_reference_id": number,
        "metadata": {"order_number": number},
        "amount_total": CHAIN_PRICE,
        "currency": "gbp",
        "payment_status": "paid",
        "status": "complete",
        "payment_intent": f"pi_{session_id}",
        **changes,
    }


class Orders:
    """Orders in every state: built as checkout leaves them, paid (or not) by signed webhooks,
    and moved on by direct edits only where another engineer's staff actions would do it."""

    def __init__(self, app: Flask):
        self.app = app
        self.stripe = app.test_client()

    def pending(self) -> str:
        number = next_number()
        pending_chain_order(
            self.app, number=number, checkout_session_id=f"cs_{number}", with_cart=False
        )
        return number

    def paid(self) -> str:
        number = self.pending()
        signed_event(
            self.stripe, "checkout.session.completed", checkout_completed(number, f"cs_{number}")
        )
        return number

    def bank_transfer(self) -> str:
        number = self.pending()
        obj = checkout_completed(number, f"cs_{number}", payment_status="unpaid")
        signed_event(self.stripe, "checkout.session.completed", obj)
        return number

    def expired(self) -> str:
        number = self.pending()
        obj = checkout_completed(number, f"cs_{number}", payment_status="unpaid", status="expired")
        signed_event(self.stripe, "checkout.session.expired", obj)
        return number

    def amount_mismatch(self) -> str:
        number = self.pending()
        obj = checkout_completed(number, f"cs_{number}", amount_total=CHAIN_PRICE - 1)
        signed_event(self.stripe, "checkout.session.completed", obj)
        return number

    def paid_after_cancellation(self) -> str:
        number = self.expired()
        signed_event(
            self.stripe, "checkout.session.completed", checkout_completed(number, f"cs_{number}")
        )
        return number

    def disputed(self) -> str:
        number = self.paid()
        dispute = {
            "id": f"dp_{number}",
            "object": "dispute",
            "payment_intent": f"pi_cs_{number}",
            "reason": "fraudulent",
            "amount": CHAIN_PRICE,
        }
        signed_event(self.stripe, "charge.dispute.created", dispute)
        return number

    def refunded(self) -> str:
        """Delivered, sent back and refunded in Stripe's dashboard (one refunded before it was
        sent asks staff about its pieces: it needs attention)."""
        number = self.moved(S.DELIVERED, delivered_at=utcnow())
        charge = {
            "id": f"ch_{number}",
            "object": "charge",
            "payment_intent": f"pi_cs_{number}",
            "amount_refunded": CHAIN_PRICE,
            "metadata": {"order_number": number},
        }
        signed_event(self.stripe, "charge.refunded", charge)
        return number

    def moved(self, status: OrderStatus, **fields) -> str:
        """A paid order moved on as the fulfilment actions would (another engineer's work)."""
        number = self.paid()
        edit(self.app, number, status=status, **fields)
        return number


def edit(app: Flask, number: str, **fields) -> None:
    with app.app_context():
        order = db.session.scalars(select(Order).where(Order.number == number)).one()
        for name, value in fields.items():
            setattr(order, name, value)
        db.session.commit()
        db.session.remove()


@pytest.fixture
def orders(app: Flask, catalogue: dict) -> Orders:
    return Orders(app)


@pytest.fixture
def staff(app: Flask) -> ShopClient:
    return staff_client(app)


RING = "aurelia-solitaire-ring"


def buy(
    shop: Shop,
    *,
    email: str = "ada@example.com",
    name: str = "Ada Lovelace",
    gift: str = "",
    quantity: int = 1,
    engraving: str | None = None,
) -> str:
    """An order through the real checkout, paid on the fake Stripe; returns its number."""
    client = shop.client()
    if engraving is None:
        add_chain(client, quantity)
    else:
        choices = {"metal": "yellow-gold", "diamond": "0.30ct", "size": "6", "engraving": engraving}
        data = {"product": RING, "quantity": str(quantity), **choices}
        added = client.submit(f"/shop/{RING}", data, action="/cart/items")
        assert added.status_code == 303, page_text(added)
    response = check_out(client, email=email, gift_message=gift, **{"shipping-full_name": name})
    assert response.status_code == 303, page_text(response)
    session_id = session_id_from(response.location)
    shop.fake.pay(session_id)
    with shop.app.app_context():
        number = db.session.scalars(
            select(Order.number).where(Order.stripe_checkout_session_id == session_id)
        ).one()
        db.session.remove()
    return number


def edit_name(app: Flask, number: str, name: str) -> None:
    """Change the delivery name kept on the order, as data from before today's rules might be."""
    with app.app_context():
        order = db.session.scalars(select(Order).where(Order.number == number)).one()
        order.shipping_address = {**order.shipping_address, "full_name": name}
        db.session.commit()
        db.session.remove()


def numbers_listed(response) -> list[str]:
    return [text_of(cell) for cell in elements(response, "#order-results tbody .order-row__number")]


def counts(response) -> dict[str, int]:
    return {
        str(badge["id"]).removeprefix("count-"): int(text_of(badge))
        for badge in elements(response, "#order-tabs .order-tabs__count")
    }


def current_tab(response) -> str:
    return text_of(Page(response).one('#order-tabs a[aria-current="page"]'))


def notes_shown(response) -> list[str]:
    return [text_of(note) for note in elements(response, "#order-results .notes li")]


# The list: tabs and counts


def test_the_tabs_count_every_state_and_the_list_opens_on_what_to_fulfil(staff, orders, app):
    paid = [orders.paid(), orders.paid()]
    fulfilled = orders.moved(S.FULFILLED)
    shipped = orders.moved(
        S.SHIPPED, carrier="dhl", tracking_number="JD014600006281230", shipped_at=utcnow()
    )
    delivered = orders.moved(S.DELIVERED, delivered_at=utcnow())
    pending, transfer = orders.pending(), orders.bank_transfer()
    cancelled = orders.expired()
    refunded = orders.refunded()
    disputed = orders.disputed()

    response = staff.get("/staff/orders")

    assert response.status_code == 200
    assert current_tab(response).startswith("To fulfil")
    assert sorted(numbers_listed(response)) == sorted([*paid, disputed])
    assert counts(response) == {
        "to-fulfil": 3,
        "to-ship": 1,
        "shipped": 1,
        "attention": 1,
        "awaiting-payment": 2,
        "delivered": 1,
        "cancelled": 1,
        "refunded": 1,
        "all": 10,
    }
    expected = {
        "to-ship": [fulfilled],
        "shipped": [shipped],
        "attention": [disputed],
        "awaiting-payment": [pending, transfer],
        "delivered": [delivered],
        "cancelled": [cancelled],
        "refunded": [refunded],
    }
    for tab, listed in expected.items():
        page = staff.get(f"/staff/orders?tab={tab}")
        assert sorted(numbers_listed(page)) == sorted(listed), tab
    everything = staff.get("/staff/orders?tab=all")
    assert len(numbers_listed(everything)) == 10


def test_each_row_shows_number_date_customer_pieces_total_and_status(staff, shop, app):
    set_stock(app, 10)
    number = buy(shop, email="grace@example.com", name="Grace Hopper", quantity=2)

    row = Page(staff.get("/staff/orders")).one(f"#order-{number}")

    assert text_of(row, ".order-row__number") == number
    assert text_of(row, ".order-row__name") == "Grace Hopper"
    assert text_of(row, ".order-row__email") == "grace@example.com"
    assert text_of(row, ".order-row__pieces") == "2"
    assert text_of(row, ".order-row__total") == "£1,300"
    assert text_of(row, ".order-row__status") == "Paid"
    assert row.select_one("time")["datetime"].startswith(str(utcnow().year))
    assert (
        row.select_one('input[type=checkbox][name=orders][form="bulk-orders"]')["value"] == number
    )


def test_flags_show_disputes_mismatches_late_payments_and_gifts(staff, orders, shop, app):
    disputed = orders.disputed()
    mismatch = orders.amount_mismatch()
    late = orders.paid_after_cancellation()
    set_stock(app, 10)
    gift = buy(shop, gift="Happy birthday, love from Ada")
    plain = buy(shop)

    page = Page(staff.get("/staff/orders?tab=all"))

    def flags(number: str) -> list[str]:
        return [text_of(flag) for flag in page.select(f"#order-{number} .order-flag")]

    assert flags(disputed) == ["Dispute"]
    assert flags(mismatch) == ["Amount mismatch"]
    assert flags(late) == ["Paid after cancellation"]
    assert flags(gift) == ["Gift"]
    assert flags(plain) == []
    attention = staff.get("/staff/orders?tab=attention")
    assert sorted(numbers_listed(attention)) == sorted([disputed, mismatch, late])
    detail = Page(staff.get(f"/staff/orders/{disputed}"))
    assert [text_of(flag) for flag in detail.select(".order-flag")] == ["Dispute"]
    assert "The payment is disputed (fraudulent)" in text_of(detail, ".staff-order__attention")


# Search, dates, sort, pages


def test_search_finds_an_order_by_number_email_name_or_tracking_number(staff, shop, app):
    set_stock(app, 10)
    ada = buy(shop, email="ada@example.com", name="Ada Lovelace")
    grace = buy(shop, email="grace.hopper@navy.example", name="Grace Brewster Hopper")
    edit(app, grace, status=S.SHIPPED, carrier="royal-mail", tracking_number="AB 1234 5678 GB")

    def found(q: str) -> list[str]:
        return sorted(
            numbers_listed(staff.get("/staff/orders", query_string={"tab": "all", "q": q}))
        )

    assert found(ada) == [ada]
    assert found(ada.removeprefix("ELY-").lower()) == [ada]
    assert found("GRACE.HOPPER@navy") == [grace]
    assert found("lovelace") == [ada]
    assert found("hopper grace") == [grace]
    assert found("AB 1234") == [grace]
    assert found("5678 gb") == [grace]
    assert found("ab12345678gb") == [grace]  # as read off a parcel, or pasted from an email
    assert found("345678") == [grace]
    assert found("example") == sorted([ada, grace])
    assert found("nobody") == []
    assert found("100%_") == []


def test_the_counts_follow_the_search_and_an_empty_tab_points_to_the_others(staff, shop, app):
    set_stock(app, 10)
    ada = buy(shop, name="Ada Lovelace")
    buy(shop, name="Grace Hopper")
    edit(app, ada, status=S.FULFILLED)

    response = staff.get("/staff/orders?q=lovelace")

    assert counts(response)["to-fulfil"] == 0
    assert counts(response)["to-ship"] == 1
    assert counts(response)["all"] == 1
    assert numbers_listed(response) == []
    [everywhere] = [
        link for link in elements(response, ".empty-state a") if "tab=all" in link["href"]
    ]
    assert numbers_listed(staff.get(everywhere["href"])) == [ada]
    tab_link = Page(response).one('#order-tabs a[href*="tab=to-ship"]')
    assert "q=lovelace" in tab_link["href"]


def test_a_date_range_keeps_the_orders_placed_on_those_days(staff, orders, app):
    first, middle, later = orders.paid(), orders.paid(), orders.paid()
    edit(app, first, created_at=datetime(2024, 3, 1, 0, 0, tzinfo=UTC))
    edit(app, middle, created_at=datetime(2024, 3, 15, 23, 59, 59, tzinfo=UTC))
    edit(app, later, created_at=datetime(2024, 3, 16, 0, 0, tzinfo=UTC))

    def found(**args: str) -> list[str]:
        return sorted(numbers_listed(staff.get("/staff/orders", query_string=args)))

    assert found(placed_from="2024-03-01", placed_to="2024-03-15") == sorted([first, middle])
    assert found(placed_from="2024-03-16") == [later]
    assert found(placed_to="2024-02-29") == []
    swapped = staff.get("/staff/orders?placed_from=2024-03-15&placed_to=2024-03-01")
    assert sorted(numbers_listed(swapped)) == sorted([first, middle])
    assert "The dates were the wrong way round, so we swapped them." in notes_shown(swapped)
    nonsense = staff.get("/staff/orders?placed_from=2024-02-30")
    assert sorted(numbers_listed(nonsense)) == sorted([first, middle, later])
    assert "We ignored “2024-02-30” for placed from: not a date." in notes_shown(nonsense)
    # The last day there is has no next day to end it: before, a 500 on the list, its
    # counts and its CSV.
    for field, day in (("to", "9999-12-31"), ("from", "0001-01-01")):
        far = f"placed_{field}={day}"
        far_off = staff.get(f"/staff/orders?{far}")
        assert far_off.status_code == 200
        assert sorted(numbers_listed(far_off)) == sorted([first, middle, later])
        ignored = f"We ignored “{day}” for placed {field}: not a date from 1900 to 2999."
        assert ignored in notes_shown(far_off)
        assert staff.get(f"/staff/orders.csv?{far}").status_code == 200
        assert staff.htmx("GET", f"/staff/orders/counts?{far}").status_code == 200


def test_orders_sort_by_date_or_total(staff, shop, app):
    set_stock(app, 10)
    one, three, two = buy(shop, quantity=1), buy(shop, quantity=3), buy(shop, quantity=2)

    def listed(sort: str) -> list[str]:
        return numbers_listed(staff.get(f"/staff/orders?sort={sort}"))

    assert listed("newest") == [two, three, one]
    assert numbers_listed(staff.get("/staff/orders")) == [two, three, one]
    assert listed("oldest") == [one, three, two]
    assert listed("total-desc") == [three, two, one]
    assert listed("total-asc") == [one, two, three]
    unknown = staff.get("/staff/orders?sort=cheapest")
    assert numbers_listed(unknown) == [two, three, one]
    assert "We ignored the unknown sort by “cheapest”." in notes_shown(unknown)


def test_the_list_comes_in_pages_of_fifty(staff, orders):
    made = [orders.pending() for _ in range(51)]

    first = staff.get("/staff/orders?tab=awaiting-payment")
    assert counts(first)["awaiting-payment"] == 51
    assert numbers_listed(first) == list(reversed(made))[:50]
    assert text_of(first, ".pagination__status") == "Page 1 of 2"
    assert not elements(first, "a[rel=prev]")
    following = Page(first).one("a[rel=next]")["href"]

    second = staff.get(following)
    assert numbers_listed(second) == [made[0]]
    assert text_of(second, ".pagination__status") == "Page 2 of 2"
    assert not elements(second, "a[rel=next]")
    past = staff.get("/staff/orders?tab=awaiting-payment&page=9")
    assert numbers_listed(past) == [made[0]]
    assert "There is no page 9; here is page 2." in notes_shown(past)
    assert numbers_listed(staff.get("/staff/orders?tab=awaiting-payment&page=x")) == numbers_listed(
        first
    )


# One URL, two renderings; the counts refresh


def test_htmx_gets_the_results_and_the_url_follows(staff, orders):
    paid = orders.paid()

    page = staff.get("/staff/orders?q=ELY&sort=oldest")
    fragment = staff.htmx("GET", "/staff/orders?q=ELY&sort=oldest&placed_from=&page=1")

    assert fragment.status_code == 200
    assert [element.name for element in Page(fragment).top()] == ["section"]
    assert Page(fragment).top()[0]["id"] == "order-results"
    assert numbers_listed(fragment) == [paid]
    assert fragment.headers["HX-Push-Url"] == "/staff/orders?q=ELY&sort=oldest"
    assert "HX-Request" in fragment.headers["Vary"]
    assert "HX-Request" in page.headers["Vary"]
    assert page.headers["Cache-Control"] == "no-store"
    whole = Page(page)
    assert whole.one("#order-results").select("tbody tr") != []
    form = whole.one("form#order-filters")
    assert form["method"] == "get"
    assert form["action"] == "/staff/orders"
    assert form["hx-get"] == "/staff/orders"
    assert form["hx-target"] == "#order-results"
    assert form["hx-push-url"] == "true"
    assert whole.one('input[name=tab][form="order-filters"]')["value"] == "to-fulfil"
    for link in whole.select("#order-tabs a"):
        assert link["hx-get"] == link["href"]
        assert link["hx-push-url"] == "true"
        # One queue with the form: a tab clicked while a search is in flight wins.
        assert link["hx-sync"] == "#order-filters:replace"
        assert "q=ELY" in link["href"]
        assert "sort=oldest" in link["href"]


def test_the_tab_counts_refresh_every_30_seconds_on_their_own_url(staff, orders):
    page = Page(staff.get("/staff/orders?q=ELY"))
    tabs = page.one("#order-tabs")
    assert tabs["hx-trigger"] == "refresh"
    assert tabs.has_attr("data-refresh")
    [script] = [s["src"] for s in page.select("script[src]") if "staff" in s["src"]]
    with staff.get(script) as served:
        source = served.get_data(as_text=True)
    assert "setInterval" in source
    assert 'visibilityState === "visible"' in source
    assert 'new CustomEvent("refresh")' in source
    before = counts(staff.htmx("GET", tabs["hx-get"]))
    orders.paid()

    refreshed = staff.htmx("GET", tabs["hx-get"])

    assert refreshed.status_code == 200
    assert [element["id"] for element in Page(refreshed).top()] == ["order-tabs"]
    assert counts(refreshed)["to-fulfil"] == before["to-fulfil"] + 1
    assert "q=ELY" in Page(refreshed).one('#order-tabs a[aria-current="page"]')["href"]
    plain = staff.get(tabs["hx-get"])
    assert plain.status_code == 303
    assert plain.location == "/staff/orders?q=ELY"


def test_the_refresh_is_not_activity_so_an_idle_back_office_still_signs_out(staff, app):
    idle_since = utcnow().timestamp() - 25 * 60
    with staff.session_transaction() as session:
        session[LAST_SEEN] = idle_since
    assert staff.htmx("GET", "/staff/orders/counts").status_code == 200
    with staff.session_transaction() as session:
        assert session[LAST_SEEN] == idle_since

    with staff.session_transaction() as session:
        session[LAST_SEEN] = utcnow().timestamp() - 31 * 60
    signed_out = staff.htmx("GET", "/staff/orders/counts")
    assert signed_out.headers["HX-Redirect"].startswith("/auth/login")

    # A person's request is activity.
    fresh = staff_client(app, "second@elysium.example")
    with fresh.session_transaction() as session:
        session[LAST_SEEN] = idle_since
    fresh.get("/staff/orders")
    with fresh.session_transaction() as session:
        assert session[LAST_SEEN] > idle_since


# The CSV


def csv_rows(response) -> list[list[str]]:
    text = response.get_data(as_text=True)
    assert text.startswith("\ufeff")
    return list(csv.reader(io.StringIO(text.removeprefix("\ufeff"))))


def test_the_csv_streams_the_filtered_orders_as_an_attachment(staff, shop, orders, app):
    set_stock(app, 10)
    grace = buy(shop, email="grace@example.com", name="Grace Hopper", quantity=2, gift="With love")
    buy(shop, email="ada@example.com", name="Ada Lovelace")
    edit(app, grace, status=S.SHIPPED, carrier="dhl", tracking_number="JD0146 0000")
    orders.pending()

    response = staff.get("/staff/orders.csv?tab=shipped&page=3")

    assert response.status_code == 200
    assert response.is_streamed
    assert response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"].startswith(
        'attachment; filename="elysium-orders-shipped-'
    )
    assert response.headers["Content-Disposition"].endswith('.csv"')
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    header, *rows = csv_rows(response)
    assert header[:6] == ["Order", "Placed (UTC)", "Status", "Customer", "Email", "Pieces"]
    [row] = rows
    cells = dict(zip(header, row, strict=True))
    assert cells["Order"] == grace
    assert cells["Status"] == "Shipped"
    assert cells["Customer"] == "Grace Hopper"
    assert cells["Email"] == "grace@example.com"
    assert cells["Pieces"] == "2"
    assert (cells["Currency"], cells["Total"], cells["Refunded"]) == ("GBP", "1300.00", "0.00")
    assert (cells["Carrier"], cells["Tracking number"]) == ("dhl", "JD0146 0000")
    assert cells["Flags"] == "Gift"
    assert cells["Gift message"] == "With love"
    searched = csv_rows(staff.get("/staff/orders.csv?tab=all&q=grace"))
    assert [row[0] for row in searched[1:]] == [grace]
    assert len(csv_rows(staff.get("/staff/orders.csv?tab=all"))) == 1 + 3


def test_the_csv_is_written_batch_by_batch_as_it_is_read(staff, orders):
    for _ in range(3):
        orders.paid()

    response = staff.get("/staff/orders.csv")

    chunks = list(response.response)
    assert chunks[0].decode().startswith("\ufeffOrder,Placed (UTC),")
    assert chunks[0].decode().count("\r\n") == 1  # the header leaves before any row is read
    assert b"".join(chunks[1:]).decode().count("\r\n") == 3
    response.close()


def test_a_csv_download_that_stalls_never_holds_up_the_shops_writes(staff, orders, app):
    """On SQLite, a slow download (a member of staff on a poor connection) kept the rows'
    cursor open between pieces, and with it the database's read lock: every shopper's change
    waited, then got the 503 page, for as long as the download stalled (found by review)."""
    with app.app_context():
        db.session.execute(
            insert(Order),
            [
                {
                    "number": f"ELY-CSV{n:05d}",
                    "email": "ada@example.com",
                    "status": OrderStatus.CANCELLED,
                    "currency": "GBP",
                    "subtotal": 65000,
                    "total": 65000,
                    "shipping_address": {"full_name": "Ada Lovelace", "country": "GB"},
                    "billing_address": {},
                }
                for n in range(1200)  # more than a batch of rows
            ],
        )
        db.session.commit()
        db.session.remove()

    response = staff.get("/staff/orders.csv?tab=all")
    pieces = iter(response.response)
    next(pieces)  # the header
    next(pieces)  # the first rows; the download stalls here
    with app.app_context(), db.engine.connect() as writer:
        if writer.dialect.name == "sqlite":
            writer.exec_driver_sql("PRAGMA busy_timeout = 500")
        writer.execute(update(Order).where(Order.number == "ELY-CSV00000").values(gift_message="!"))
        writer.commit()
    assert b"".join(pieces).decode().count("\r\n") == 1200 - 500
    response.close()


def test_csv_cells_a_spreadsheet_would_run_are_neutralised(staff, shop, app):
    set_stock(app, 20)
    formulas = {
        "equals": '=HYPERLINK("http://evil.example","Click")',
        "plus": "+SUM(1,2)",
        "minus": "-2+3",
        "at": "@SUM(A1)",
        "plain": "Ada Lovelace",
    }
    made = {kind: buy(shop, name=name) for kind, name in formulas.items()}
    # Whitespace first: checkout trims names, but older or imported data may not be.
    spaced = {"tab": "\t=1+1", "cr": "\r=1+1", "spaces": "   =1+1", "newline": "\n@A1"}
    for kind, name in spaced.items():
        made[kind] = buy(shop)
        edit_name(app, made[kind], name)
    gift = buy(shop, gift="=1+1 is what we are")

    header, *rows = csv_rows(staff.get("/staff/orders.csv?tab=all"))
    by_number = {row[0]: dict(zip(header, row, strict=True)) for row in rows}

    for kind, name in {**formulas, **spaced}.items():
        customer = by_number[made[kind]]["Customer"]
        if kind == "plain":
            assert customer == "Ada Lovelace"
        else:
            assert customer == "'" + name, kind
    assert by_number[gift]["Gift message"] == "'=1+1 is what we are"
    assert by_number[gift]["Total"] == "650.00"


# Stored markup stays text


def test_stored_markup_is_shown_as_text_on_every_page_and_in_the_csv(staff, shop, app):
    set_stock(app, 10)
    name = '"><img src=x onerror=alert(1)>'
    gift = "<script>alert('gift')</script>"
    engraving = "<script>alert('engraving')</script>"
    note = '<img src=x onerror="alert(3)"><b>bold</b>'
    number = buy(shop, name=name, gift=gift)
    with app.app_context():
        line = db.session.scalars(select(OrderLine).join(Order).where(Order.number == number)).one()
        line.configuration = {**line.configuration, "engraving": engraving}
        db.session.commit()
        db.session.remove()
    staff.get(f"/staff/orders/{number}")
    added = staff.post(
        f"/staff/orders/{number}/notes", data={"csrf_token": staff.csrf_token, "note": note}
    )
    assert added.status_code == 303

    pages = {
        "list": staff.get("/staff/orders"),
        "search": staff.htmx("GET", "/staff/orders?q=onerror"),
        "detail": staff.get(f"/staff/orders/{number}"),
        "packing slip": staff.get(f"/staff/orders/{number}/packing-slip"),
    }
    for where, response in pages.items():
        page = Page(response)
        # the only pictures are the pieces' own drawings
        assert all(img["src"].startswith("/art/") for img in page.select("img")), where
        assert not page.select("img[onerror]"), where
        assert not page.select("b"), where
        assert all(
            script.has_attr("src") and not script.get_text() for script in page.select("script")
        ), where
        assert not [tag for tag in page.soup.find_all(True) if tag.has_attr("onerror")], where
        assert name in page_text(response), where
    assert text_of(pages["list"], f"#order-{number} .order-row__name") == name
    detail = Page(pages["detail"])
    assert gift in text_of(detail, ".gift-message")
    assert detail.one(".engraving").get_text() == engraving
    assert note in text_of(detail, ".staff-timeline__entry--note .staff-timeline__text")
    slip = Page(pages["packing slip"])
    assert slip.one(".engraving").get_text() == engraving
    assert gift in text_of(slip, ".packing-slip__gift")
    csv_response = staff.get("/staff/orders.csv")
    assert csv_response.mimetype == "text/csv"
    header, row = csv_rows(csv_response)
    cells = dict(zip(header, row, strict=True))
    assert (cells["Customer"], cells["Gift message"]) == (name, gift)


# One order


def test_the_order_page_shows_pieces_configuration_customer_payment_and_shipment(staff, shop, app):
    set_stock(app, 10)
    number = buy(
        shop,
        email="grace@example.com",
        name="Grace Hopper",
        gift="For the ship's log",
        engraving="Amazing  Grace & Co.",
    )
    edit(
        app,
        number,
        status=S.SHIPPED,
        carrier="royal-mail",
        tracking_number="AB 1234 5678 GB",
        shipped_at=utcnow(),
    )
    with app.app_context():
        order = db.session.scalars(select(Order).where(Order.number == number)).one()
        session_id, intent = order.stripe_checkout_session_id, order.stripe_payment_intent_id
        db.session.remove()

    page = Page(staff.get(f"/staff/orders/{number}"))

    assert text_of(page, "h1") == f"Order {number}"
    [line] = page.select(".staff-line")
    assert text_of(line, ".staff-line__name") == "Aurelia Solitaire Ring \u00d7 1"
    assert page.one(".engraving").get_text() == "Amazing  Grace & Co."
    assert "US 6" in text_of(line, ".line-config")
    assert "yellow-gold/0.30ct" in text_of(line, ".line-config")
    assert "Grace Hopper" in text_of(page, ".order-addresses")
    assert "SW1Y 4JH" in text_of(page, ".order-addresses")
    assert "grace@example.com" in text_of(page, "#customer-heading + p")
    assert text_of(page, ".gift-message") == "For the ship's log"
    payment = text_of(page, ".staff-payment")
    assert session_id in payment
    assert intent
    assert intent in payment
    assert "Royal Mail Special Delivery" in text_of(page, "#shipment-heading + dl")
    assert page.one("#shipment-heading + dl a")["href"].startswith("https://www.royalmail.com/")
    assert page.select("#order-actions")  # where the fulfilment actions go


def test_refunds_are_listed_with_who_asked_for_them(staff, orders, app):
    number = orders.paid()
    with app.app_context():
        keeper = db.session.scalars(select(User.id).where(User.email == STAFF_EMAIL)).one()
        order = db.session.scalars(select(Order).where(Order.number == number)).one()
        order.refunds.append(
            Refund(
                amount=15000,
                currency="GBP",
                reason="Scratched clasp",
                status="succeeded",
                stripe_refund_id="re_test_1",
                idempotency_key=f"refund-{number}-1",
                actor_user_id=keeper,
            )
        )
        order.refunded_amount = 15000
        db.session.commit()
        db.session.remove()

    page = Page(staff.get(f"/staff/orders/{number}"))

    [row] = page.select(".staff-refunds tbody tr")
    cells = [text_of(cell) for cell in row.select("td")]
    assert cells[1:] == ["£150", "succeeded", "Kit Keeper", "Scratched clasp", "re_test_1"]
    assert "£150" in text_of(page, ".staff-payment")


def test_the_timeline_has_status_changes_payment_events_emails_and_notes_each_with_who_and_when(
    staff, orders, app
):
    number = orders.disputed()
    with app.app_context():
        email = db.session.scalars(
            select(OutboxEmail)
            .join(Order)
            .where(Order.number == number, OutboxEmail.template == "order_confirmation")
        ).one()
        email.status, email.attempts, email.last_error = (
            OutboxStatus.FAILED,
            5,
            "550 mailbox unavailable",
        )
        db.session.commit()
        db.session.remove()
    staff.get(f"/staff/orders/{number}")
    staff.post(
        f"/staff/orders/{number}/notes",
        data={"csrf_token": staff.csrf_token, "note": "Called the bank."},
    )

    page = Page(staff.get(f"/staff/orders/{number}"))

    entries = page.select("#order-timeline .staff-timeline__entry")
    for entry in entries:
        assert entry.select_one("time")["datetime"]
        assert text_of(entry, ".staff-timeline__who")
    [paid] = [
        e for e in entries if text_of(e, ".staff-timeline__title") == "Awaiting payment → Paid"
    ]
    assert text_of(paid, ".staff-timeline__who") == "stripe"
    assert "Stripe event evt_staff_" in text_of(paid)
    [dispute] = [e for e in entries if "The payment is disputed" in text_of(e)]
    assert "staff-timeline__entry--payment" in dispute["class"]
    assert text_of(dispute, ".staff-timeline__who") == "stripe"
    assert "Stripe event evt_staff_" in text_of(dispute)
    [failed] = page.select(".staff-timeline__entry--email-failed")
    assert "order_confirmation" in text_of(failed)
    assert "failed, 5 attempts: 550 mailbox unavailable" in text_of(failed)
    [staff_email] = [e for e in entries if "staff_dispute" in text_of(e)]
    assert "queued" in text_of(staff_email)
    [note] = page.select(".staff-timeline__entry--note")
    assert text_of(note, ".staff-timeline__who") == "Kit Keeper"
    assert text_of(note, ".staff-timeline__text") == "Called the bank."
    assert note.select_one("time")["datetime"].startswith(str(utcnow().date()))


# Notes


def test_a_note_added_without_javascript_lands_on_the_timeline(staff, orders, app):
    number = orders.paid()
    staff.get(f"/staff/orders/{number}")

    response = staff.post(
        f"/staff/orders/{number}/notes",
        data={"csrf_token": staff.csrf_token, "note": "Engrave after the\r\nsizing check.\r\n"},
    )

    assert response.status_code == 303
    assert response.location == f"/staff/orders/{number}#timeline"
    page = Page(staff.get(f"/staff/orders/{number}"))
    [note] = page.select(".staff-timeline__entry--note")
    assert note.select_one(".staff-timeline__text").get_text() == "Engrave after the\nsizing check."
    assert text_of(note, ".staff-timeline__who") == "Kit Keeper"
    assert "Note added." in text_of(page, "#messages")
    with app.app_context():
        event = db.session.scalars(
            select(OrderEvent).where(OrderEvent.note.startswith("Engrave"))
        ).one()
        user = db.session.get(User, event.actor_user_id)
        assert (event.actor, user.email, event.to_status) == (
            "Kit Keeper",
            "keeper@elysium.example",
            None,
        )
        db.session.remove()


def test_a_note_added_with_htmx_returns_a_fresh_form_and_the_new_timeline(staff, orders):
    number = orders.paid()
    staff.get(f"/staff/orders/{number}")

    response = staff.htmx(
        "POST", f"/staff/orders/{number}/notes", data={"note": "Gift wrap in navy."}
    )

    assert response.status_code == 200
    page = Page(response)
    form = page.one("form#note-form")
    assert form["hx-post"] == form["action"] == f"/staff/orders/{number}/notes"
    assert form["hx-target"] == "this"
    assert page.one("#note").get_text().strip() == ""
    timeline = page.one("#order-timeline")
    assert timeline["hx-swap-oob"] == "true"
    assert (
        text_of(timeline.select(".staff-timeline__entry--note")[-1], ".staff-timeline__text")
        == "Gift wrap in navy."
    )
    assert "Note added." in text_of(page, "#messages")


def attention_tab(staff) -> list[str]:
    page = Page(staff.get("/staff/orders?tab=attention"))
    return [text_of(row, ".order-row__number") for row in page.select(".order-row")]


@pytest.mark.parametrize("htmx", [False, True], ids=["plain", "htmx"])
def test_a_note_can_settle_a_warning_that_people_act_on(staff, orders, htmx):
    """A payment that came after the order was cancelled: staff refund it in Stripe and say
    so; the note takes the warning off. Before, nothing could, and the order stayed in "Needs
    attention" for ever."""
    number = orders.paid_after_cancellation()
    page = Page(staff.get(f"/staff/orders/{number}"))
    assert page.select("#settles")
    assert number in attention_tab(staff)
    data = {
        "note": "Refunded in Stripe's dashboard, ref re_123.",
        "settles": "y",
        "seen": page.one("#seen")["value"],
    }

    if htmx:
        response = staff.htmx("POST", f"/staff/orders/{number}/notes", data=data)
        assert response.headers["HX-Redirect"] == f"/staff/orders/{number}#timeline"
    else:
        response = staff.post(
            f"/staff/orders/{number}/notes", data={"csrf_token": staff.csrf_token, **data}
        )
        assert response.status_code == 303

    page = Page(staff.get(f"/staff/orders/{number}"))
    assert not page.select(".staff-order__attention")
    assert not page.select("#settles")
    [note] = page.select(".staff-timeline__entry--note")
    assert text_of(note, ".staff-timeline__text") == (
        "Settled what needed attention: Refunded in Stripe's dashboard, ref re_123."
    )
    assert number not in attention_tab(staff)


def flag_order(app: Flask, number: str, reason: str, *, on_timeline: bool = True) -> None:
    """A warning raised as the shop's own steps raise theirs (``checkout.flag``)."""
    with app.app_context():
        order = db.session.scalar(select(Order).where(Order.number == number))
        checkout.flag(order, reason, actor="Stripe", on_timeline=on_timeline)
        db.session.commit()


def attention_of(app: Flask, number: str) -> tuple[bool, str]:
    with app.app_context():
        order = db.session.scalar(select(Order).where(Order.number == number))
        return order.needs_attention, order.attention_reason


@pytest.mark.parametrize("htmx", [False, True], ids=["plain", "htmx"])
def test_a_warning_raised_while_the_note_was_written_is_not_settled_unread(
    staff, orders, app, htmx
):
    """The page showed one warning; a dispute's arrived as the note was written. Settling
    took every warning off, the unread one too: it is now refused, the note kept, both
    warnings on, until the page is read again."""
    number = orders.paid_after_cancellation()
    page = Page(staff.get(f"/staff/orders/{number}"))
    seen = page.one("#seen")["value"]
    flag_order(app, number, "A refund failed at Stripe: give it back again")
    typed = "Refunded in Stripe's dashboard, ref re_123."

    sent = {"note": typed, "settles": "y", "seen": seen}
    if htmx:
        response = staff.htmx("POST", f"/staff/orders/{number}/notes", data=sent)
    else:
        response = staff.post(
            f"/staff/orders/{number}/notes", data={"csrf_token": staff.csrf_token, **sent}
        )

    assert response.status_code == 422
    refused = Page(response)
    assert "The warning changed while you wrote" in field_error(refused, "settles")
    assert refused.one("#note").get_text().strip() == typed
    # The new warning is on screen (htmx: out of band) before the next try.
    assert "A refund failed at Stripe" in text_of(refused.one("#order-attention"))
    flagged, reasons = attention_of(app, number)
    assert flagged
    assert "A refund failed at Stripe" in reasons
    assert number in attention_tab(staff)

    again = Page(staff.get(f"/staff/orders/{number}"))
    settled = staff.post(
        f"/staff/orders/{number}/notes",
        data={
            "csrf_token": staff.csrf_token,
            "note": typed,
            "settles": "y",
            "seen": again.one("#seen")["value"],
        },
    )
    assert settled.status_code == 303
    assert attention_of(app, number) == (False, "")


# Raised as a refund's failure raises it (``payments.refund_failed``).
REFUND_FAILED = f"{REFUND_FAILED_FLAG}: £650.00 did not reach the shopper and is back with the shop"
SETTLING = "Refunded in Stripe's dashboard, ref re_123."


def settled_unread(staff, app, number: str, form) -> None:
    """``form`` (the note form htmx drew, with no warning beside it) sent to settle: the
    warning raised meanwhile is refused until read, then on screen (out of band)."""
    fields = {**form_fields(form), "note": SETTLING, "settles": "y"}
    response = staff.htmx("POST", f"/staff/orders/{number}/notes", data=fields)

    assert response.status_code == 422, (response.status_code, attention_of(app, number))
    assert "The warning changed while you wrote" in field_error(response, "settles")
    assert REFUND_FAILED_FLAG in text_of(Page(response).one("#order-attention"))
    flagged, reasons = attention_of(app, number)
    assert flagged
    assert REFUND_FAILED_FLAG in reasons


@pytest.mark.parametrize("typed", ["", "Long story. " * 170], ids=["empty", "too_long"])
def test_a_note_sent_back_to_correct_keeps_the_warning_its_page_showed(staff, orders, app, typed):
    """The page showed one warning (a payment after the order was cancelled); a refund failed
    at Stripe as the note settling it was written, and the note went first empty (or too
    long). With htmx the note form alone came back, nothing of the new warning on screen, yet
    it said its page had shown it: sent again, the note settled a failed refund nobody read,
    and the money the shop holds left "Needs attention" (found by review)."""
    number = orders.paid_after_cancellation()
    page = Page(staff.get(f"/staff/orders/{number}"))
    flag_order(app, number, REFUND_FAILED)
    fields = {**form_fields(page, "form#note-form"), "note": typed, "settles": "y"}

    refused = staff.htmx("POST", f"/staff/orders/{number}/notes", data=fields)

    assert refused.status_code == 422
    assert REFUND_FAILED_FLAG not in page_text(refused)
    settled_unread(staff, app, number, Page(refused).one("form#note-form"))


def test_the_fresh_note_form_after_a_note_keeps_the_warning_its_page_showed(staff, orders, app):
    """A note added with htmx brings a fresh form and the new timeline, not the warnings: the
    fresh form said its page had shown a refund failed meanwhile, and settled it unread."""
    number = orders.paid_after_cancellation()
    page = Page(staff.get(f"/staff/orders/{number}"))
    flag_order(app, number, REFUND_FAILED)
    fields = {**form_fields(page, "form#note-form"), "note": "Called the customer."}

    added = staff.htmx("POST", f"/staff/orders/{number}/notes", data=fields)

    assert added.status_code == 200
    assert "Needs attention" not in page_text(added)
    settled_unread(staff, app, number, Page(added).one("form#note-form"))


@pytest.mark.parametrize("step", [fulfilment.CANCEL_TO_FINISH_FLAG, fulfilment.REFUND_AWAITED_FLAG])
def test_a_step_left_half_done_is_never_settled_by_a_note(staff, orders, app, step):
    """A refund awaiting Stripe's answer, a cancel to finish: only the step takes its warning
    off. Settling the order's other warnings leaves it on; alone, it offers no settling."""
    number = orders.paid()
    flag_order(app, number, "Check the engraving with the client")
    flag_order(app, number, step, on_timeline=False)
    page = Page(staff.get(f"/staff/orders/{number}"))

    settled = staff.post(
        f"/staff/orders/{number}/notes",
        data={
            "csrf_token": staff.csrf_token,
            "note": "Engraving checked by phone.",
            "settles": "y",
            "seen": page.one("#seen")["value"],
        },
    )

    assert settled.status_code == 303
    assert attention_of(app, number) == (True, step)
    assert number in attention_tab(staff)
    assert not Page(staff.get(f"/staff/orders/{number}")).select("#settles")
    refused = staff.post(
        f"/staff/orders/{number}/notes",
        data={"csrf_token": staff.csrf_token, "note": "Done.", "settles": "y", "seen": ""},
    )
    assert refused.status_code == 422
    assert attention_of(app, number) == (True, step)


@pytest.mark.parametrize("order", ["amount_mismatch", "disputed"])
def test_a_warning_its_payment_or_dispute_decides_is_not_settled_by_hand(staff, orders, order):
    """A payment the shop refused waits for Cancel (which refunds it); an open dispute waits
    for its outcome. Neither offers to settle it by hand, and a note that says so is refused
    with what was typed kept."""
    number = getattr(orders, order)()
    assert not Page(staff.get(f"/staff/orders/{number}")).select("#settles")
    typed = "Sorted, I think."

    response = staff.post(
        f"/staff/orders/{number}/notes",
        data={"csrf_token": staff.csrf_token, "note": typed, "settles": "y"},
    )

    assert response.status_code == 422
    page = Page(response)
    assert "can be marked settled by hand" in field_error(page, "settles")
    assert page.one("#note").get_text().strip() == typed
    assert number in attention_tab(staff)
    assert not Page(staff.get(f"/staff/orders/{number}")).select(".staff-timeline__entry--note")


@pytest.mark.parametrize("htmx", [False, True], ids=["plain", "htmx"])
def test_an_empty_note_is_refused_and_what_was_typed_is_kept(staff, orders, htmx):
    number = orders.paid()
    staff.get(f"/staff/orders/{number}")
    typed = "   \r\n\t  "

    if htmx:
        response = staff.htmx("POST", f"/staff/orders/{number}/notes", data={"note": typed})
    else:
        response = staff.post(
            f"/staff/orders/{number}/notes", data={"csrf_token": staff.csrf_token, "note": typed}
        )

    assert response.status_code == 422
    page = Page(response)
    assert field_error(page, "note") == "Write the note first."
    assert page.one("#note")["aria-invalid"] == "true"
    # WTForms starts a textarea with a line break, which browsers drop; the rest is as typed.
    assert page.one("#note").get_text().removeprefix("\r\n") == typed
    assert not page.select(".staff-timeline__entry--note")
    if htmx:
        assert [element["id"] for element in page.top()] == ["note-form"]
    else:
        assert text_of(page, "h1") == f"Order {number}"


@pytest.mark.parametrize("htmx", [False, True], ids=["plain", "htmx"])
def test_a_note_over_2000_characters_is_refused_and_kept(staff, orders, htmx):
    number = orders.paid()
    staff.get(f"/staff/orders/{number}")
    typed = "Long story. " * 170  # 2040 characters

    if htmx:
        response = staff.htmx("POST", f"/staff/orders/{number}/notes", data={"note": typed})
    else:
        response = staff.post(
            f"/staff/orders/{number}/notes", data={"csrf_token": staff.csrf_token, "note": typed}
        )

    assert response.status_code == 422
    assert field_error(response, "note") == "Keep a note to 2000 characters."
    assert Page(response).one("#note").get_text().strip() == typed.strip()
    detail = Page(staff.get(f"/staff/orders/{number}"))
    assert not detail.select(".staff-timeline__entry--note")


def test_a_note_of_exactly_2000_characters_with_browser_line_breaks_is_kept(staff, orders):
    number = orders.paid()
    staff.get(f"/staff/orders/{number}")
    typed = "\r\n".join(["x" * 99] * 20)  # 2000 characters once each line break is one

    response = staff.post(
        f"/staff/orders/{number}/notes", data={"csrf_token": staff.csrf_token, "note": typed}
    )

    assert response.status_code == 303


def test_notes_never_reach_the_shopper(staff, shop, app):
    set_stock(app, 10)
    client = shop.client()
    add_chain(client)
    session_id = session_id_from(check_out(client).location)
    shop.fake.pay(session_id)
    with app.app_context():
        order = db.session.scalars(
            select(Order).where(Order.stripe_checkout_session_id == session_id)
        ).one()
        number = order.number
        db.session.remove()
    staff.get(f"/staff/orders/{number}")
    staff.post(
        f"/staff/orders/{number}/notes",
        data={"csrf_token": staff.csrf_token, "note": "Customer seemed unsure."},
    )

    shopper_view = client.get(f"/checkout/success?session_id={session_id}")

    assert shopper_view.status_code == 200
    assert number in page_text(shopper_view)
    assert "Customer seemed unsure." not in page_text(shopper_view)
    assert "Kit Keeper" not in page_text(shopper_view)


def test_a_note_needs_the_csrf_token_and_an_existing_order(staff, orders):
    number = orders.paid()
    refused = staff.post(f"/staff/orders/{number}/notes", data={"note": "No token"})
    assert refused.status_code == 400
    staff.get(f"/staff/orders/{number}")
    missing = staff.post(
        "/staff/orders/ELY-NOSUCH22/notes", data={"csrf_token": staff.csrf_token, "note": "Hello"}
    )
    assert missing.status_code == 404
    assert staff.get("/staff/orders/ELY-NOSUCH22").status_code == 404
    assert staff.get("/staff/orders/ELY-NOSUCH22/packing-slip").status_code == 404


# The packing slip


def test_the_packing_slip_has_the_pieces_address_and_gift_message_and_no_prices(staff, shop, app):
    set_stock(app, 10)
    number = buy(
        shop, name="Grace Hopper", gift="Happy birthday,\nlove from Ada", engraving="Forever"
    )

    response = staff.get(f"/staff/orders/{number}/packing-slip")

    assert response.status_code == 200
    page = Page(response)
    slip = page.one(".packing-slip")
    assert number in text_of(slip, ".packing-slip__number")
    assert "Grace Hopper" in text_of(slip, ".packing-slip__address")
    assert "SW1Y 4JH" in text_of(slip, ".packing-slip__address")
    assert (
        page.one(".packing-slip__gift .gift-message").get_text() == "Happy birthday,\nlove from Ada"
    )
    [line] = slip.select(".packing-slip__line")
    assert "Aurelia Solitaire Ring" in text_of(line)
    assert line.select_one(".engraving").get_text() == "Forever"
    assert "US 6" in text_of(line)
    assert "£" not in text_of(slip)
    stylesheets = [link["href"] for link in page.select('link[rel="stylesheet"]')]
    [print_css] = [href for href in stylesheets if "print" in href]
    assert print_css.startswith("/static/")
    with staff.get(print_css) as served:
        assert served.status_code == 200
        assert "@media print" in served.get_data(as_text=True)


def test_a_packing_slip_without_a_gift_message_has_no_gift_section(staff, orders):
    number = orders.paid()
    page = Page(staff.get(f"/staff/orders/{number}/packing-slip"))
    assert not page.select(".packing-slip__gift")
    assert page.select(".packing-slip__line")


# Costs and access


def test_the_list_costs_the_same_queries_for_few_or_many_orders(staff, orders, queries):
    orders.paid()
    staff.get("/staff/orders?tab=all")
    with queries() as few:
        staff.get("/staff/orders?tab=all")
        staff.htmx("GET", "/staff/orders?tab=all&q=ELY")
        staff.htmx("GET", "/staff/orders/counts?tab=all")
    for _ in range(4):
        orders.disputed()
        orders.refunded()
        orders.pending()
    with queries() as many:
        staff.get("/staff/orders?tab=all")
        staff.htmx("GET", "/staff/orders?tab=all&q=ELY")
        staff.htmx("GET", "/staff/orders/counts?tab=all")

    assert len(many) == len(few)


def test_an_order_page_costs_the_same_queries_however_long_its_history(staff, orders, queries):
    short, long = orders.paid(), orders.disputed()
    staff.get(f"/staff/orders/{long}")
    for n in range(5):
        staff.post(
            f"/staff/orders/{long}/notes",
            data={"csrf_token": staff.csrf_token, "note": f"Note {n}"},
        )
    with queries() as few:
        staff.get(f"/staff/orders/{short}")
    with queries() as many:
        staff.get(f"/staff/orders/{long}")

    assert len(many) == len(few)


@pytest.mark.parametrize("path", ["", ".csv", "/counts", "/{number}", "/{number}/packing-slip"])
def test_orders_are_for_staff_only(app, client, orders, path):
    number = orders.paid()
    url = "/staff/orders" + path.format(number=number)
    guest = client.get(url)
    assert guest.status_code in (302, 303)
    assert "/auth/login" in guest.location
    with app.app_context():
        create_user("shopper@example.com")
    client.submit(
        "/auth/login", {"email": "shopper@example.com", "password": "correct horse battery staple"}
    )
    assert client.get(url).status_code == 404


def test_the_same_note_form_sent_twice_is_one_note(staff, orders, app):
    """Sent twice (a double click without JavaScript, or again when its answer was lost), a
    note was on the order's timeline twice (found by review)."""
    number = orders.paid()
    fields = form_fields(Page(staff.get(f"/staff/orders/{number}")), "form#note-form")
    url, data = f"/staff/orders/{number}/notes", {**fields, "note": "Gift wrap in navy."}

    assert staff.post(url, data=data).status_code == 303
    assert staff.post(url, data=data).status_code == 303
    # Sent again changed (other words): refused, what was typed kept, nothing claimed.
    changed = staff.post(url, data={**data, "note": "Gift wrap in green."})
    assert changed.status_code == 422
    assert "was added already" in page_text(changed)
    assert "Gift wrap in green." in page_text(changed)

    with app.app_context():
        notes = db.session.scalars(
            select(OrderEvent.note).join(Order).where(Order.number == number)
        ).all()
        db.session.remove()
    assert list(notes).count("Gift wrap in navy.") == 1
