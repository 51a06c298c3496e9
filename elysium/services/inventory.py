"""Stock: what can be bought now, and the atomic operations that change it.

Every page that shows availability (product page, listing, bag) reads it here. Every change
to stock goes through ``reserve``, ``release``, ``commit``, ``restock`` or ``adjust``: each is
one conditional UPDATE checked by what it returns (never read-then-write), and each writes a
ledger entry with a unique key first, so running the same operation twice changes stock once.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import date, timedelta

from flask import current_app
from sqlalchemy import ColumnElement, and_, case, func, select, true, update
from sqlalchemy.orm import aliased
from sqlalchemy.orm.util import identity_key

from elysium import house_time
from elysium.models.catalog import OptionKind, Product, ProductOption
from elysium.models.inventory import Inventory, StockMovement, StockMovementKind, StockReason
from elysium.models.types import utcnow
from elysium.services.configuration import variant_label
from elysium.services.outbox import queue_email
from elysium.services.sql import AnySession, insert_unless_exists


class StockStatus(enum.StrEnum):
    IN_STOCK = "in_stock"
    LOW = "low"
    MADE_TO_ORDER = "made_to_order"
    SOLD_OUT = "sold_out"


# Two years: the longest the house promises to make a piece in. The studio's documents are
# held to it (``catalog_sync``); past about 416,000 weeks a date would overflow the calendar.
MAX_LEAD_TIME_WEEKS = 104


SCHEMA_ORG_AVAILABILITY = {
    StockStatus.IN_STOCK: "https://schema.org/InStock",
    StockStatus.LOW: "https://schema.org/LimitedAvailability",
    StockStatus.MADE_TO_ORDER: "https://schema.org/MadeToOrder",
    StockStatus.SOLD_OUT: "https://schema.org/OutOfStock",
}


@dataclass(frozen=True)
class Availability:
    status: StockStatus
    available: int
    lead_time_weeks: int | None
    variant: str

    @property
    def purchasable(self) -> bool:
        return self.status is not StockStatus.SOLD_OUT

    @property
    def promised_weeks(self) -> int | None:
        """The weeks a made-to-order piece takes, as the house promises them. None without a
        lead time, or for one longer than the house promises (a row written before the
        studio was held to it): no time and no date are promised, and the page stays up."""
        weeks = self.lead_time_weeks
        if not weeks or weeks > MAX_LEAD_TIME_WEEKS:
            return None
        return weeks

    @property
    def ships_by(self) -> date | None:
        """The promise for a made-to-order piece: today plus its lead time (None when no
        time is promised, :attr:`promised_weeks`)."""
        weeks = self.promised_weeks
        if self.status is not StockStatus.MADE_TO_ORDER or weeks is None:
            return None
        return house_time.today() + timedelta(weeks=weeks)

    @property
    def schema_org(self) -> str:
        return SCHEMA_ORG_AVAILABILITY[self.status]

    @property
    def message(self) -> str:
        if self.status is StockStatus.IN_STOCK:
            return "In stock"
        if self.status is StockStatus.LOW:
            return f"Only {self.available} left"
        if self.status is StockStatus.MADE_TO_ORDER:
            if not self.ships_by:
                return "Made to order"
            return (
                f"Made to order — ships in about {self.promised_weeks} weeks, "
                f"by {self.ships_by.day} {self.ships_by:%B}"
            )
        return f"Sold out in {self.variant[0].lower()}{self.variant[1:]}"


def inventory_row(product: Product, variant_key: str) -> Inventory | None:
    """The stock row of one variant, from ``product.inventory`` (eager-load it on lists)."""
    return next((row for row in product.inventory if row.variant_key == variant_key), None)


def variant_availability(
    product: Product, variant_key: str, *, held: int = 0, wanted: int = 0
) -> Availability:
    """Availability of one variant, from ``product.inventory`` (eager-load it on lists).

    ``held`` counts units already reserved for the one asking (a cart being paid for looks
    at the stock as it was before its own reservation). ``wanted`` is how many a bag asks for:
    more than is left of a variant that can be made is made to order, all of it (the units
    left stay for another shopper), never refused.
    """
    row = inventory_row(product, variant_key)
    available = row.available + held if row else 0
    threshold = row.low_stock_threshold if row else 0
    lead_time = (row.lead_time_weeks if row else None) or product.lead_time_weeks
    label = variant_label(product, variant_key)
    if 0 < available < wanted and lead_time:
        return Availability(StockStatus.MADE_TO_ORDER, available, lead_time, label)
    if available > 0:
        status = StockStatus.LOW if available <= threshold else StockStatus.IN_STOCK
        return Availability(status, available, lead_time, label)
    if lead_time:
        return Availability(StockStatus.MADE_TO_ORDER, 0, lead_time, label)
    return Availability(StockStatus.SOLD_OUT, 0, None, label)


def availability_columns() -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    """What a card shows of a piece's stock (the best any variant it offers can do), as two
    columns of a query on products, so a page of cards reads no inventory rows: whether any
    variant offered has a unit left, and whether any has a lead time of its own. Give their
    answers and the product's lead time to :func:`availability_of`.

    Only the variants its choices still make count: a metal or diamond taken away in the
    studio keeps its stock row (reservations and the ledger refer to it), but nobody can buy
    it, so its units don't make the piece "in stock"."""
    rows = select(Inventory.id).where(Inventory.product_id == Product.id, offered_variant())
    any_left = rows.where(Inventory.stock_level - Inventory.reserved > 0).exists()
    any_lead_time = rows.where(Inventory.lead_time_weeks != 0).exists()
    return any_left.label("any_left"), any_lead_time.label("any_lead_time")


