"""The bag: every change to a bag's lines goes through here (product page, bag page,
merge on sign-in, wishlist), so quantities are clamped and totals computed in one place.

Services never commit: the caller's request (or command) is one unit of work.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, selectinload

from elysium.models.cart import Cart, CartLine
from elysium.models.catalog import Product
from elysium.models.types import utcnow
from elysium.services.configuration import (
    Configuration,
    ConfigurationError,
    PriceBreakdown,
    configure,
    price_breakdown,
    summary,
)
from elysium.services.inventory import Availability, StockStatus, variant_availability

MAX_QUANTITY_PER_LINE = 5
DEFAULT_CURRENCY = "GBP"
FROZEN_MESSAGE = (
    "Your bag is being paid for, so it can't change right now. Finish or cancel the payment first."
)
QUANTITY_MESSAGE = f"Choose a quantity from 1 to {MAX_QUANTITY_PER_LINE}."


class CartError(Exception):
    """A change the bag refuses; ``message`` is for the shopper, ``field`` the form field."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field


class FrozenCartError(CartError):
    """The bag is frozen while its order is being paid for."""

    def __init__(self) -> None:
        super().__init__(FROZEN_MESSAGE)


class LineNotFoundError(CartError):
    """No such line in this bag (someone else's line is not found either)."""

    def __init__(self) -> None:
        super().__init__("That piece is no longer in your bag.")


class SoldOutError(CartError):
    """The variant is sold out and cannot be made to order."""


@dataclass
class LineChange:
    line: CartLine | None
    quantity: int
    message: str


@dataclass
class MergeReport:
    messages: list[str] = field(default_factory=list)
    lines_added: int = 0
    lines_combined: int = 0


@dataclass
class BagLine:
    line: CartLine
    product: Product
    configuration: Configuration
    summary: str
    breakdown: PriceBreakdown
    availability: Availability
    problem: str | None
    blocking: bool

    @property
    def unit_price(self) -> int:
        return self.breakdown.total

    @property
    def line_total(self) -> int:
        return self.breakdown.total * self.line.quantity


@dataclass
class BagView:
    cart: Cart | None
    lines: list[BagLine]
    currency: str

    @property
    def subtotal(self) -> int:
        return sum(line.line_total for line in self.lines)

    @property
    def item_count(self) -> int:
        return sum(line.line.quantity for line in self.lines)

    @property
    def checkout_blocked(self) -> bool:
        return any(line.blocking for line in self.lines)

    @property
    def problems(self) -> list[str]:
        return [line.problem for line in self.lines if line.problem and line.blocking]

    @property
    def is_empty(self) -> bool:
        return not self.lines


def new_token() -> str:
    """A guest bag's token: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def _owner_clause(user_id: int | None, token: str | None):
    if user_id is not None:
        return Cart.user_id == user_id
    if token:
        return (Cart.token == token) & Cart.user_id.is_(None)
    return None


def find_cart(session: Session, *, user_id: int | None = None, token: str | None = None):
    """The account's bag (``user_id`` wins) or the guest bag with ``token``; None if none."""
    clause = _owner_clause(user_id, token)
    if clause is None:
        return None
    return session.scalar(select(Cart).where(clause))


def cart_for(
    session: Session,
    *,
    user_id: int | None = None,
    token: str | None = None,
    create: bool = False,
    currency: str = DEFAULT_CURRENCY,
) -> Cart | None:
    """:func:`find_cart`, or with ``create`` a new empty bag for that owner."""
    cart = find_cart(session, user_id=user_id, token=token)
    if cart is not None or not create:
        return cart
    if user_id is None and not token:
        raise ValueError("a new bag needs an owner: a user id or a guest token")
    cart = Cart(user_id=user_id, token=None if user_id is not None else token, currency=currency)
    session.add(cart)
    session.flush()
    return cart


def item_count(session: Session, cart: Cart | None) -> int:
    if cart is None or cart.id is None:
        return 0
    stmt = select(func.coalesce(func.sum(CartLine.quantity), 0)).where(CartLine.cart_id == cart.id)
    return int(session.scalar(stmt) or 0)


def count_for(session: Session, *, user_id: int | None = None, token: str | None = None) -> int:
    """The header's count in one query, without loading the bag."""
    clause = _owner_clause(user_id, token)
    if clause is None:
        return 0
    stmt = (
        select(func.coalesce(func.sum(CartLine.quantity), 0))
        .join(Cart, CartLine.cart_id == Cart.id)
        .where(clause)
    )
    return int(session.scalar(stmt) or 0)


def _lowered(label: str) -> str:
    return label[:1].lower() + label[1:]


def quantity_cap(availability: Availability) -> int:
    """How many of one configuration a bag may hold: stock on hand (when there is any),
    the per-line maximum for a piece made to order, and none when sold out."""
    if availability.status in (StockStatus.IN_STOCK, StockStatus.LOW):
        return min(availability.available, MAX_QUANTITY_PER_LINE)
    if availability.status is StockStatus.MADE_TO_ORDER:
        return MAX_QUANTITY_PER_LINE
    return 0


