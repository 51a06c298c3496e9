"""/staff: the figures a jeweller opens the day with, each right on crafted data, each leading
to the list it counts, in a fixed number of queries whatever the shop's size."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from itertools import count
from zoneinfo import ZoneInfo

import pytest
from flask import Flask

from elysium.extensions import db
from elysium.models import (
    BespokeLead,
    Category,
    Inventory,
    LeadStatus,
    OptionKind,
    Order,
    OrderStatus,
    Product,
    ProductOption,
)
from elysium.services import staff_dashboard
from elysium.services.staff_dashboard import Takings
from tests.conftest import ShopClient
from tests.html import Page, elements, text_of
from tests.support.staff import staff_client

S = OrderStatus
LONDON = ZoneInfo("Europe/London")
order_numbers = count(1)
product_numbers = count(1)


@pytest.fixture
def staff(app: Flask) -> ShopClient:
    return staff_client(app)


def add_order(
    app: Flask,
    status: OrderStatus = S.PAID,
    *,
    paid_at: datetime | None = None,
    total: int = 10_000,
    currency: str = "GBP",
    attention: bool = False,
) -> None:
    with app.app_context():
        db.session.add(
            Order(
                number=f"ELY-DASH{next(order_numbers):04d}",
                email="shopper@example.com",
                status=status,
                currency=currency,
                subtotal=total,
                total=total,
                shipping_address={"full_name": "Ada Lovelace"},
                billing_address={"full_name": "Ada Lovelace"},
                paid_at=paid_at,
                needs_attention=attention,
                attention_reason="A dispute was opened" if attention else "",
            )
        )
        db.session.commit()
        db.session.remove()


def add_variants(
    app: Flask, levels: list[tuple[int, int, int]], *, lead_time: int | None = None
) -> None:
    """A product with one metal, and its variant, per (stock_level, reserved, threshold)."""
    number = next(product_numbers)
    with app.app_context():
        product = Product(
            slug=f"dashboard-piece-{number}",
            name=f"Dashboard piece {number}",
            category=Category.RING,
            base_price=100_000,
            currency="GBP",
            lead_time_weeks=lead_time,
        )
        for index, (stock, reserved, threshold) in enumerate(levels):
            product.options.append(
                ProductOption(kind=OptionKind.METAL, code=f"metal-{index}", label=f"Metal {index}")
            )
            product.inventory.append(
                Inventory(
                    variant_key=f"metal-{index}",
                    stock_level=stock,
                    reserved=reserved,
                    low_stock_threshold=threshold,
                )
            )
        db.session.add(product)
        db.session.commit()
        db.session.remove()


def add_lead(app: Flask, status: LeadStatus = LeadStatus.NEW) -> None:
    with app.app_context():
        db.session.add(
            BespokeLead(name="Grace", email="grace@example.com", message="A ring", status=status)
        )
        db.session.commit()
        db.session.remove()


def figure(page: Page, card: str) -> str:
    return text_of(page, f"#dashboard-{card} .dashboard-card__figure")


def link(page: Page, card: str) -> str | None:
    found = elements(page, f"#dashboard-{card} a")
    return str(found[0]["href"]) if found else None


def london_midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=LONDON).astimezone(UTC)


def test_orders_to_fulfil_to_ship_and_needing_attention_link_to_their_tabs(app, staff):
    for status in (S.PAID, S.PAID, S.FULFILLED, S.FULFILLED, S.FULFILLED, S.SHIPPED, S.PENDING):
        add_order(app, status)
    add_order(app, S.PAID, attention=True)  # an amount that didn't match, say
    add_order(app, S.CANCELLED, attention=True)  # paid after it was cancelled
    add_order(app, S.DELIVERED, attention=True)  # disputed

    page = Page(staff.get("/staff"))

    assert figure(page, "to-fulfil") == "3"
    assert figure(page, "to-ship") == "3"
    assert figure(page, "attention") == "3"
    assert link(page, "to-fulfil") == "/staff/orders?tab=to-fulfil"
    assert link(page, "to-ship") == "/staff/orders?tab=to-ship"
    assert link(page, "attention") == "/staff/orders?tab=attention"


def test_paid_today_and_in_the_last_seven_days_are_london_days_with_their_money(app, staff):
    today = datetime.now(LONDON).date()
    midnight = london_midnight(today)
    week_start = london_midnight(today - timedelta(days=6))
    minute = timedelta(minutes=1)
    add_order(app, S.PAID, paid_at=midnight + minute, total=12_345)
    add_order(app, S.SHIPPED, paid_at=midnight + minute, total=100_000)
    add_order(app, S.REFUNDED, paid_at=midnight - minute, total=50)  # yesterday, late
    add_order(app, S.DELIVERED, paid_at=week_start + minute, total=99_999)
    add_order(app, S.DELIVERED, paid_at=week_start - minute, total=777)  # eight days ago
    add_order(app, S.PENDING, total=5_000)  # never paid

    page = Page(staff.get("/staff"))

    assert figure(page, "paid-today") == "£1,123.45 2 orders"
    assert figure(page, "paid-week") == "£2,123.94 4 orders"
    assert today.strftime("%A %-d %B %Y") in text_of(page, ".page-header")
    week_from = today - timedelta(days=6)
    assert week_from.strftime("Since %A %-d %B") in text_of(page, "#dashboard-paid-week")


def test_an_empty_shop_shows_nothing_paid_in_its_own_currency(app, staff):
    page = Page(staff.get("/staff"))

    assert figure(page, "paid-today") == "£0 0 orders"
    assert figure(page, "paid-week") == "£0 0 orders"
    for card in ("to-fulfil", "to-ship", "attention", "low-stock", "leads"):
        assert figure(page, card) == "0"


def test_orders_paid_in_another_currency_are_summed_apart(app, staff):
    now = datetime.now(UTC)
    add_order(app, paid_at=now, total=20_000)
    add_order(app, paid_at=now, total=30_050, currency="EUR")
    add_order(app, paid_at=now, total=1_000, currency="EUR")

    page = Page(staff.get("/staff"))

    figures = [
        " ".join(p.get_text().split())
        for p in page.select("#dashboard-paid-today .dashboard-card__figure")
    ]
    assert figures == ["£200 1 order", "€310.50 2 orders"]


@pytest.mark.parametrize(
    ("now", "paid_at", "today"),
    [
        # British Summer Time: London's day starts at 23:00 UTC the evening before.
        (
            datetime(2025, 7, 2, 9, 0, tzinfo=UTC),
            [datetime(2025, 7, 1, 23, 0, tzinfo=UTC), datetime(2025, 7, 1, 22, 59, tzinfo=UTC)],
            date(2025, 7, 2),
        ),
        # Greenwich Mean Time: London's day and UTC's are one.
        (
            datetime(2025, 1, 2, 9, 0, tzinfo=UTC),
            [datetime(2025, 1, 2, 0, 0, tzinfo=UTC), datetime(2025, 1, 1, 23, 59, tzinfo=UTC)],
            date(2025, 1, 2),
        ),
    ],
)
def test_today_begins_at_midnight_in_london_summer_and_winter(app, now, paid_at, today):
    first_of_today, last_of_yesterday = paid_at
    add_order(app, paid_at=first_of_today, total=5_000)
    add_order(app, paid_at=last_of_yesterday, total=700)

    with app.app_context():
        figures = staff_dashboard.dashboard(db.session, currency="GBP", now=now)
        db.session.remove()

    assert figures.today == today
    assert figures.paid_today == [Takings("GBP", 1, 5_000)]
    assert figures.paid_week == [Takings("GBP", 2, 5_700)]


def test_low_and_sold_out_variants_link_to_the_low_stock_list(app, staff):
    add_variants(
        app,
        [
            (3, 1, 2),  # 2 left, threshold 2: low
            (3, 0, 2),  # 3 left: not yet
            (2, 2, 0),  # none left to sell: sold out
            (0, 0, 0),  # sold out with a threshold of 0
            (10, 0, 2),
        ],
    )
    add_variants(app, [(0, 0, 2), (1, 0, 2)], lead_time=4)  # made to order: only the 1 is low

    page = Page(staff.get("/staff"))

    assert figure(page, "low-stock") == "4"
    assert link(page, "low-stock") == "/staff/inventory?low=1"
    stock_page = staff.get(link(page, "low-stock"))
    assert len(elements(stock_page, "tr.stock-row")) == 4


def test_new_commissions_are_counted_and_link_to_their_tab(app, staff):
    add_lead(app)
    add_lead(app)
    add_lead(app, LeadStatus.CONTACTED)

    page = Page(staff.get("/staff"))

    assert figure(page, "leads") == "2"
    assert link(page, "leads") == "/staff/leads?tab=new"


def test_the_dashboard_asks_as_many_queries_for_30_orders_and_variants_as_for_1(
    app, staff, queries
):
    def grow(to: int, have: int) -> None:
        now = datetime.now(UTC)
        for index in range(have, to):
            status = (S.PAID, S.FULFILLED, S.SHIPPED)[index % 3]
            add_order(app, status, paid_at=now, total=1_000 + index, attention=index % 2 == 0)
            add_lead(app)
        add_variants(app, [(1, 0, 2)] * (to - have))

    grow(1, 0)
    staff.get("/staff")
    with queries() as small:
        one = Page(staff.get("/staff"))
    grow(30, 1)
    with queries() as large:
        thirty = Page(staff.get("/staff"))

    assert (figure(one, "to-fulfil"), figure(thirty, "to-fulfil")) == ("1", "10")
    assert (figure(one, "low-stock"), figure(thirty, "low-stock")) == ("1", "30")
    assert len(large) == len(small)