def offered_variant() -> ColumnElement[bool]:
    """An inventory row (in the enclosing query) is a variant its piece's choices make: a
    metal's code, or a metal's and a diamond's joined by "/" when the piece offers diamonds."""
    metal = aliased(ProductOption)
    diamond = aliased(ProductOption)
    key = case((diamond.id.is_(None), metal.code), else_=metal.code + "/" + diamond.code)
    return (
        select(metal.id)
        .outerjoin(
            diamond,
            and_(diamond.product_id == metal.product_id, diamond.kind == OptionKind.DIAMOND),
        )
        .where(
            metal.product_id == Inventory.product_id,
            metal.kind == OptionKind.METAL,
            Inventory.variant_key == key,
        )
        .exists()
    )


def availability_of(
    any_left: bool, any_lead_time: bool, lead_time_weeks: int | None
) -> StockStatus:
    """A card's stock state from the answers of :func:`availability_columns`."""
    if any_left:
        return StockStatus.IN_STOCK
    if lead_time_weeks or any_lead_time:
        return StockStatus.MADE_TO_ORDER
    return StockStatus.SOLD_OUT


_BEST_FIRST = (
    StockStatus.IN_STOCK,
    StockStatus.LOW,
    StockStatus.MADE_TO_ORDER,
    StockStatus.SOLD_OUT,
)
OFFERS_SHOWN = 4


@dataclass(frozen=True)
class Offer:
    """A variant that can be had instead of a sold-out one."""

    metal: str
    diamond: str | None
    availability: Availability


@dataclass(frozen=True)
class ChoiceAvailability:
    """What the configurator says on each choice, for the chosen metal and diamond.

    A metal is sold out when no diamond in it can be had (in stock or made to order); a
    diamond is sold out in the chosen metal. ``offers`` lists what can be had instead when
    the chosen variant is sold out.
    """

    chosen: Availability
    metals: dict[str, Availability]
    diamonds: dict[str, Availability]
    offers: list[Offer]


def choice_availability(product: Product, metal: str, diamond: str | None) -> ChoiceAvailability:
    """Availability of every metal and diamond choice, from ``product.inventory`` alone (one
    load for the page, never a query per choice)."""
    diamonds: list[str | None] = [option.code for option in product.diamonds] or [None]
    metals = [option.code for option in product.metals]
    variants = {
        (m, d): variant_availability(product, f"{m}/{d}" if d else m)
        for m in metals
        for d in diamonds
    }
    chosen = variants.get((metal, diamond)) or variant_availability(
        product, f"{metal}/{diamond}" if diamond else metal
    )
    by_metal = {
        m: min((variants[m, d] for d in diamonds), key=lambda a: _BEST_FIRST.index(a.status))
        for m in metals
    }
    by_diamond = {d: variants[metal, d] for d in diamonds if d and (metal, d) in variants}
    offers: list[Offer] = []
    if not chosen.purchasable:
        # The same diamond in another metal, then another diamond in this metal, then anything.
        ranked = (
            [(m, diamond) for m in metals if m != metal]
            + [(metal, d) for d in diamonds if d != diamond]
            + list(variants)
        )
        for key in dict.fromkeys(ranked):
            if key in variants and variants[key].purchasable and len(offers) < OFFERS_SHOWN:
                offers.append(Offer(key[0], key[1], variants[key]))
    return ChoiceAvailability(chosen, by_metal, by_diamond, offers)


class OutOfStockError(Exception):
    """Not enough units left for this operation; nothing was changed."""

    def __init__(self, inventory_id: int, requested: int):
        super().__init__(f"inventory {inventory_id}: {requested} requested, not enough left")
        self.inventory_id = inventory_id
        self.requested = requested
        self.message = "Just sold out: someone else has taken the last one."


