"""Stock as staff see and correct it: every variant with its filters, one variant's ledger, and
the inline edit of a count and a low-stock threshold.

A member of staff types a new count, but stock only ever changes by a delta applied under a
condition (:func:`inventory.set_stock_level`): the count must still be the one they saw, so two
people editing one row at once can't both apply a stale delta; the second is told what the
count is now. Each edit form carries a nonce that is part of the ledger keys, so the same form
submitted twice is applied once.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Select, and_, func, not_, or_, select
from sqlalchemy.orm import contains_eager

from elysium.models.catalog import Category, Collection, OptionKind, Product, ProductOption
from elysium.models.inventory import Inventory, StockMovement, StockMovementKind, StockReason
from elysium.models.orders import Order
from elysium.models.users import User
from elysium.services import inventory
from elysium.services.catalog import METAL_ORDER
from elysium.services.configuration import variant_label
from elysium.services.errors import InvalidInputError
from elysium.services.sql import AnySession

MAX_STOCK_LEVEL = 99_999
MAX_THRESHOLD = 9_999
NOTE_MAX_LENGTH = 500
HISTORY_PAGE_SIZE = 100
NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}")

# What staff may give as the reason for a count; a cancelled order's restock is the shop's own.
STAFF_REASONS = (
    StockReason.RECEIVED,
    StockReason.CORRECTION,
    StockReason.DAMAGED,
    StockReason.RETURNED,
)
REASON_LABELS = {
    StockReason.RECEIVED: "Received",
    StockReason.CORRECTION: "Correction",
    StockReason.DAMAGED: "Damaged",
    StockReason.RETURNED: "Returned",
    StockReason.ORDER_CANCELLED: "Order cancelled",
}
KIND_LABELS = {
    StockMovementKind.RESERVE: "Reserved at checkout",
    StockMovementKind.RELEASE: "Released",
    StockMovementKind.COMMIT: "Sold",
    StockMovementKind.RESTOCK: "Restocked",
    StockMovementKind.ADJUST: "Adjusted",
}
THRESHOLD_LABEL = "Threshold changed"


class RowStatus(enum.StrEnum):
    """How the shop sells the variant now (the rules of ``inventory.variant_availability``)."""

    IN_STOCK = "in_stock"
    LOW = "low"
    SOLD_OUT = "sold_out"
    MADE_TO_ORDER = "made_to_order"
    # A metal or diamond the piece no longer offers (taken away in the studio): its row stays
    # (reservations and the ledger refer to it), but the shop sells none of it.
    NOT_OFFERED = "not_offered"

    @property
    def label(self) -> str:
        return {
            "in_stock": "In stock",
            "low": "Low",
            "sold_out": "Sold out",
            "made_to_order": "Made to order",
            "not_offered": "Not offered",
        }[self.value]


def _available() -> ColumnElement[int]:
    return Inventory.stock_level - Inventory.reserved


def needs_stock() -> ColumnElement[bool]:
    """SQL for a variant the shop offers, at or below its threshold, that it can't make to
    order when it runs out: low, or sold out. Needs ``products`` joined."""
    made_to_order = or_(
        func.coalesce(Inventory.lead_time_weeks, 0) > 0,
        func.coalesce(Product.lead_time_weeks, 0) > 0,
    )
    return and_(
        _available() <= Inventory.low_stock_threshold,
        or_(_available() > 0, not_(made_to_order)),
        inventory.offered_variant(),
    )


@dataclass(frozen=True)
class StockRow:
    """One variant as the stock page shows it."""

    id: int
    product_name: str
    published: bool
    variant: str
    collection: str | None
    category: Category
    stock_level: int
    reserved: int
    threshold: int
    made_to_order: bool
    offered: bool

    @property
    def available(self) -> int:
        return max(self.stock_level - self.reserved, 0)

    @property
    def status(self) -> RowStatus:
        if not self.offered:
            return RowStatus.NOT_OFFERED
        if self.available > 0:
            return RowStatus.LOW if self.available <= self.threshold else RowStatus.IN_STOCK
        return RowStatus.MADE_TO_ORDER if self.made_to_order else RowStatus.SOLD_OUT


def _row(stock: Inventory, offered: bool) -> StockRow:
    product = stock.product
    return StockRow(
        id=stock.id,
        product_name=product.name,
        published=product.published,
        variant=variant_label(product, stock.variant_key),
        collection=product.collection.name if product.collection else None,
        category=product.category,
        stock_level=stock.stock_level,
        reserved=stock.reserved,
        threshold=stock.low_stock_threshold,
        made_to_order=bool(stock.lead_time_weeks or product.lead_time_weeks),
        offered=bool(offered),
    )


@dataclass(frozen=True)
class FilterChoices:
    collections: list[tuple[str, str]]
    categories: list[Category]
    metals: list[tuple[str, str]]


@dataclass(frozen=True)
class StockFilters:
    """A validated filter of the stock page; a value not among the choices is no filter."""

    collection: str = ""
    category: str = ""
    metal: str = ""
    low: bool = False

    @classmethod
    def parse(cls, args: Mapping[str, str], choices: FilterChoices) -> StockFilters:
        collection = args.get("collection", "")
        category = args.get("category", "")
        metal = args.get("metal", "")
        return cls(
            collection=collection if collection in dict(choices.collections) else "",
            category=category if category in {c.value for c in choices.categories} else "",
            metal=metal if metal in dict(choices.metals) else "",
            low=args.get("low") == "1",
        )

    @property
    def active(self) -> bool:
        return bool(self.collection or self.category or self.metal or self.low)


def filter_choices(session: AnySession) -> FilterChoices:
    """Every collection and metal in the catalogue, published or not: staff stock both."""
    collections = [
        (slug, name)
        for slug, name in session.execute(
            select(Collection.slug, Collection.name).order_by(Collection.position, Collection.name)
        )
    ]
    metals = sorted(
        session.execute(
            select(ProductOption.code, func.min(ProductOption.label))
            .where(ProductOption.kind == OptionKind.METAL)
            .group_by(ProductOption.code)
        ),
        key=lambda choice: (METAL_ORDER.get(choice[0], 99), choice[1]),
    )
    return FilterChoices(collections=collections, categories=list(Category), metals=list(metals))


def _rows_query() -> Select[tuple[Inventory, bool]]:
    """Variants with their pieces, and whether each is one its piece's choices still make."""
    return (
        select(Inventory, inventory.offered_variant().label("offered"))
        .join(Inventory.product)
        .outerjoin(Product.collection)
        .options(
            contains_eager(Inventory.product).contains_eager(Product.collection),
            contains_eager(Inventory.product).selectinload(Product.options),
        )
    )