def _cap_message(availability: Availability, cap: int) -> str:
    if availability.status in (StockStatus.IN_STOCK, StockStatus.LOW) and (
        availability.available < MAX_QUANTITY_PER_LINE
    ):
        return (
            f"Only {availability.available} left in {_lowered(availability.variant)} — "
            f"we've set your quantity to {cap}."
        )
    return (
        f"You can have at most {MAX_QUANTITY_PER_LINE} of one piece in your bag — "
        f"we've set your quantity to {cap}."
    )


def _check_quantity(quantity: object) -> int:
    if (
        isinstance(quantity, bool)
        or not isinstance(quantity, int)
        or not 1 <= quantity <= MAX_QUANTITY_PER_LINE
    ):
        raise CartError(QUANTITY_MESSAGE, field="quantity")
    return quantity


def _check_not_frozen(cart: Cart) -> None:
    if cart.frozen_at is not None:
        raise FrozenCartError()


def _touch(cart: Cart) -> None:
    """Adding or changing lines doesn't update the bag's row; its activity time must move."""
    cart.updated_at = utcnow()


def _line_for(session: Session, cart: Cart, product_id: int, configuration_hash: str):
    stmt = select(CartLine).where(
        CartLine.cart_id == cart.id,
        CartLine.product_id == product_id,
        CartLine.configuration_hash == configuration_hash,
    )
    return session.scalar(stmt)


def add_item(
    session: Session,
    cart: Cart,
    product: Product,
    configuration: Configuration,
    quantity: int = 1,
) -> LineChange:
    """Put ``quantity`` of this exact configuration in the bag (an identical line grows).

    The configuration must come from :func:`configure`; the price is never stored, it is
    computed from the catalogue whenever the bag is shown.
    """
    _check_not_frozen(cart)
    quantity = _check_quantity(quantity)
    availability = variant_availability(product, configuration.variant_key)
    if not availability.purchasable:
        raise SoldOutError(availability.message, field="metal")
    cap = quantity_cap(availability)
    line = _line_for(session, cart, product.id, configuration.hash)
    had = line.quantity if line else 0
    wanted = had + quantity
    allowed = min(wanted, cap)
    if line is not None and allowed <= had:
        line.quantity = allowed
        _touch(cart)
        session.flush()
        return LineChange(
            line,
            allowed,
            f"{product.name} is already in your bag. {_cap_message(availability, cap)}",
        )
    if line is None:
        line = CartLine(
            cart_id=cart.id,
            product_id=product.id,
            variant_key=configuration.variant_key,
            configuration=configuration.canonical(),
            configuration_hash=configuration.hash,
            quantity=allowed,
        )
        session.add(line)
    else:
        line.quantity = allowed
    _touch(cart)
    session.flush()
    added = allowed - had
    if added == 1:
        message = f"Added {product.name} to your bag."
    else:
        message = f"Added {added} of {product.name} to your bag."
    if allowed < wanted:
        message = f"{message} {_cap_message(availability, cap)}"
    return LineChange(line, allowed, message)


def _owned_line(session: Session, cart: Cart, line_id: int) -> CartLine:
    line = session.get(CartLine, line_id) if isinstance(line_id, int) else None
    if line is None or line.cart_id != cart.id:
        raise LineNotFoundError()
    return line


def set_quantity(session: Session, cart: Cart, line_id: int, quantity: int) -> LineChange:
    """Set a line's quantity (1 to the per-line maximum), clamped to what is in stock."""
    _check_not_frozen(cart)
    line = _owned_line(session, cart, line_id)
    quantity = _check_quantity(quantity)
    product = line.product
    availability = variant_availability(product, line.variant_key)
    cap = quantity_cap(availability)
    if not availability.purchasable:
        raise SoldOutError(f"{availability.message} — please remove it from your bag.")
    allowed = min(quantity, cap)
    line.quantity = allowed
    _touch(cart)
    session.flush()
    if allowed < quantity:
        message = f"{product.name}: {_cap_message(availability, cap)}"
    else:
        message = f"{product.name}: quantity {allowed}."
    return LineChange(line, allowed, message)


def remove_line(session: Session, cart: Cart, line_id: int) -> None:
    _check_not_frozen(cart)
    line = _owned_line(session, cart, line_id)
    session.delete(line)
    _touch(cart)
    session.flush()