class StockLedgerError(Exception):
    """The ledger and the counts disagree (e.g. settling a reservation that was never made)."""


def movement_key(order_id: int, kind: str, inventory_id: int) -> str:
    return f"order:{order_id}:{kind}:{inventory_id}"


def _claim_key(
    session: AnySession,
    *,
    inventory_id: int,
    kind: StockMovementKind,
    key: str,
    stock_delta: int = 0,
    reserved_delta: int = 0,
    order_id: int | None = None,
    note: str = "",
    actor_id: int | None = None,
    reason: StockReason | None = None,
) -> bool:
    """Write the ledger entry for an operation; False if one with this key already exists.

    The entry is written first, so two runs of the same operation (a retried webhook, a
    double click) race on the unique key and only one goes on to change the counts.
    """
    values = {
        "inventory_id": inventory_id,
        "order_id": order_id,
        "kind": kind,
        "idempotency_key": key,
        "stock_delta": stock_delta,
        "reserved_delta": reserved_delta,
        "note": note,
        "actor_id": actor_id,
        "reason": reason,
        "created_at": utcnow(),
    }
    return (
        insert_unless_exists(session, StockMovement, values, StockMovement.idempotency_key)
        is not None
    )


def _apply(
    session: AnySession, inventory_id: int, condition, stock_delta: int, reserved_delta: int
) -> tuple[int, int] | None:
    """One conditional UPDATE; the new (stock_level, reserved), or None if the condition failed."""
    statement = (
        update(Inventory)
        .where(Inventory.id == inventory_id, condition)
        .values(
            stock_level=Inventory.stock_level + stock_delta,
            reserved=Inventory.reserved + reserved_delta,
            updated_at=utcnow(),
        )
        .returning(Inventory.stock_level, Inventory.reserved)
        .execution_options(synchronize_session=False)
    )
    row = session.execute(statement).one_or_none()
    loaded = session.identity_map.get(identity_key(Inventory, inventory_id))
    if loaded is not None:
        session.expire(loaded, ["stock_level", "reserved", "updated_at"])
    return (row[0], row[1]) if row else None


def reserve(session: AnySession, inventory_id: int, quantity: int, *, order_id: int) -> bool:
    """Hold units for an order's checkout. True if reserved now, False if it already was.

    Raises :class:`OutOfStockError` when fewer than ``quantity`` are available; the caller
    must then roll back (the ledger entry written in this transaction goes with it).
    """
    _check_quantity(quantity)
    key = movement_key(order_id, "reserve", inventory_id)
    if not _claim_key(
        session,
        inventory_id=inventory_id,
        kind=StockMovementKind.RESERVE,
        key=key,
        reserved_delta=quantity,
        order_id=order_id,
    ):
        return False
    counts = _apply(
        session, inventory_id, Inventory.stock_level - Inventory.reserved >= quantity, 0, quantity
    )
    if counts is None:
        raise OutOfStockError(inventory_id, quantity)
    _alert_if_low(session, inventory_id, counts, was_available=counts[0] - counts[1] + quantity)
    return True


def _settle(
    session: AnySession,
    inventory_id: int,
    quantity: int,
    *,
    order_id: int,
    kind: StockMovementKind,
) -> bool:
    """Commit or release a reservation, whichever comes first; the other is then a no-op.

    Both use one key per order and variant, so a payment and an expiry racing on the same
    reservation can never both take the units out of ``reserved``.
    """
    _check_quantity(quantity)
    reserved = session.scalar(
        select(StockMovement.id).where(
            StockMovement.idempotency_key == movement_key(order_id, "reserve", inventory_id)
        )
    )
    if reserved is None:
        return False
    committing = kind is StockMovementKind.COMMIT
    if not _claim_key(
        session,
        inventory_id=inventory_id,
        kind=kind,
        key=movement_key(order_id, "settle", inventory_id),
        stock_delta=-quantity if committing else 0,
        reserved_delta=-quantity,
        order_id=order_id,
    ):
        return False
    counts = _apply(
        session,
        inventory_id,
        and_(Inventory.reserved >= quantity, Inventory.stock_level >= quantity),
        -quantity if committing else 0,
        -quantity,
    )
    if counts is None:
        raise StockLedgerError(
            f"inventory {inventory_id} holds less than order {order_id}'s reservation"
        )
    return True


def commit(session: AnySession, inventory_id: int, quantity: int, *, order_id: int) -> bool:
    """The order is paid: its reserved units leave stock. False if already settled."""
    return _settle(
        session, inventory_id, quantity, order_id=order_id, kind=StockMovementKind.COMMIT
    )


