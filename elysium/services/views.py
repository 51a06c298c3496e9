"""Browsing memory: which pieces a visitor looked at, and what the shop makes of it.

A row of ``product_views`` says that a product page was served to a visitor: a signed-in user
(``user_id``) or a guest, known only by the random id in their visitor cookie (``visitor``);
never an address, a user agent or a query string. Exactly one of the two is set.

Recording a view is the one write a GET may cause. It writes ``product_views`` and nothing
else, through the app's own session, so it always goes to the primary database (a read
replica, if the shop ever has one, must never be handed this session). The caller commits
(:mod:`elysium.web.browsing`, which also makes sure a failure never breaks the page).

What is read back:

- **recently viewed** (:func:`recently_viewed`): a visitor's last pieces, newest first,
  in one query, however long the history; it also tells when the visitor last saw the piece
  on screen, so its page records a repeat view without a write;
- **trending** (:func:`trending`): the most viewed pieces of the last seven days, one
  aggregate query whose answer (product ids, never ORM objects) is cached for
  ``CACHE_DEFAULT_TIMEOUT`` seconds; the pieces are loaded and filtered by ``published`` on every
  read, so a piece taken off sale never shows from the cache;
- **the week's most viewed** for the staff dashboard (:func:`most_viewed`), with their
  view-to-bag and view-to-order ratios, in one query.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    String,
    bindparam,
    delete,
    distinct,
    exists,
    func,
    insert,
    literal,
    select,
    update,
)

from elysium.extensions import cache
from elysium.models.cart import CartLine
from elysium.models.catalog import Product
from elysium.models.engagement import ProductView
from elysium.models.orders import Order, OrderLine
from elysium.models.types import UTCDateTime, utcnow
from elysium.services.sql import AnySession

logger = logging.getLogger(__name__)

REPEAT_WINDOW = timedelta(minutes=30)
RECENT_LIMIT = 8
TRENDING_DAYS = 7
TRENDING_LIMIT = 4
TRENDING_MIN_PIECES = 4
TRENDING_CACHE_KEY = "views:trending:v1"
MOST_VIEWED_LIMIT = 5
MAX_VISITOR_LENGTH = 64


def _viewer(user_id: int | None, visitor: str | None) -> ColumnElement[bool]:
    if user_id is not None:
        return ProductView.user_id == user_id
    if visitor:
        return ProductView.visitor == visitor
    raise ValueError("a view needs a user or a visitor")


def _lock_key(product_id: int, user_id: int | None, visitor: str | None) -> int:
    """A signed 64-bit key for PostgreSQL's advisory lock on (visitor, piece)."""
    digest = hashlib.blake2b(f"view:{product_id}:{user_id}:{visitor}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)


def record_view(
    session: AnySession,
    product_id: int,
    *,
    user_id: int | None = None,
    visitor: str | None = None,
    now: datetime | None = None,
    last_seen: datetime | None = None,
) -> bool:
    """Record that ``product_id`` was shown to the user (or else the guest ``visitor``).

    A repeat view of the same piece by the same visitor within ``REPEAT_WINDOW`` counts once:
    one conditional ``INSERT … SELECT … WHERE NOT EXISTS (a view in the window)``, never a
    read then a write. On PostgreSQL two requests of the same visitor for the same piece at
    the same moment could both pass the ``NOT EXISTS`` (read committed), so the statement
    first takes a transaction-scoped advisory lock on (visitor, piece) *without waiting*:
    whoever doesn't get it is the other request's repeat, and records nothing. SQLite has one
    writer at a time, so the single statement is enough. A piece deleted meanwhile inserts
    nothing (the rows are selected from ``products``). Returns whether a row was written.
    Writes ``product_views`` only; the caller commits, in a transaction that holds the view
    alone: on PostgreSQL that commit doesn't wait for the disk (``synchronous_commit`` is off
    for this transaction only).

    ``last_seen``: when this visitor's last view of the piece was, if the caller has just read
    it (:func:`recently_viewed`, on the same page). A view inside the window is a repeat
    known already: nothing is locked or written, and nothing is sent to the database. A read
    that saw no such view proves nothing (it may be older than what it read, or on a replica
    that lags), so then the statement decides as always.
    """
    if user_id is not None:
        visitor = None
    now = now or utcnow()
    if last_seen is not None and last_seen > now - REPEAT_WINDOW:
        return False
    if session.get_bind(ProductView).dialect.name == "postgresql":
        key = _lock_key(product_id, user_id, visitor)
        # In the same round trip: this transaction's commit doesn't wait for the disk. A view
        # is a statistic, not a sale: a crash of the server may lose the last moment's views,
        # never anything else (the transaction holds the view alone).
        locked = select(
            func.pg_try_advisory_xact_lock(key),
            func.set_config("synchronous_commit", "off", True),
        )
        if not session.execute(locked).one()[0]:
            return False
    repeat = exists().where(
        ProductView.product_id == product_id,
        _viewer(user_id, visitor),
        ProductView.viewed_at > now - REPEAT_WINDOW,
    )
    rows = select(
        Product.id,
        literal(user_id, Integer),
        literal(visitor, String),
        literal(now, UTCDateTime()),
    ).where(Product.id == product_id, ~repeat)
    result = session.execute(
        insert(ProductView).from_select(["product_id", "user_id", "visitor", "viewed_at"], rows),
        # An INSERT's row count is kept only when asked for (else -1 on PostgreSQL).
        execution_options={"preserve_rowcount": True},
    )
    return result.rowcount == 1


def adopt_guest_views(session: AnySession, visitor: str, user_id: int) -> int:
    """At sign-in: the guest's views become the user's, so their history follows them."""
    return session.execute(
        update(ProductView)
        .where(ProductView.visitor == visitor, ProductView.user_id.is_(None))
        .values(user_id=user_id, visitor=None)
        .execution_options(synchronize_session=False)
    ).rowcount


@dataclass(frozen=True)
class RecentlyViewed:
    """A visitor's recently viewed pieces (``ids``, newest first, the piece on screen left
    out) and when they last saw the piece on screen (``last_seen``; None if it is not among
    their newest, or they never saw it)."""

    ids: list[int]
    last_seen: datetime | None = None


def _recent_views(by_account: bool) -> Select:
    """The statement behind :func:`recently_viewed`, for an account's views or a guest's
    (``viewer`` is bound to the user id or the visitor id)."""
    last_seen = func.max(ProductView.viewed_at)
    viewer = ProductView.user_id if by_account else ProductView.visitor
    return (
        select(ProductView.product_id, Product.slug, last_seen.label("last_seen"))
        .join(Product, Product.id == ProductView.product_id)
        .where(viewer == bindparam("viewer"), Product.published.is_(True))
        .group_by(ProductView.product_id, Product.slug)
        .order_by(last_seen.desc(), ProductView.product_id.desc())
        .limit(RECENT_LIMIT + 1)
    )


# Built once each: asked on every product page.
RECENT_FOR_ACCOUNT = _recent_views(by_account=True)
RECENT_FOR_GUEST = _recent_views(by_account=False)


def recently_viewed_query(
    *, user_id: int | None = None, visitor: str | None = None
) -> tuple[Select, dict[str, object]] | None:
    """:func:`recently_viewed`'s statement and its parameters, to run alone or beside another
    read in the same round trip (:func:`recent_from_rows` reads its rows); None for a visitor
    with no id."""
    if user_id is not None:
        return RECENT_FOR_ACCOUNT, {"viewer": user_id}
    if visitor:
        return RECENT_FOR_GUEST, {"viewer": visitor}
    return None


def recent_from_rows(
    rows: Iterable[tuple[int, str, datetime]], on_screen: str | None
) -> RecentlyViewed:
    """What the rows of :func:`recently_viewed_query` say (in any order: they are put in
    order here, newest first), the piece whose slug is ``on_screen`` left out."""
    ordered = sorted(rows, key=lambda row: (row[2], row[0]), reverse=True)
    ids: list[int] = []
    seen_on_screen: datetime | None = None
    for product_id, slug, when in ordered:
        if slug == on_screen:
            seen_on_screen = when
        elif len(ids) < RECENT_LIMIT:
            ids.append(int(product_id))
    return RecentlyViewed(ids, seen_on_screen)


def recently_viewed(
    session: AnySession,
    *,
    user_id: int | None = None,
    visitor: str | None = None,
    on_screen: str | None = None,
) -> RecentlyViewed:
    """Up to ``RECENT_LIMIT`` distinct published pieces the visitor viewed, newest first, the
    piece whose slug is ``on_screen`` left out: one small query, however many were viewed (the
    pieces are shown as cards, ``catalog.product_cards``); none for a visitor with no id.

    The query asks for one piece more than it shows, with each piece's last view, so when the
    piece on screen is among the newest its page learns when it was last seen for nothing
    (``record_view``'s ``last_seen``).
    """
    query = recently_viewed_query(user_id=user_id, visitor=visitor)
    if query is None:
        return RecentlyViewed([])
    statement, parameters = query
    return recent_from_rows(session.execute(statement, parameters), on_screen)


def _trending_ids(session: AnySession, now: datetime) -> list[int]:
    """The one aggregate query: published pieces by views in the last ``TRENDING_DAYS``."""
    views = func.count(ProductView.id).label("views")
    rows = session.execute(
        select(ProductView.product_id, views)
        .join(Product, Product.id == ProductView.product_id)
        .where(
            ProductView.viewed_at >= now - timedelta(days=TRENDING_DAYS),
            Product.published.is_(True),
        )
        .group_by(ProductView.product_id)
        .order_by(views.desc(), ProductView.product_id)
        .limit(TRENDING_LIMIT)
    ).all()
    return [int(product_id) for product_id, _ in rows]


def trending_ids(session: AnySession, *, now: datetime | None = None) -> list[int]:
    """The most viewed pieces' ids, from the cache when it has them (``[]`` when fewer than
    ``TRENDING_MIN_PIECES`` pieces were viewed: too little to call anything a trend). If the
    cache can't be reached the query runs every time, with a log line; no page fails."""
    try:
        cached = cache.get(TRENDING_CACHE_KEY)
    except Exception:
        logger.warning("The cache could not be read; trending is worked out afresh")
        cached = None
    if isinstance(cached, list):
        return [int(product_id) for product_id in cached]
    found = _trending_ids(session, now or utcnow())
    ids = found if len(found) >= TRENDING_MIN_PIECES else []
    try:
        cache.set(TRENDING_CACHE_KEY, ids)  # for CACHE_DEFAULT_TIMEOUT seconds (60)
    except Exception:
        logger.warning("The cache could not be written; trending is not kept")
    return ids


@dataclass(frozen=True)
class ViewedPiece:
    """A piece among the week's most viewed, with what followed the views.

    ``viewers`` are distinct visitors (accounts and guest ids); ``bags`` the distinct bags
    that had a line of the piece added in the period; ``ordered`` the order lines of the piece
    in orders paid in the period.
    """

    product_id: int
    name: str
    slug: str
    views: int
    viewers: int
    bags: int
    ordered: int

    @property
    def view_to_bag(self) -> float:
        """Bags the piece was added to / distinct viewers (0 when nobody viewed it)."""
        return self.bags / self.viewers if self.viewers else 0.0

    @property
    def view_to_order(self) -> float:
        """Order lines of the piece in paid orders / views (0 when it had no views)."""
        return self.ordered / self.views if self.views else 0.0


def most_viewed(
    session: AnySession, *, since: datetime, limit: int = MOST_VIEWED_LIMIT
) -> list[ViewedPiece]:
    """The pieces most viewed since ``since``, with their ratios, in one query.

    Precisely, over the same period (views at or after ``since``):

    - **view-to-bag** = bags (carts, a guest's or an account's) with a line of the piece
      created in the period, or checked out with it in the period (a bag's lines go once it
      is paid for; a line taken out of a bag leaves no trace) / distinct viewers of the
      piece. Guests' visitor ids and their bag tokens are deliberately unrelated (the bag
      token is a secret that opens the bag), so a view and a bag line can't be joined per
      person: the ratio compares the two counts. It can exceed 100% when a piece goes into
      bags from elsewhere (a wishlist, a shared link).
    - **view-to-order** = order lines of the piece in orders paid in the period (``paid_at``,
      as the dashboard's takings count them; refunds not taken off) / views of the piece.
    """
    in_bags = (
        select(func.count(distinct(CartLine.cart_id)))
        .where(CartLine.product_id == ProductView.product_id, CartLine.created_at >= since)
        .correlate(ProductView)
        .scalar_subquery()
    )
    still_in_its_bag = (
        select(CartLine.id)
        .where(
            CartLine.cart_id == Order.cart_id,
            CartLine.product_id == OrderLine.product_id,
            CartLine.created_at >= since,
        )
        .exists()
    )
    # A bag's lines go when it is paid for (or its bank payment begins, whatever becomes of
    # it): its orders remember the bag, unless it holds the piece still (counted above).
    checked_out = (
        select(func.count(distinct(Order.cart_id)))
        .join(OrderLine, OrderLine.order_id == Order.id)
        .where(
            OrderLine.product_id == ProductView.product_id,
            Order.created_at >= since,
            Order.cart_id.is_not(None),
            ~still_in_its_bag,
        )
        .correlate(ProductView)
        .scalar_subquery()
    )
    bags = in_bags + checked_out
    ordered = (
        select(func.count(OrderLine.id))
        .join(Order, Order.id == OrderLine.order_id)
        .where(OrderLine.product_id == ProductView.product_id, Order.paid_at >= since)
        .correlate(ProductView)
        .scalar_subquery()
    )
    views = func.count(ProductView.id)
    rows = session.execute(
        select(
            ProductView.product_id,
            Product.name,
            Product.slug,
            views,
            func.count(distinct(ProductView.user_id)) + func.count(distinct(ProductView.visitor)),
            bags,
            ordered,
        )
        .join(Product, Product.id == ProductView.product_id)
        .where(ProductView.viewed_at >= since)
        .group_by(ProductView.product_id, Product.name, Product.slug)
        .order_by(views.desc(), ProductView.product_id)
        .limit(limit)
    ).all()
    return [
        ViewedPiece(int(pid), name, slug, int(n), int(viewers), int(b or 0), int(o or 0))
        for pid, name, slug, n, viewers, b, o in rows
    ]


def views_of(session: AnySession, user_id: int) -> list[tuple[str, datetime]]:
    """The account's views for its data export: (product slug, when), oldest first."""
    rows = session.execute(
        select(Product.slug, ProductView.viewed_at)
        .join(Product, Product.id == ProductView.product_id)
        .where(ProductView.user_id == user_id)
        .order_by(ProductView.viewed_at, ProductView.id)
    ).all()
    return [(slug, viewed_at) for slug, viewed_at in rows]


def forget_user(session: AnySession, user_id: int) -> None:
    """Closing an account: its views go with it."""
    session.execute(
        delete(ProductView)
        .where(ProductView.user_id == user_id)
        .execution_options(synchronize_session=False)
    )


def prune(session: AnySession, *, older_than: datetime) -> int:
    """Delete views from before ``older_than``; returns how many went."""
    return session.execute(
        delete(ProductView)
        .where(ProductView.viewed_at < older_than)
        .execution_options(synchronize_session=False)
    ).rowcount