def _variant_order(found: tuple[Inventory, bool]) -> tuple:
    """Products by name; a product's variants in the order its page offers them."""
    stock = found[0]
    product = stock.product
    positions = {(option.kind, option.code): option.position for option in product.options}
    metal, _, diamond = stock.variant_key.partition("/")
    return (
        product.name.casefold(),
        product.id,
        positions.get((OptionKind.METAL, metal), 99),
        positions.get((OptionKind.DIAMOND, diamond), 99) if diamond else -1,
        stock.variant_key,
    )


def stock_rows(session: AnySession, filters: StockFilters) -> list[StockRow]:
    """Every variant the filters let through, in two queries whatever their number."""
    stmt = _rows_query()
    if filters.collection:
        stmt = stmt.where(Collection.slug == filters.collection)
    if filters.category:
        stmt = stmt.where(Product.category == Category(filters.category))
    if filters.metal:
        stmt = stmt.where(
            or_(
                Inventory.variant_key == filters.metal,
                Inventory.variant_key.startswith(f"{filters.metal}/", autoescape=True),
            )
        )
    if filters.low:
        stmt = stmt.where(needs_stock())
    found = session.execute(stmt).unique().all()
    return [_row(stock, offered) for stock, offered in sorted(found, key=_variant_order)]


def stock_row(session: AnySession, inventory_id: int) -> StockRow | None:
    found = session.execute(_rows_query().where(Inventory.id == inventory_id)).unique().first()
    return _row(*found) if found else None


@dataclass(frozen=True)
class Movement:
    """One ledger entry as a member of staff reads it."""

    id: int
    at: datetime
    kind: str
    reason: str
    stock_delta: int
    reserved_delta: int
    order_number: str | None
    actor: str | None
    note: str


def _movement(entry: StockMovement, order_number: str | None, actor: User | None) -> Movement:
    moves_nothing = entry.stock_delta == 0 and entry.reserved_delta == 0
    threshold = entry.kind is StockMovementKind.ADJUST and moves_nothing
    return Movement(
        id=entry.id,
        at=entry.created_at,
        kind=THRESHOLD_LABEL if threshold else KIND_LABELS[entry.kind],
        reason=REASON_LABELS[entry.reason] if entry.reason else "",
        stock_delta=entry.stock_delta,
        reserved_delta=entry.reserved_delta,
        order_number=order_number,
        actor=actor.display_name if actor else None,
        note=entry.note,
    )


def movements(
    session: AnySession, inventory_id: int, *, before: int | None = None
) -> tuple[list[Movement], int | None]:
    """A page of the variant's ledger, newest first, and the id to ask for the next page with
    (``before``), or None when this page reaches the first entry."""
    stmt = (
        select(StockMovement, Order.number, User)
        .outerjoin(Order, Order.id == StockMovement.order_id)
        .outerjoin(User, User.id == StockMovement.actor_id)
        .where(StockMovement.inventory_id == inventory_id)
        .order_by(StockMovement.id.desc())
        .limit(HISTORY_PAGE_SIZE + 1)
    )
    if before is not None:
        stmt = stmt.where(StockMovement.id < before)
    found = session.execute(stmt).all()
    page = [_movement(entry, number, actor) for entry, number, actor in found]
    if len(page) > HISTORY_PAGE_SIZE:
        page = page[:HISTORY_PAGE_SIZE]
        return page, page[-1].id
    return page, None