def release(session: AnySession, inventory_id: int, quantity: int, *, order_id: int) -> bool:
    """The checkout ended unpaid: its units can be sold again. False if already settled."""
    return _settle(
        session, inventory_id, quantity, order_id=order_id, kind=StockMovementKind.RELEASE
    )


def restock(
    session: AnySession,
    inventory_id: int,
    quantity: int,
    *,
    key: str,
    note: str = "",
    actor_id: int | None = None,
    reason: StockReason | None = StockReason.RECEIVED,
    order_id: int | None = None,
) -> bool:
    """Units came in: a delivery, or pieces back from an order (``key`` names the event, so
    recording it twice counts it once)."""
    _check_quantity(quantity)
    if not _claim_key(
        session,
        inventory_id=inventory_id,
        kind=StockMovementKind.RESTOCK,
        key=key,
        stock_delta=quantity,
        order_id=order_id,
        note=note,
        actor_id=actor_id,
        reason=reason,
    ):
        return False
    if _apply(session, inventory_id, true(), quantity, 0) is None:
        raise StockLedgerError(f"no inventory row {inventory_id}")
    return True


def adjust(
    session: AnySession,
    inventory_id: int,
    delta: int,
    *,
    key: str,
    note: str,
    actor_id: int | None = None,
    reason: StockReason | None = StockReason.CORRECTION,
) -> bool:
    """Correct the count after a stocktake or a damaged piece; never below what is reserved.

    Raises :class:`OutOfStockError` if the correction would leave fewer units than reserved.
    """
    if delta == 0:
        return False
    if not _claim_key(
        session,
        inventory_id=inventory_id,
        kind=StockMovementKind.ADJUST,
        key=key,
        stock_delta=delta,
        note=note,
        actor_id=actor_id,
        reason=reason,
    ):
        return False
    counts = _apply(
        session, inventory_id, Inventory.stock_level + delta >= Inventory.reserved, delta, 0
    )
    if counts is None:
        raise OutOfStockError(inventory_id, -delta)
    _alert_if_low(session, inventory_id, counts, was_available=counts[0] - counts[1] - delta)
    return True


def _check_quantity(quantity: int) -> None:
    if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 1:
        raise ValueError(f"quantity must be a positive whole number, not {quantity!r}")


def alert_if_low_after(
    session: AnySession, inventory_id: int, *, seen_stock: int, seen_threshold: int
) -> None:
    """After a member of staff's edit of the count, the threshold or both
    (:func:`set_stock_level`, :func:`set_low_stock_threshold`, which judge nothing): the
    low-stock email judged once, on the row as the edit leaves it, against the count and
    threshold the edit was made from. Judged step by step, a threshold raised with a delivery
    emailed of a variant the delivery then left well stocked."""
    row = session.get(Inventory, inventory_id, populate_existing=True)
    if row is None:
        return
    _alert_if_low(
        session,
        inventory_id,
        (row.stock_level, row.reserved),
        was_available=seen_stock - row.reserved,
        was_threshold=seen_threshold,
    )


def _alert_if_low(
    session: AnySession,
    inventory_id: int,
    counts: tuple[int, int],
    *,
    was_available: int,
    was_threshold: int | None = None,
) -> None:
    """Email staff when a variant's sellable units fall to its threshold, or its threshold is
    raised to them (``was_threshold``, the one before): once, until units come in (a
    delivery, pieces given back, a count corrected upwards) or the threshold is changed. A
    checkout abandoned and made again releases and reserves the same units, so it crosses the
    threshold again with nothing come in: the email's key (the row, the newest ledger entry
    that added units to it, the threshold) is the one already in the outbox, and nothing more
    is sent."""
    stock_level, reserved = counts
    available = stock_level - reserved
    row = session.get(Inventory, inventory_id)
    if row is None:
        return
    threshold = row.low_stock_threshold
    low_before = was_available <= (threshold if was_threshold is None else was_threshold)
    if low_before or available > threshold:
        return
    offered = select(Inventory.id).where(Inventory.id == inventory_id, offered_variant())
    if session.scalar(offered) is None:
        return  # a metal or diamond taken away in the studio: nobody can buy it to run out
    units_in = session.scalar(
        select(func.max(StockMovement.id)).where(
            StockMovement.inventory_id == inventory_id, StockMovement.stock_delta > 0
        )
    )
    product = row.product
    queue_email(
        session,
        to=current_app.config["STAFF_EMAIL"],
        subject=f"Low stock: {product.name}, {variant_label(product, row.variant_key)}",
        template="low_stock",
        context={
            "product": product,
            "variant": variant_label(product, row.variant_key),
            "available": available,
            "stock_level": stock_level,
            "reserved": reserved,
            "threshold": threshold,
        },
        dedupe_key=f"low-stock:{inventory_id}:{units_in or 0}:{threshold}",
    )