def merge_into(session: Session, guest: Cart, target: Cart) -> MergeReport:
    """Move a guest's lines into the account's bag, then delete the guest bag.

    Identical lines add up (capped at stock and the per-line maximum); others move across.
    """
    _check_not_frozen(target)
    _check_not_frozen(guest)
    report = MergeReport()
    for line in _loaded_lines(session, guest):
        product = line.product
        availability = variant_availability(product, line.variant_key)
        cap = quantity_cap(availability)
        existing = _line_for(session, target, line.product_id, line.configuration_hash)
        description = _describe(product, line)
        if existing is None:
            quantity = min(line.quantity, cap) or line.quantity
            session.add(
                CartLine(
                    cart_id=target.id,
                    product_id=line.product_id,
                    variant_key=line.variant_key,
                    configuration=dict(line.configuration),
                    configuration_hash=line.configuration_hash,
                    quantity=quantity,
                )
            )
            report.lines_added += 1
            report.messages.append(f"Added {description} from before you signed in.")
            if quantity < line.quantity:
                report.messages.append(f"{product.name}: {_cap_message(availability, cap)}")
        else:
            wanted = existing.quantity + line.quantity
            quantity = max(min(wanted, cap), existing.quantity)
            existing.quantity = quantity
            report.lines_combined += 1
            message = f"{description} was already in your bag: you now have {quantity}."
            if quantity < wanted:
                message = f"{message} {_cap_message(availability, cap)}"
            report.messages.append(message)
    session.delete(guest)
    _touch(target)
    session.flush()
    return report


def adopt(session: Session, guest: Cart, user_id: int) -> MergeReport:
    """The account had no bag: the guest bag simply becomes the account's."""
    guest.user_id = user_id
    guest.token = None
    _touch(guest)
    session.flush()
    count = item_count(session, guest)
    report = MergeReport(lines_added=len(guest.lines))
    if count:
        pieces = "piece" if count == 1 else "pieces"
        report.messages.append(f"The {count} {pieces} in your bag are now saved to your account.")
    return report


def _describe(product: Product, line: CartLine) -> str:
    return f"{product.name} ({summary(product, Configuration.from_canonical(line.configuration))})"


def _loaded_lines(session: Session, cart: Cart) -> list[CartLine]:
    """A bag's lines with everything the bag page shows, in a constant number of queries."""
    stmt = (
        select(CartLine)
        .where(CartLine.cart_id == cart.id)
        .order_by(CartLine.id)
        .options(
            selectinload(CartLine.product).options(
                selectinload(Product.options), selectinload(Product.inventory)
            )
        )
    )
    return list(session.scalars(stmt).all())


def _assess(line: CartLine) -> BagLine:
    """Price and stock for one line; a quantity above stock is reduced here (and said so)."""
    product = line.product
    configuration = Configuration.from_canonical(line.configuration)
    availability = variant_availability(product, line.variant_key)
    problem: str | None = None
    blocking = False
    try:
        configure(product, line.configuration, require_size=True)
    except ConfigurationError:
        problem, blocking = "This choice is no longer offered — please remove it.", True
    if problem is None and not product.published:
        problem, blocking = "This piece is no longer offered — please remove it.", True
    if problem is None:
        cap = quantity_cap(availability)
        if availability.status is StockStatus.SOLD_OUT:
            problem, blocking = f"{availability.message} — please remove it from your bag.", True
        elif availability.status is StockStatus.MADE_TO_ORDER and _sold_out_since(product, line):
            problem = (
                "Sold out in this metal — made to order, "
                f"ships in about {availability.lead_time_weeks} weeks"
            )
            if availability.ships_by:
                problem += f", by {availability.ships_by.day} {availability.ships_by:%B}"
            problem += "."
        elif line.quantity > cap:
            problem, blocking = _cap_message(availability, cap), True
            line.quantity = cap
    return BagLine(
        line=line,
        product=product,
        configuration=configuration,
        summary=summary(product, configuration),
        breakdown=price_breakdown(product, configuration),
        availability=availability,
        problem=problem,
        blocking=blocking,
    )


def _sold_out_since(product: Product, line: CartLine) -> bool:
    """Whether this variant's stock changed after the line was last changed, so its being
    made to order is news to the shopper (a piece only ever made to order is not)."""
    row = next((row for row in product.inventory if row.variant_key == line.variant_key), None)
    return row is not None and line.updated_at is not None and row.updated_at > line.updated_at


def view(session: Session, cart: Cart | None) -> BagView:
    """The bag as the shopper sees it: lines, prices, stock problems, totals.

    A line whose quantity is now above the stock is reduced to what is available, and the
    line says so; such a line (and a sold-out one) blocks checkout until it is dealt with.
    """
    if cart is None:
        return BagView(cart=None, lines=[], currency=DEFAULT_CURRENCY)
    lines = [_assess(line) for line in _loaded_lines(session, cart)]
    return BagView(cart=cart, lines=lines, currency=cart.currency)


def purge_guest_carts(session: Session, *, idle_since: datetime) -> int:
    """Delete guest bags untouched since ``idle_since``; account and frozen bags stay."""
    abandoned = select(Cart.id).where(
        Cart.user_id.is_(None), Cart.frozen_at.is_(None), Cart.updated_at < idle_since
    )
    ids = list(session.scalars(abandoned))
    if not ids:
        return 0
    session.execute(delete(CartLine).where(CartLine.cart_id.in_(ids)))
    session.execute(delete(Cart).where(Cart.id.in_(ids)))
    return len(ids)
