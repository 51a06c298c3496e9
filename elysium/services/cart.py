"""The cart (the shopper's bag): every change to its lines goes through here (product page,
cart page, merge on sign-in, wishlist), so quantities are capped and totals computed in one
place.

Stock is counted per variant, never per line: ring size and engraving don't split stock, so
two lines can share one variant (a ring in two sizes) and every cap adds up the cart's lines
on that variant. Showing a cart (:func:`view`) is pure: it reports problems and changes
nothing. Services never commit: the caller's request (or command) is one unit of work.
"""

from __future__ import annotations

import functools
import secrets
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import (
    Insert,
    ScalarSelect,
    Select,
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.orm import joinedload, make_transient_to_detached, selectinload

from elysium.models.cart import Cart, CartLine
from elysium.models.catalog import Product
from elysium.models.inventory import Inventory
from elysium.models.orders import Order, OrderLine, OrderStatus
from elysium.models.types import utcnow
from elysium.services.configuration import (
    Configuration,
    ConfigurationError,
    PriceBreakdown,
    configure,
    price_breakdown,
    summary,
)
from elysium.services.inventory import (
    Availability,
    StockStatus,
    inventory_row,
    variant_availability,
)
from elysium.services.sql import AnySession, hold_row

MAX_QUANTITY_PER_LINE = 5
DEFAULT_CURRENCY = "GBP"
FROZEN_MESSAGE = (
    "Your bag is being paid for, so it can't change right now. Resume or cancel the payment first."
)
GONE_MESSAGE = "Your bag changed in another window just now. Please try again."
QUANTITY_MESSAGE = f"Choose a quantity from 1 to {MAX_QUANTITY_PER_LINE}."

VariantKey = tuple[int, str]


class CartError(Exception):
    """A change the cart refuses; ``message`` is for the shopper, ``field`` the form field."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field


class FrozenCartError(CartError):
    """The cart is frozen while its order is being paid for; ``cart_id`` names it when
    known (a sign-in's merge tells which of two bags it was)."""

    def __init__(self, cart_id: int | None = None) -> None:
        super().__init__(FROZEN_MESSAGE)
        self.cart_id = cart_id


class CartGoneError(CartError):
    """The cart was merged into another or removed while this change was on its way (another
    window of the browser signed in, moving the guest's bag into the account's): nothing is
    being paid for, the change only has to be made again, on the bag there is now."""

    def __init__(self) -> None:
        super().__init__(GONE_MESSAGE)


class LineNotFoundError(CartError):
    """No such line in this cart (someone else's line is not found either)."""

    def __init__(self) -> None:
        super().__init__(
            "That piece is no longer in your bag: it was changed in another window. "
            "Here is your bag as it is now."
        )


class SoldOutError(CartError):
    """The variant is sold out (or all of it is already in the cart) and can't be made."""


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
class CartItem:
    """One line as the shopper sees it: price, stock, and what (if anything) is wrong."""

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

    @property
    def made_to_order(self) -> bool:
        return self.availability.status is StockStatus.MADE_TO_ORDER


@dataclass
class CartView:
    cart: Cart | None
    items: list[CartItem]
    currency: str

    @property
    def subtotal(self) -> int:
        return sum(item.line_total for item in self.items)

    @property
    def item_count(self) -> int:
        return sum(item.line.quantity for item in self.items)

    @property
    def frozen(self) -> bool:
        """Being paid for: the lines are shown, but nothing can change until the payment
        is resumed and finished, or cancelled."""
        return self.cart is not None and self.cart.frozen_at is not None

    @property
    def checkout_blocked(self) -> bool:
        return any(item.blocking for item in self.items)

    @property
    def problems(self) -> list[str]:
        """Each blocking problem once, naming its piece (lines on one variant share one)."""
        seen: dict[str, None] = {}
        for item in self.items:
            if item.problem and item.blocking:
                seen.setdefault(f"{item.product.name}: {item.problem}", None)
        return list(seen)

    @property
    def is_empty(self) -> bool:
        return not self.items


def new_token() -> str:
    """A guest cart's token: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def _owner_clause(user_id: int | None, token: str | None):
    if user_id is not None:
        return Cart.user_id == user_id
    if token:
        return (Cart.token == token) & Cart.user_id.is_(None)
    return None


def find_cart(
    session: AnySession,
    *,
    user_id: int | None = None,
    token: str | None = None,
    with_lines: bool = False,
):
    """The account's cart (``user_id`` wins) or the guest cart with ``token``; None if none.
    ``with_lines``: its lines too, in the same statement (the bag's page shows them all)."""
    clause = _owner_clause(user_id, token)
    if clause is None:
        return None
    if with_lines:
        return session.scalars(_CART_WITH_LINES.where(clause)).unique().first()
    return session.scalar(select(Cart).where(clause))


# Built once: a cart and its lines, joined (``find_cart(with_lines=True)``).
_CART_WITH_LINES = select(Cart).options(joinedload(Cart.lines))


def cart_for(
    session: AnySession,
    *,
    user_id: int | None = None,
    token: str | None = None,
    create: bool = False,
    currency: str = DEFAULT_CURRENCY,
    with_lines: bool = False,
) -> Cart | None:
    """:func:`find_cart`, or with ``create`` a new empty cart for that owner, written with its
    first line (:func:`add_item`)."""
    cart = find_cart(session, user_id=user_id, token=token, with_lines=with_lines)
    if cart is not None or not create:
        return cart
    return new_cart(session, user_id=user_id, token=token, currency=currency)


def new_cart(
    session: AnySession,
    *,
    user_id: int | None = None,
    token: str | None = None,
    currency: str = DEFAULT_CURRENCY,
) -> Cart:
    """A new empty cart for that owner, without looking for one first (a guest given a fresh
    token has none). It is written with the session's next flush: :func:`add_item` writes
    it with its first line, in one go."""
    if user_id is None and not token:
        raise ValueError("a new cart needs an owner: a user id or a guest token")
    cart = Cart(user_id=user_id, token=None if user_id is not None else token, currency=currency)
    session.add(cart)
    return cart


def taken_to_payment(session: AnySession, cart: Cart) -> bool:
    """Whether the bag is being paid for, or an order was ever made from it."""
    if cart.frozen_at is not None:
        return True
    return session.scalar(select(exists().where(Order.cart_id == cart.id))) or False


def item_count(session: AnySession, cart: Cart | None) -> int:
    if cart is None or cart.id is None:
        return 0
    stmt = select(func.coalesce(func.sum(CartLine.quantity), 0)).where(CartLine.cart_id == cart.id)
    return int(session.scalar(stmt) or 0)


# Built once: the header's count, asked on nearly every page, for an account's bag
# (``user_id``) or a guest's (``token``).
_ITEMS_IN_BAG = select(func.coalesce(func.sum(CartLine.quantity), 0)).join(
    Cart, CartLine.cart_id == Cart.id
)
COUNT_FOR_ACCOUNT = _ITEMS_IN_BAG.where(Cart.user_id == bindparam("user_id"))
COUNT_FOR_GUEST = _ITEMS_IN_BAG.where(Cart.token == bindparam("token"), Cart.user_id.is_(None))


def count_query(
    *, user_id: int | None = None, token: str | None = None
) -> tuple[Select, dict[str, object]] | None:
    """The header's count as a statement and its parameters, to run alone or beside another
    query (:mod:`elysium.web.fragments`); None when there is no bag to count (no owner)."""
    if user_id is not None:
        return COUNT_FOR_ACCOUNT, {"user_id": user_id}
    if token:
        return COUNT_FOR_GUEST, {"token": token}
    return None


def count_for(session: AnySession, *, user_id: int | None = None, token: str | None = None) -> int:
    """The header's count in one query, without loading the cart."""
    query = count_query(user_id=user_id, token=token)
    if query is None:
        return 0
    statement, parameters = query
    return int(session.scalar(statement, parameters) or 0)


def _lowered(label: str) -> str:
    return label[:1].lower() + label[1:]


def _stocked(availability: Availability) -> bool:
    return availability.status in (StockStatus.IN_STOCK, StockStatus.LOW)


def line_cap(availability: Availability, elsewhere: int = 0) -> int:
    """How many one line may hold when the cart's other lines hold ``elsewhere`` of the same
    variant: what is left of the stock (when there is any and the piece can't be made), the
    per-line maximum for a piece that can be made to order, and none when sold out."""
    if availability.status is StockStatus.MADE_TO_ORDER or (
        _stocked(availability) and availability.lead_time_weeks
    ):
        return MAX_QUANTITY_PER_LINE
    if _stocked(availability):
        return max(min(availability.available - elsewhere, MAX_QUANTITY_PER_LINE), 0)
    return 0


def _cap_message(availability: Availability, cap: int, elsewhere: int = 0) -> str:
    line = "this one" if _stock_caps(availability, elsewhere) and elsewhere else "your quantity"
    return f"{_why_capped(availability, elsewhere)} — we've set {line} to {cap}."


def _stock_caps(availability: Availability, elsewhere: int) -> bool:
    """Whether the stock left (not the per-line maximum) is what caps a line of the variant."""
    stocked = _stocked(availability) and not availability.lead_time_weeks
    return stocked and availability.available - elsewhere < MAX_QUANTITY_PER_LINE


def _why_capped(availability: Availability, elsewhere: int = 0) -> str:
    """Why a line of the variant can hold no more, as the shopper reads it."""
    if not _stock_caps(availability, elsewhere):
        return f"You can have at most {MAX_QUANTITY_PER_LINE} of one piece in your bag"
    left = f"Only {availability.available} left in {_lowered(availability.variant)}"
    if elsewhere:
        return f"{left}, and your bag already holds {elsewhere} in another size or engraving"
    return left


def _all_in_cart_message(availability: Availability) -> str:
    count = availability.available
    pieces = "piece" if count == 1 else "pieces"
    return f"Your bag already holds the last {count} {pieces} in {_lowered(availability.variant)}."


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
    """Adding or changing lines doesn't update the cart's row; its activity time must move."""
    cart.updated_at = utcnow()


def _claim(session: AnySession, cart: Cart) -> None:
    """Before a cart's lines change: take its row unless a checkout has frozen it
    (:class:`FrozenCartError`), and move its activity time, in one conditional UPDATE.

    The row stays locked until the transaction ends, so a checkout freezing the cart at this
    moment either froze it first (and the change is refused, whatever this request read of
    the cart before) or waits, then reads the lines as changed. A cart not written yet is
    nobody else's.
    """
    if cart.id is None:
        _check_not_frozen(cart)
        return
    _update_unless_frozen(session, cart, updated_at=utcnow())
    session.expire(cart, ["updated_at"])


def _elsewhere(
    session: AnySession, cart: Cart, product_id: int, variant_key: str, line: CartLine | None
) -> int:
    """Units of this variant on the cart's other lines (other sizes and engravings)."""
    stmt = select(func.coalesce(func.sum(CartLine.quantity), 0)).where(
        CartLine.cart_id == cart.id,
        CartLine.product_id == product_id,
        CartLine.variant_key == variant_key,
    )
    if line is not None and line.id is not None:
        stmt = stmt.where(CartLine.id != line.id)
    return int(session.scalar(stmt) or 0)


def _line_and_elsewhere(
    session: AnySession, cart: Cart, product_id: int, variant_key: str, configuration_hash: str
) -> tuple[CartLine | None, int]:
    """The cart's line of this exact configuration (None if it has none) and the units of the
    same variant on its other lines (other sizes and engravings), from one query. A
    configuration's hash covers its metal and diamond, so its line is one of the variant's.
    A cart not written yet has neither."""
    if cart.id is None:
        return None, 0
    stmt = select(CartLine).where(
        CartLine.cart_id == cart.id,
        CartLine.product_id == product_id,
        CartLine.variant_key == variant_key,
    )
    lines = list(session.scalars(stmt))
    line = next((each for each in lines if each.configuration_hash == configuration_hash), None)
    return line, sum(each.quantity for each in lines if each is not line)


def add_item(
    session: AnySession,
    cart: Cart,
    product: Product,
    configuration: Configuration,
    quantity: int = 1,
) -> LineChange:
    """Put ``quantity`` of this exact configuration in the cart (an identical line grows).

    The configuration must come from :func:`configure`; the price is never stored, it is
    computed from the catalogue whenever the cart is shown.
    """
    quantity = _check_quantity(quantity)
    _claim(session, cart)
    availability = variant_availability(product, configuration.variant_key)
    if not availability.purchasable:
        raise SoldOutError(availability.message, field="metal")
    line, elsewhere = _line_and_elsewhere(
        session, cart, product.id, configuration.variant_key, configuration.hash
    )
    cap = line_cap(availability, elsewhere)
    if cap == 0:
        raise SoldOutError(_all_in_cart_message(availability), field="metal")
    had = line.quantity if line else 0
    wanted = had + quantity
    allowed = min(wanted, cap)
    if line is not None and allowed <= had:
        line.quantity = allowed
        session.flush()
        return LineChange(
            line,
            allowed,
            f"{product.name} is already in your bag. {_cap_message(availability, cap, elsewhere)}",
        )
    if line is None:
        line = CartLine(
            cart=cart,
            product_id=product.id,
            variant_key=configuration.variant_key,
            configuration=configuration.canonical(),
            configuration_hash=configuration.hash,
            quantity=allowed,
        )
        if cart.id is None:
            _write_new_bag(session, cart, line)
        else:
            session.add(line)
    else:
        line.quantity = allowed
    session.flush()
    added = allowed - had
    if added == 1:
        message = f"Added {product.name} to your bag."
    else:
        message = f"Added {added} of {product.name} to your bag."
    if allowed < wanted:
        message = f"{message} {_cap_message(availability, cap, elsewhere)}"
    now = variant_availability(product, configuration.variant_key, wanted=allowed + elsewhere)
    if now.status is StockStatus.MADE_TO_ORDER and now.available:
        message = f"{message} {_more_than_left_message(now)}"
    return LineChange(line, allowed, message)


def _write_new_bag(session: AnySession, cart: Cart, line: CartLine) -> None:
    """Write a bag not written yet with its first line: both rows or neither.

    On PostgreSQL in one statement, the bag's ``INSERT`` feeding the line's (``WITH … INSERT``),
    where the session's unit of work sends two and does much more besides; a shopper's first
    "Add to bag" is the most frequent change the shop takes. The two objects are then the
    session's, as if it had written them. SQLite can't insert from a ``WITH``: the session
    writes them there.
    """
    if session.get_bind(Cart).dialect.name != "postgresql":
        session.add(line)
        session.flush()
        return
    for unwritten in (line, cart):
        if unwritten in session:  # or the statement's autoflush would write it first
            session.expunge(unwritten)
    now = utcnow()
    cart.created_at = cart.updated_at = line.created_at = line.updated_at = now
    cart_values = _unwritten_values(cart)
    line_values = _unwritten_values(line, but=("cart_id",))
    statement = _new_bag_statement(tuple(cart_values), tuple(line_values))
    parameters = {f"cart_{name}": value for name, value in cart_values.items()}
    parameters.update({f"line_{name}": value for name, value in line_values.items()})
    cart.id, line.id = session.execute(statement, parameters).one()
    line.cart_id = cart.id
    make_transient_to_detached(cart)
    make_transient_to_detached(line)
    session.add_all((cart, line))


@functools.cache
def _new_bag_statement(cart_columns: tuple[str, ...], line_columns: tuple[str, ...]) -> Insert:
    """:func:`_write_new_bag`'s statement for rows with values in these columns, built once
    for each set (a bag's rows have one or two), its values bound by name (``cart_…``,
    ``line_…``): building and keying a ``WITH … INSERT`` anew cost as much as sending it."""
    carts_table, lines_table = Cart.__table__, CartLine.__table__
    new_bag = (
        insert(carts_table)
        .values(
            {
                name: bindparam(f"cart_{name}", type_=carts_table.c[name].type)
                for name in cart_columns
            }
        )
        .returning(carts_table.c.id)
        .cte("new_bag")
    )
    chosen = [bindparam(f"line_{name}", type_=lines_table.c[name].type) for name in line_columns]
    return (
        insert(lines_table)
        .from_select(["cart_id", *line_columns], select(new_bag.c.id, *chosen))
        .returning(lines_table.c.cart_id, lines_table.c.id)
    )


def _unwritten_values(row: Cart | CartLine, but: tuple[str, ...] = ()) -> dict[str, object]:
    """The columns a row not written yet has values for, but its id (and ``but``): a column
    left None gets its default from the ``INSERT``, as the unit of work would give it."""
    return {
        column.key: value
        for column in row.__table__.columns  # type: ignore[union-attr]
        if column.key != "id"
        and column.key not in but
        and (value := getattr(row, column.key)) is not None
    }


def _owned_line(session: AnySession, cart: Cart, line_id: int) -> CartLine:
    """The cart's line, as it is once the cart is claimed (:func:`_claim`, first): another
    window may have removed it, or emptied the bag, just before."""
    line = None
    if isinstance(line_id, int):
        line = session.get(CartLine, line_id, populate_existing=True)
    if line is None or line.cart_id != cart.id:
        raise LineNotFoundError()
    return line


def set_quantity(session: AnySession, cart: Cart, line_id: int, quantity: int) -> LineChange:
    """Set a line's quantity (1 to the per-line maximum), capped by the variant's stock less
    what the cart's other lines already hold of it."""
    quantity = _check_quantity(quantity)
    _claim(session, cart)
    line = _owned_line(session, cart, line_id)
    product = line.product
    availability = variant_availability(product, line.variant_key)
    if not availability.purchasable:
        raise SoldOutError(f"{availability.message} — please remove it from your bag.")
    elsewhere = _elsewhere(session, cart, line.product_id, line.variant_key, line)
    cap = line_cap(availability, elsewhere)
    if cap == 0:
        raise SoldOutError(
            f"{product.name}: {_all_in_cart_message(availability)} "
            "Lower another line or remove this one."
        )
    allowed = min(quantity, cap)
    line.quantity = allowed
    session.flush()
    if allowed < quantity:
        message = f"{product.name}: {_cap_message(availability, cap, elsewhere)}"
    else:
        message = f"{product.name}: quantity {allowed}."
    return LineChange(line, allowed, message)


def remove_line(session: AnySession, cart: Cart, line_id: int) -> None:
    _claim(session, cart)
    line = _owned_line(session, cart, line_id)
    session.delete(line)
    session.flush()


def remove_all_lines(session: AnySession, cart: Cart) -> int:
    """Empty the bag at the shopper's request; returns how many pieces it held. A bag being
    paid for is refused (:class:`FrozenCartError`): the payment is resumed or cancelled first.
    (:func:`empty` is the other way a bag empties: its lines became an order.)"""
    _claim(session, cart)
    removed = item_count(session, cart)
    session.execute(delete(CartLine).where(CartLine.cart_id == cart.id))
    session.expire(cart, ["lines", "updated_at"])
    return removed


def merge_into(session: AnySession, guest: Cart, target: Cart) -> MergeReport:
    """Move a guest's lines into the account's cart, then delete the guest cart.

    Identical lines add up; every line is capped by what the variant has left after the
    account's other lines on it (and at the per-line maximum). A line whose variant has
    nothing left keeps its quantity, and the cart page then asks the shopper to deal with it.

    A bag is never merged into itself: found by its token, then as the account's, it became
    the account's in between (the browser's other window signed in and adopted it), and
    there is nothing left to bring (merged, each line would double, and the bag be deleted).
    """
    if guest.id == target.id:
        return MergeReport()
    _claim(session, target)
    _claim(session, guest)
    report = MergeReport()
    for line in _loaded_lines(session, guest):
        product = line.product
        availability = variant_availability(product, line.variant_key)
        existing, elsewhere = _line_and_elsewhere(
            session, target, line.product_id, line.variant_key, line.configuration_hash
        )
        cap = line_cap(availability, elsewhere)
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
            session.flush()
            report.lines_added += 1
            report.messages.append(f"Added {description} from before you signed in.")
            if quantity < line.quantity:
                report.messages.append(
                    f"{product.name}: {_cap_message(availability, cap, elsewhere)}"
                )
        else:
            existing_quantity = existing.quantity
            wanted = existing_quantity + line.quantity
            quantity = max(min(wanted, cap), existing_quantity)
            existing.quantity = quantity
            session.flush()
            report.lines_combined += 1
            message = f"{description} was already in your bag: you now have {quantity}."
            if existing_quantity < quantity < wanted:
                message = f"{message} {_cap_message(availability, cap, elsewhere)}"
            elif quantity < wanted:
                # The line already held more than can be had: it keeps them (the bag's page
                # asks the shopper to lower it), and none of the guest's joined them.
                added = "the one" if line.quantity == 1 else f"the {line.quantity}"
                message = (
                    f"{description} was already in your bag ({quantity}), so {added} from "
                    f"before you signed in {'was' if line.quantity == 1 else 'were'} not "
                    f"added. {_why_capped(availability, elsewhere)}."
                )
            report.messages.append(message)
    detach_orders(session, [guest.id])
    session.delete(guest)
    session.flush()
    return report


def adopt(session: AnySession, guest: Cart, user_id: int) -> MergeReport:
    """The account had no cart: the guest cart becomes the account's, as :func:`merge_into`
    takes one: not while a checkout holds it (:class:`FrozenCartError`: it stays the guest's,
    with its cookie), and without the orders bought from it, which stay the guest's (a shared
    browser: the success page of a stranger's order, or their payment still open, would open
    for the account, from any of its devices)."""
    _claim(session, guest)
    detach_orders(session, [guest.id])
    guest.user_id = user_id
    guest.token = None
    _touch(guest)
    session.flush()
    count = item_count(session, guest)
    report = MergeReport(lines_added=len(guest.lines))
    if count == 1:
        report.messages.append("The piece in your bag is now saved to your account.")
    elif count:
        report.messages.append(f"The {count} pieces in your bag are now saved to your account.")
    return report


def _describe(product: Product, line: CartLine) -> str:
    return f"{product.name} ({summary(product, Configuration.from_canonical(line.configuration))})"


def _loaded_lines(session: AnySession, cart: Cart, *, afresh: bool = False) -> list[CartLine]:
    """A cart's lines with everything the cart page shows, in a constant number of queries:
    the lines with their pieces (joined: one piece per line), then the pieces' options and
    stock. ``afresh``: as the database has them now, even where this session read them
    before (a checkout reads the lines once it has frozen the cart)."""
    stmt = (
        select(CartLine)
        .where(CartLine.cart_id == cart.id)
        .order_by(CartLine.id)
        .options(
            joinedload(CartLine.product).options(
                selectinload(Product.options), selectinload(Product.inventory)
            )
        )
        .execution_options(populate_existing=afresh)
    )
    return list(session.scalars(stmt).all())


# Built once: the stock rows, as they are now, of every piece in the bag ``:cart_id``.
BAG_STOCK = select(*Inventory.__table__.c).where(
    Inventory.product_id.in_(
        select(CartLine.product_id).where(CartLine.cart_id == bindparam("cart_id"))
    )
)


def held_for_cart(session: AnySession, cart: Cart) -> Counter[int]:
    """Units (per inventory row) that the order this frozen cart is being paid for has
    reserved: the cart must not be measured against its own reservation."""
    rows = session.execute(
        select(OrderLine.inventory_id, func.sum(OrderLine.quantity))
        .join(Order, OrderLine.order_id == Order.id)
        .where(
            Order.cart_id == cart.id,
            Order.status == OrderStatus.PENDING,
            OrderLine.inventory_id.is_not(None),
            OrderLine.made_to_order.is_(False),
        )
        .group_by(OrderLine.inventory_id)
    )
    return Counter({inventory_id: int(quantity) for inventory_id, quantity in rows})


def _more_than_left_message(availability: Availability) -> str:
    """A bag asking for more of a variant than is left, which can be made: made to order."""
    message = (
        f"Only {availability.available} left in {_lowered(availability.variant)}, so yours "
        "are made to order"
    )
    if availability.promised_weeks:
        message += f": they ship in about {availability.promised_weeks} weeks"
    if availability.ships_by:
        message += f", by {availability.ships_by.day} {availability.ships_by:%B}"
    return message + "."


def _over_stock_message(availability: Availability, wanted: int, lines: int) -> str:
    variant = _lowered(availability.variant)
    if lines > 1:
        return (
            f"Only {availability.available} left in {variant}, and your bag asks for {wanted} "
            f"across {lines} sizes or engravings — please lower one of them."
        )
    return (
        f"Only {availability.available} left in {variant} — please lower the quantity "
        f"to {availability.available}."
    )


CHOICES_CHANGED = "This piece's choices have changed — please remove it and choose it again."


def _no_longer_offered(error: ConfigurationError) -> str:
    """What to tell the shopper when the catalogue no longer offers the line's choice (an
    option removed in the studio, say)."""
    for name in ("metal", "diamond"):
        if name in error.errors:
            return f"This {name} is no longer offered for this piece — please remove it."
    return "This choice is no longer offered — please remove it."


def _assess(
    line: CartLine, wanted: Counter[VariantKey], lines_on: Counter[VariantKey], held: Counter[int]
) -> CartItem:
    """Price and stock for one line. Nothing is changed: a problem is only reported."""
    product = line.product
    configuration = Configuration.from_canonical(line.configuration)
    row = inventory_row(product, line.variant_key)
    own = held[row.id] if row is not None else 0
    variant: VariantKey = (line.product_id, line.variant_key)
    availability = variant_availability(product, line.variant_key, held=own, wanted=wanted[variant])
    problem: str | None = None
    blocking = False
    try:
        configured = configure(product, line.configuration, require_size=True)
    except ConfigurationError as error:
        problem, blocking = _no_longer_offered(error), True
    else:
        if configured.hash != line.configuration_hash:
            # The piece's choices changed under the line (a diamond choice added to a chain
            # sold plain, say): configure() takes the first of a new choice, so the line reads
            # as another piece than the one it holds, whose stock row is no longer offered.
            problem, blocking = CHOICES_CHANGED, True
    if problem is None and not product.published:
        problem, blocking = "This piece is no longer offered — please remove it.", True
    if problem is None:
        if availability.status is StockStatus.SOLD_OUT:
            problem, blocking = f"{availability.message} — please remove it from your bag.", True
        elif availability.status is StockStatus.MADE_TO_ORDER and availability.available:
            problem = _more_than_left_message(availability)
        elif availability.status is StockStatus.MADE_TO_ORDER and _sold_out_since(product, line):
            problem = "Sold out in this metal — made to order"
            if availability.promised_weeks:
                problem += f", ships in about {availability.promised_weeks} weeks"
            if availability.ships_by:
                problem += f", by {availability.ships_by.day} {availability.ships_by:%B}"
            problem += "."
        elif _stocked(availability) and wanted[variant] > availability.available:
            problem = _over_stock_message(availability, wanted[variant], lines_on[variant])
            blocking = True
    return CartItem(
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
    row = inventory_row(product, line.variant_key)
    return row is not None and line.updated_at is not None and row.updated_at > line.updated_at


def view(
    session: AnySession,
    cart: Cart | None,
    *,
    afresh: bool = False,
    lines: list[CartLine] | None = None,
) -> CartView:
    """The cart as the shopper sees it: lines, prices, stock problems, totals. Pure.

    Lines on one variant are measured together against its stock; a frozen cart is measured
    against the stock plus what its own pending order holds. A line that is sold out, no
    longer offered, or asks (with its siblings) for more than is left blocks checkout until
    the shopper changes it. ``afresh``: the lines as the database has them now (see
    ``_loaded_lines``). ``lines``: the cart's lines, each with its piece and the piece's
    options and stock rows as they are now, when the caller has them (the bag's page, never
    a checkout: ``web.fragments.bag_lines_to_show``).
    """
    if cart is None:
        return CartView(cart=None, items=[], currency=DEFAULT_CURRENCY)
    if lines is None:
        lines = _loaded_lines(session, cart, afresh=afresh)
    wanted: Counter[VariantKey] = Counter()
    lines_on: Counter[VariantKey] = Counter()
    for line in lines:
        wanted[(line.product_id, line.variant_key)] += line.quantity
        lines_on[(line.product_id, line.variant_key)] += 1
    held = held_for_cart(session, cart) if cart.frozen_at is not None else Counter()
    items = [_assess(line, wanted, lines_on, held) for line in lines]
    return CartView(cart=cart, items=items, currency=cart.currency)


def empty(session: AnySession, cart_id: int) -> None:
    """The cart's lines became an order: remove them and let the cart change again."""
    session.execute(delete(CartLine).where(CartLine.cart_id == cart_id))
    thaw(session, cart_id)


def freeze(session: AnySession, cart: Cart) -> None:
    """Freeze the cart for payment in one conditional UPDATE, so two submits can't both start
    a checkout (the loser gets :class:`FrozenCartError`)."""
    _update_unless_frozen(session, cart, frozen_at=utcnow())
    session.expire(cart, ["frozen_at"])


def _update_unless_frozen(session: AnySession, cart: Cart, **values: object) -> None:
    """One conditional UPDATE of a cart that is not frozen and still has the owner it was
    found with (the guest's token, or the account), which also takes its row lock until the
    transaction ends; :class:`FrozenCartError` if a checkout froze it first,
    :class:`CartGoneError` if it is no more or is someone else's now (another window of the
    browser signed in meanwhile: the guest's bag became the account's, or was merged into
    it). A guest's bag found by its token, then taken by a sign-in, is never changed, frozen
    or merged as the guest's."""
    if cart.user_id is not None:
        owner = Cart.user_id == cart.user_id
    else:
        owner = Cart.user_id.is_(None) & (Cart.token == cart.token)
    updated = session.execute(
        update(Cart)
        .where(Cart.id == cart.id, owner, Cart.frozen_at.is_(None))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if updated.rowcount != 1:
        still = session.scalar(select(Cart.id).where(Cart.id == cart.id, owner))
        if still is None:
            raise CartGoneError()
        raise FrozenCartError(cart.id)


def thaw(session: AnySession, cart_id: int) -> bool:
    """The payment ended without an order: the cart, exactly as it was, can change again.
    Never while an order still being paid holds it: a resume or a cancel that found no such
    order may meet a checkout that has just frozen the cart again for a new one. Whether the
    cart is free now."""
    session.flush()  # an order this transaction just ended no longer holds it
    # The bag's row first, then the orders, in a statement of their own: an UPDATE that waits
    # on a row (a checkout freezing the bag for a new order) re-checks that row when it gets
    # it, but not what its subquery read before it waited (PostgreSQL, read committed).
    session.execute(select(Cart.id).where(Cart.id == cart_id).with_for_update())
    held = (
        select(Order.id)
        .where(Order.cart_id == cart_id, Order.status == OrderStatus.PENDING)
        .exists()
    )
    thawed = session.execute(
        update(Cart)
        .where(Cart.id == cart_id, ~held)
        .values(frozen_at=None)
        .execution_options(synchronize_session=False)
    )
    return thawed.rowcount == 1


# Guest bags removed in one transaction at most (``purge_guest_carts``): their ids are bound
# as parameters, of which PostgreSQL takes 65,535 in a statement.
PURGE_BATCH = 1000


def purge_guest_carts(
    session: AnySession, *, idle_since: datetime, limit: int = PURGE_BATCH
) -> int:
    """Delete up to ``limit`` guest carts untouched since ``idle_since`` (the oldest ids
    first); account and frozen carts stay. The caller commits and asks again while a whole
    batch went.

    Each is taken before it is deleted, and one a checkout holds at this moment (freezing it
    to be paid for) is skipped: deleted, its order would lose its bag while being paid."""
    abandoned = (
        select(Cart.id)
        .where(Cart.user_id.is_(None), Cart.frozen_at.is_(None), Cart.updated_at < idle_since)
        .order_by(Cart.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    ids = list(session.scalars(abandoned))
    if not ids:
        return 0
    detach_orders(session, ids)
    session.execute(delete(CartLine).where(CartLine.cart_id.in_(ids)))
    session.execute(delete(Cart).where(Cart.id.in_(ids)))
    return len(ids)


def hold_account_bag(session: AnySession, user_id: int) -> None:
    """Take the account's bag row (if it has one) until the transaction ends: a checkout
    starting now waits to freeze it, one that froze it before has committed its order."""
    bag_id = session.scalar(select(Cart.id).where(Cart.user_id == user_id))
    if bag_id is None:
        return
    hold_row(session, Cart, bag_id)


def stock_row_ids(session: AnySession, cart_id: int) -> list[int]:
    """The stock rows the cart's lines draw on (a checkout of it reserves from these)."""
    return list(
        session.scalars(
            select(Inventory.id)
            .join(
                CartLine,
                and_(
                    CartLine.product_id == Inventory.product_id,
                    CartLine.variant_key == Inventory.variant_key,
                ),
            )
            .where(CartLine.cart_id == cart_id)
            .distinct()
        )
    )


def detach_orders(session: AnySession, cart_ids: Iterable[int] | ScalarSelect[int]) -> None:
    """Before carts are deleted (or given to an account): the orders bought from them point
    at them no more. The foreign key says so too (ON DELETE SET NULL), but SQLite applies it
    only when asked, and gives a deleted newest cart's id to the next: a stranger's new bag
    would then open the order's success page as its own. ``cart_ids``: ids, or a subquery of
    them."""
    session.execute(
        update(Order)
        .where(Order.cart_id.in_(cart_ids))
        .values(cart_id=None)
        .execution_options(synchronize_session=False)
    )