@dataclass(frozen=True)
class StockEdit:
    """What one row's form asks for: the count and threshold as typed, next to what the member
    of staff saw when the form was drawn."""

    nonce: str
    seen_stock: int
    stock: int
    seen_threshold: int
    threshold: int
    reason: StockReason | None
    note: str


class EditConflictError(Exception):
    """The row changed since the form was drawn, or the new count would leave fewer pieces than
    checkouts hold; nothing was changed. ``stock_level``/``threshold`` is what to draw the
    form with now (None: keep what the member of staff saw)."""

    def __init__(
        self, message: str, *, stock_level: int | None = None, threshold: int | None = None
    ):
        super().__init__(message)
        self.message = message
        self.stock_level = stock_level
        self.threshold = threshold


def _check_reason(edit: StockEdit) -> None:
    delta = edit.stock - edit.seen_stock
    if delta == 0:
        return
    if edit.reason is None:
        raise InvalidInputError({"reason": "Choose why the count changed."})
    if edit.reason in (StockReason.RECEIVED, StockReason.RETURNED) and delta < 0:
        label = REASON_LABELS[edit.reason].lower()
        raise InvalidInputError(
            {"reason": f"Pieces {label} add to the count: choose another reason to lower it."}
        )
    if edit.reason is StockReason.DAMAGED and delta > 0:
        raise InvalidInputError(
            {"reason": "Damaged pieces take the count down: choose another reason to raise it."}
        )


def _edit_key(what: str, inventory_id: int, nonce: str, seen: int, new: int) -> str:
    """The ledger key of one change asked for by one form (at most 80 characters)."""
    return f"staff:{what}:{inventory_id}:{nonce}:{seen}:{new}"


def apply_edit(session: AnySession, inventory_id: int, edit: StockEdit, *, actor_id: int) -> str:
    """Apply a row's edit as the member of staff ``actor_id``; what to tell them.

    The count goes through :func:`inventory.set_stock_level`, the threshold through
    :func:`inventory.set_low_stock_threshold` (the low-stock email judged once, on the row as
    the whole edit leaves it), each keyed by the form's nonce and the change
    it asks for: the same form sent twice is applied once, while a form sent again with other
    values (say, from the browser's history) is a new edit, checked against the count. Raises
    :class:`InvalidInputError` (a reason missing or contradicting the change) or
    :class:`EditConflictError`; the caller then rolls back, and nothing has changed.
    """
    if not NONCE.fullmatch(edit.nonce):
        raise ValueError("an edit needs the nonce of the form it came from")
    _check_reason(edit)
    changes: list[str] = []
    if edit.stock != edit.seen_stock:
        try:
            applied = inventory.set_stock_level(
                session,
                inventory_id,
                seen=edit.seen_stock,
                new_level=edit.stock,
                key=_edit_key("stock", inventory_id, edit.nonce, edit.seen_stock, edit.stock),
                reason=edit.reason or StockReason.CORRECTION,
                note=edit.note,
                actor_id=actor_id,
            )
        except inventory.StaleCountError as stale:
            raise EditConflictError(
                f"The count changed meanwhile: it is now {stale.current}. "
                "Check it, then save again.",
                stock_level=stale.current,
            ) from stale
        except inventory.OutOfStockError as short:
            reserved = session.scalar(
                select(Inventory.reserved).where(Inventory.id == inventory_id)
            )
            raise EditConflictError(
                f"{reserved} reserved by checkouts in progress: "
                f"the count can't go below {reserved}."
            ) from short
        if applied:
            changes.append(f"count {edit.seen_stock} → {edit.stock}")
    if edit.threshold != edit.seen_threshold:
        try:
            applied = inventory.set_low_stock_threshold(
                session,
                inventory_id,
                seen=edit.seen_threshold,
                new_threshold=edit.threshold,
                key=_edit_key(
                    "threshold", inventory_id, edit.nonce, edit.seen_threshold, edit.threshold
                ),
                note=edit.note,
                actor_id=actor_id,
            )
        except inventory.StaleCountError as stale:
            raise EditConflictError(
                f"The low-stock threshold changed meanwhile: it is now {stale.current}. "
                "Check it, then save again.",
                threshold=stale.current,
            ) from stale
        if applied:
            changes.append(f"low-stock threshold {edit.seen_threshold} → {edit.threshold}")
    if not changes:
        asked = edit.stock != edit.seen_stock or edit.threshold != edit.seen_threshold
        return "Already saved." if asked else "Nothing to change."
    inventory.alert_if_low_after(
        session, inventory_id, seen_stock=edit.seen_stock, seen_threshold=edit.seen_threshold
    )
    return "Saved: " + ", ".join(changes) + "."
