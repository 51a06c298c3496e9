"""What the back office's first page counts: orders waiting for the workshop and the courier,
what was paid today and in the last seven days, orders that need a person, variants running
low, new bespoke leads, the week's most viewed pieces. Four queries, however many orders and
variants there are, and one for the most viewed (``views.most_viewed``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, or_, select

from elysium.house_time import HOUSE_TIME
from elysium.models.inventory import Inventory
from elysium.models.orders import Order, OrderStatus
from elysium.models.types import utcnow
from elysium.services.sql import AnySession
from elysium.services.staff_leads import new_leads as newest_new_leads
from elysium.services.stock_admin import needs_stock
from elysium.services.views import ViewedPiece, most_viewed

WEEK_DAYS = 7


@dataclass(frozen=True)
class Takings:
    """Orders paid in a period, in one currency; ``amount`` in minor units."""

    currency: str
    orders: int
    amount: int


@dataclass(frozen=True)
class Dashboard:
    to_fulfil: int
    to_ship: int
    needs_attention: int
    today: date
    paid_today: list[Takings]
    paid_week: list[Takings]
    low_stock: int
    new_leads: int
    newest_leads: list[Any]  # the newest few new leads: (id, name, category, created_at)

    # The week's most viewed pieces with their view-to-bag and view-to-order ratios (one
    # query: ``views.most_viewed``, where the ratios are defined).
    most_viewed: list[ViewedPiece] = field(default_factory=list)

    @property
    def week_from(self) -> date:
        """The first day of the last seven, today being the seventh."""
        return self.today - timedelta(days=WEEK_DAYS - 1)


def day_start(day: date) -> datetime:
    """When ``day`` begins in the shop's time zone, in UTC."""
    return datetime.combine(day, time.min, tzinfo=HOUSE_TIME).astimezone(UTC)


def _how_many(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def _takings(rows: list[tuple[str, int, int]], shop_currency: str) -> list[Takings]:
    """The shop's currency always first (zero if nothing was paid), then any other."""
    found = {currency: Takings(currency, orders, amount) for currency, orders, amount in rows}
    shop = found.pop(shop_currency, Takings(shop_currency, 0, 0))
    return [shop, *(found[currency] for currency in sorted(found))]


def dashboard(session: AnySession, *, currency: str, now: datetime | None = None) -> Dashboard:
    """Every figure of the dashboard; ``currency`` is the shop's, ``now`` defaults to now.

    An order counts as paid on the day its payment arrived (``paid_at``), whatever happened to
    it since; the amount is its total as paid, refunds not taken off.
    """
    today = (now or utcnow()).astimezone(HOUSE_TIME).date()
    today_from = day_start(today)
    week_from = day_start(today - timedelta(days=WEEK_DAYS - 1))

    to_fulfil, to_ship, attention = session.execute(
        select(
            # A deposit on a commission is not a piece to make (as in the orders' tabs).
            _how_many(and_(Order.status == OrderStatus.PAID, Order.bespoke_quote_id.is_(None))),
            _how_many(Order.status == OrderStatus.FULFILLED),
            _how_many(Order.needs_attention.is_(True)),
        ).where(
            or_(
                Order.status.in_([OrderStatus.PAID, OrderStatus.FULFILLED]),
                Order.needs_attention.is_(True),
            )
        )
    ).one()

    paid_today = Order.paid_at >= today_from
    takings = session.execute(
        select(
            Order.currency,
            _how_many(paid_today),
            func.coalesce(func.sum(case((paid_today, Order.total), else_=0)), 0),
            func.count(),
            func.coalesce(func.sum(Order.total), 0),
        )
        .where(Order.paid_at >= week_from)
        .group_by(Order.currency)
    ).all()

    low_stock = session.scalar(
        select(func.count()).select_from(Inventory).join(Inventory.product).where(needs_stock())
    )
    new_leads = newest_new_leads(session)
    return Dashboard(
        to_fulfil=int(to_fulfil),
        to_ship=int(to_ship),
        needs_attention=int(attention),
        today=today,
        paid_today=_takings(
            [(code, int(n), int(amount)) for code, n, amount, _, _ in takings], currency
        ),
        paid_week=_takings(
            [(code, int(n), int(amount)) for code, _, _, n, amount in takings], currency
        ),
        low_stock=int(low_stock or 0),
        most_viewed=most_viewed(session, since=week_from),
        new_leads=new_leads.count,
        newest_leads=new_leads.newest,
    )