class StaleCountError(Exception):
    """The row no longer holds what the caller saw (someone changed it meanwhile); nothing was
    changed, and ``current`` is what it holds now."""

    def __init__(self, inventory_id: int, field: str, current: int):
        super().__init__(f"inventory {inventory_id}: {field} is now {current}")
        self.inventory_id = inventory_id
        self.field = field
        self.current = current


def set_stock_level(
    session: AnySession,
    inventory_id: int,
    *,
    seen: int,
    new_level: int,
    key: str,
    reason: StockReason,
    note: str = "",
    actor_id: int | None = None,
) -> bool:
    """A member of staff counted the variant: take ``stock_level`` from ``seen`` to ``new_level``.

    The change is recorded and applied as a delta, only while the row still holds ``seen``
    and the new level still covers what is reserved, so two people correcting one row at once
    can't both apply a delta worked out from a count that is no longer true. Units received
    or returned are a restock, anything else an adjustment. True if applied now, False if
    ``key`` was used before (the same form submitted twice) or nothing changes.

    Raises :class:`StaleCountError` when the count is no longer ``seen``, and
    :class:`OutOfStockError` when ``new_level`` is below the units reserved; the caller must
    then roll back (the ledger entry written here goes with it). The caller judges the
    low-stock email once its edit is done (:func:`alert_if_low_after`).
    """
    if new_level < 0:
        raise ValueError(f"a stock level can't be negative, not {new_level!r}")
    delta = new_level - seen
    if delta == 0:
        return False
    units_in = reason in (StockReason.RECEIVED, StockReason.RETURNED)
    if not _claim_key(
        session,
        inventory_id=inventory_id,
        kind=StockMovementKind.RESTOCK if units_in else StockMovementKind.ADJUST,
        key=key,
        stock_delta=delta,
        note=note,
        actor_id=actor_id,
        reason=reason,
    ):
        return False
    counts = _apply(
        session,
        inventory_id,
        and_(Inventory.stock_level == seen, Inventory.reserved <= new_level),
        delta,
        0,
    )
    if counts is None:
        current = session.scalar(select(Inventory.stock_level).where(Inventory.id == inventory_id))
        if current is None:
            raise StockLedgerError(f"no inventory row {inventory_id}")
        if current != seen:
            raise StaleCountError(inventory_id, "stock_level", current)
        raise OutOfStockError(inventory_id, -delta)
    return True


def set_low_stock_threshold(
    session: AnySession,
    inventory_id: int,
    *,
    seen: int,
    new_threshold: int,
    key: str,
    note: str = "",
    actor_id: int | None = None,
) -> bool:
    """Change when a variant counts as low stock, only while it is still ``seen``.

    No unit moves, but the change goes in the ledger as an adjustment of zero (who, when, and
    from and to in its note), so the variant's history shows who set the threshold: the
    only ledger entry that moves nothing, since ``adjust`` and ``set_stock_level`` never
    write a zero. True if changed now, False if ``key`` was used before or nothing changes.
    Raises :class:`StaleCountError` when the threshold is no longer ``seen`` (roll back).
    """
    if new_threshold < 0:
        raise ValueError(f"a threshold can't be negative, not {new_threshold!r}")
    if new_threshold == seen:
        return False
    text = f"Low-stock threshold {seen} → {new_threshold}"
    if not _claim_key(
        session,
        inventory_id=inventory_id,
        kind=StockMovementKind.ADJUST,
        key=key,
        note=f"{text}: {note}" if note else text,
        actor_id=actor_id,
    ):
        return False
    changed = session.execute(
        update(Inventory)
        .where(Inventory.id == inventory_id, Inventory.low_stock_threshold == seen)
        .values(low_stock_threshold=new_threshold, updated_at=utcnow())
        .returning(Inventory.id)
        .execution_options(synchronize_session=False)
    ).one_or_none()
    loaded = session.identity_map.get(identity_key(Inventory, inventory_id))
    if loaded is not None:
        session.expire(loaded, ["low_stock_threshold", "updated_at"])
    if changed is None:
        current = session.scalar(
            select(Inventory.low_stock_threshold).where(Inventory.id == inventory_id)
        )
        if current is None:
            raise StockLedgerError(f"no inventory row {inventory_id}")
        raise StaleCountError(inventory_id, "low_stock_threshold", current)
    return True
