"""Checkout: the order, its stock and the frozen cart, from the first click to the last event.

The view, the Stripe webhook and the cron sweeper all go through here, so each of these is
written once: reserving an order's stock, releasing it and thawing the cart
(:func:`close_unpaid`), committing it and emptying the cart (:func:`complete_payment`).

The order of events for a shopper:

1. :func:`start_checkout` (one transaction, committed by the caller): the PENDING order with
   its expiry, the stock reserved per variant in a fixed order, the cart frozen.
2. :func:`begin_payment` asks Stripe for a payment page. The order is already committed, so a
   crash in between leaves an order whose expiry the sweeper sees; Stripe failing cancels the
   order at once and hands the cart back.
3. The webhook (see :mod:`elysium.services.payments`) marks it paid, awaiting a bank transfer,
   failed or expired; the shopper may instead resume or cancel from the cart page.

No database row lock is ever held while Stripe is called: what to do is decided from a plain
read, Stripe is asked, and the result is applied in a short transaction that locks the order
and checks its state again (:func:`settle`). Services never commit: the caller does.
"""

from __future__ import annotations

import enum
import hashlib
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import selectinload
from sqlalchemy.orm.attributes import set_committed_value

from elysium.integrations import stripe_gateway
from elysium.integrations.stripe_gateway import LineItem, PaymentProviderError
from elysium.models.cart import Cart
from elysium.models.inventory import Inventory
from elysium.models.orders import Order, OrderLine, OrderStatus
from elysium.models.types import utcnow
from elysium.models.users import User
from elysium.money import format_money
from elysium.services import cart as carts
from elysium.services import inventory, orders
from elysium.services.configuration import variant_label
from elysium.services.sql import AnySession, hold_row, take_turns_on_sqlite

logger = logging.getLogger(__name__)

SHOPPER = "shopper"
SYSTEM = "system"
# Stripe refuses an expiry under 30 minutes (or over 24 hours) from when it creates the session;
# the margin covers the time the request takes to get there.
MIN_EXPIRY_MINUTES = 30
MAX_EXPIRY_MINUTES = 60
EXPIRY_MARGIN = timedelta(minutes=1)
SHIPPING_NOTE = "Complimentary insured delivery"
DELIVERY = "Insured delivery"
EMPTY = "Your bag is empty."
# A bank payment arrives or fails within days, and Stripe retries its event for three more;
# one still on its way after this long is shown to staff (``flag_overdue_bank_payment``).
BANK_PAYMENT_OVERDUE = timedelta(days=14)
BANK_PAYMENT_OVERDUE_FLAG = (
    "The bank payment has been on its way for over 14 days: check it in Stripe, then wait or "
    "cancel the order (which puts its pieces back on sale)"
)
# The flag the sweeper raises when Stripe took the money but no event told us; the payment
# event clears it when it arrives.
AWAITING_EVENT_FLAG = (
    "Stripe says this checkout was paid, but no payment event has arrived: "
    "check the webhook (the order stays reserved until it does)"
)
# The flag the sweeper raises when Stripe has no record of the order's payment page: the
# secret key now belongs to another Stripe account (or mode), or the page was never made
# there. The shopper may have paid on it under the account it was made under, so the order is
# not cancelled blind; it holds its pieces until staff have looked. The order leaving PENDING
# (cancelled by staff, or its payment event arriving after all) clears it.
UNKNOWN_PAGE_FLAG = (
    "Stripe doesn't know this order's payment page: check the Stripe account it was made "
    "under before cancelling (the shopper may have paid there; the order holds its pieces "
    "until then)"
)


class CheckoutError(Exception):
    """The cart can't be checked out as it is; ``message`` is for the shopper."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BagChangedError(CheckoutError):
    """The bag is not as the shopper's checkout page showed it; ``changes`` says how."""

    def __init__(self, changes: list[str]):
        super().__init__(
            f"While you were checking out, your order changed. {' '.join(changes)} Please "
            "look over it, then continue."
        )
        self.changes = changes


class SoldOutDuringCheckoutError(CheckoutError):
    """Another shopper reserved the units first; the caller must roll back."""

    def __init__(self, product_name: str, variant: str, available: int, wanted: int):
        left = "none" if available == 0 else f"only {available}"
        super().__init__(
            f"{product_name} in {variant[:1].lower()}{variant[1:]} has just sold out: "
            f"{left} left, and your bag asks for {wanted}. Your bag is unchanged — "
            "please review it."
        )
        self.product_name = product_name
        self.available = available


class PaymentUnavailableError(CheckoutError):
    """Stripe could not give us a payment page; the order was cancelled, the cart is back."""

    status = 503

    def __init__(self) -> None:
        super().__init__(
            "We couldn't reach our payment provider — your bag is saved, please try again."
        )


class PaymentEndedError(PaymentUnavailableError):
    """The order was cancelled while Stripe was making its payment page (in another window,
    by staff, or by a second submit): the page was closed at once, nobody was charged."""

    status = 409

    def __init__(self) -> None:
        CheckoutError.__init__(
            self,
            "This payment was cancelled before its page opened, so nothing was charged and "
            "your bag is just as you left it. Check out again whenever you are ready.",
        )


@dataclass(frozen=True)
class CheckoutDetails:
    """Who the order is for and where it goes, as the checkout form gave them."""

    email: str
    shipping: dict[str, str]
    billing: dict[str, str]
    gift_message: str = ""
    user_id: int | None = None


@dataclass(frozen=True)
class ReturnUrls:
    """Where Stripe sends the shopper back to (``{CHECKOUT_SESSION_ID}`` is filled in)."""

    success: str
    cancel: str


@dataclass(frozen=True)
class Totals:
    subtotal: int
    shipping: int
    total: int
    signature_required: bool = False


def shipping_for(subtotal: int) -> int:
    """Insured delivery is complimentary for now (the order records it as 0)."""
    return 0


def totals(cart: carts.CartView, *, signature_above: int | None = None) -> Totals:
    """What the order will cost; ``signature_above`` is the total over which the insured
    courier needs a signature."""
    shipping = shipping_for(cart.subtotal)
    total = cart.subtotal + shipping
    return Totals(cart.subtotal, shipping, total, orders.needs_signature(total, signature_above))


def payment_expiry(minutes: int) -> datetime:
    """When the payment page (and the stock held for it) expires: ``minutes`` from now."""
    minutes = min(max(minutes, MIN_EXPIRY_MINUTES), MAX_EXPIRY_MINUTES)
    return utcnow() + timedelta(minutes=minutes) + EXPIRY_MARGIN


def stock_taken(order: Order) -> list[tuple[int, int]]:
    """``(inventory id, units)`` the order's stocked lines take, summed per variant (sizes and
    engravings share stock) and sorted by id: every reserve, commit and release locks the
    rows in this one order, so two checkouts can never wait on each other in a circle."""
    units: Counter[int] = Counter()
    for line in order.lines:
        if line.inventory_id is not None and not line.made_to_order:
            units[line.inventory_id] += line.quantity
    return sorted(units.items())


def _reserve(session: AnySession, order: Order) -> None:
    for inventory_id, quantity in stock_taken(order):
        try:
            inventory.reserve(session, inventory_id, quantity, order_id=order.id)
        except inventory.OutOfStockError as error:
            raise _sold_out(session, order, inventory_id, quantity) from error


def _sold_out(
    session: AnySession, order: Order, inventory_id: int, wanted: int
) -> SoldOutDuringCheckoutError:
    line = next(line for line in order.lines if line.inventory_id == inventory_id)
    row = session.get(Inventory, inventory_id, populate_existing=True)
    available = row.available if row is not None else 0
    variant = variant_label(row.product, row.variant_key) if row is not None else "this choice"
    return SoldOutDuringCheckoutError(line.product_name, variant, available, wanted)


def release_stock(session: AnySession, order: Order) -> None:
    """The order ended unpaid: its reserved units can be sold again (once, whoever asks)."""
    for inventory_id, quantity in stock_taken(order):
        inventory.release(session, inventory_id, quantity, order_id=order.id)


def commit_stock(session: AnySession, order: Order) -> None:
    """The order is paid: its reserved units leave stock (once, whoever asks)."""
    for inventory_id, quantity in stock_taken(order):
        inventory.commit(session, inventory_id, quantity, order_id=order.id)


def start_checkout(
    session: AnySession,
    cart: Cart | None,
    details: CheckoutDetails,
    *,
    expiry_minutes: int,
    as_shown: str | None = None,
) -> Order:
    """Create the PENDING order for this cart, reserve its stock and freeze the cart.

    The order carries its expiry from this moment, so whatever happens next, the sweeper can
    release it. ``as_shown`` is the bag as the shopper's checkout page showed it
    (:func:`bag_as_shown`): the order is only made of that. Raises :class:`CheckoutError`
    (empty cart, lines that need the shopper's attention, or a bag that changed since the
    page was shown, named), :class:`carts.FrozenCartError` (already being paid for),
    :class:`carts.CartGoneError` (the bag is no longer the one the shopper's request found:
    another tab signed in, and the guest's bag became the account's or joined it; it is never
    frozen for an order of the guest's) or :class:`SoldOutDuringCheckoutError` (the caller
    rolls back).
    """
    if cart is None:
        raise CheckoutError(EMPTY)
    if cart.frozen_at is not None:
        raise carts.FrozenCartError()
    # Freeze first, then read the lines: a change to the bag made at this moment either came
    # first (and is in the order) or waits for the freeze and is refused.
    carts.freeze(session, cart)
    view = carts.view(session, cart, afresh=True)
    if view.is_empty:
        raise CheckoutError(EMPTY)
    if view.checkout_blocked:
        raise CheckoutError(" ".join(view.problems))
    if as_shown is not None and (changes := changes_since_shown(view, as_shown)):
        raise BagChangedError(changes)
    amounts = totals(view)
    if problem := _not_payable_online(view, amounts):
        raise CheckoutError(problem)
    lines = []
    for item in view.items:
        row = inventory.inventory_row(item.product, item.line.variant_key)
        lines.append(
            OrderLine(
                product_id=item.product.id,
                inventory_id=row.id if row else None,
                product_name=item.product.name,
                product_slug=item.product.slug,
                variant_key=item.line.variant_key,
                configuration=dict(item.line.configuration),
                configuration_summary=item.summary,
                made_to_order=item.made_to_order,
                ships_by=item.availability.ships_by if item.made_to_order else None,
                image_url=item.product.first_image_url,
                unit_price=item.unit_price,
                quantity=item.line.quantity,
            )
        )
    order = create_pending_order(
        session,
        details,
        currency=view.currency,
        lines=lines,
        shipping=amounts.shipping,
        expiry_minutes=expiry_minutes,
        note=f"Checkout started. {SHIPPING_NOTE}.",
        cart_id=cart.id,
    )
    _reserve(session, order)
    return order


# ``bag_as_shown``: lines apart, a line's parts apart; what a made-to-order line's part says
# before its lead time, and an in-stock line's.
SHOWN_LINES, SHOWN_PARTS, SHOWN_MADE, SHOWN_IN_STOCK = ";", ":", "m", "s"
SHOWN_MAX_CHARACTERS = 20_000
SHOWN_NUMBER_MAX_DIGITS = 12


def _made_as_shown(item: carts.CartItem) -> str:
    if not item.made_to_order:
        return SHOWN_IN_STOCK
    return f"{SHOWN_MADE}{item.availability.lead_time_weeks or ''}"


def bag_as_shown(view: carts.CartView) -> str:
    """The bag as the checkout page shows it, for its form to send back: each line's id,
    quantity and unit price, and whether it is made to order (with its lead time). Nothing
    in it is trusted: the order is always made from the bag as it is, and this only tells
    whether the shopper saw that bag (:func:`changes_since_shown`)."""
    return SHOWN_LINES.join(
        SHOWN_PARTS.join(
            (str(item.line.id), str(item.line.quantity), str(item.unit_price), _made_as_shown(item))
        )
        for item in view.items
    )


def _lines_by_piece(order: Order | None) -> dict[tuple[int | None, str], OrderLine]:
    """An order's lines by piece and configuration, as a bag's lines are told apart."""
    if order is None:
        return {}
    return {(line.product_id, line.variant_key): line for line in order.lines}


def _read_shown(shown: str) -> dict[int, tuple[int, int, str]] | None:
    """``bag_as_shown``'s text as line id → (quantity, unit price, made); None when it is not
    such a text (tampered with, or cut short)."""
    if len(shown) > SHOWN_MAX_CHARACTERS:
        return None
    lines: dict[int, tuple[int, int, str]] = {}
    for part in filter(None, shown.split(SHOWN_LINES)):
        parts = part.split(SHOWN_PARTS)
        numbers = parts[:3]
        if len(parts) != 4 or not parts[3] or not all(_shown_number(n) for n in numbers):
            return None
        line_id, quantity, price = map(int, numbers)
        lines[line_id] = (quantity, price, parts[3])
    return lines


def _shown_number(text: str) -> bool:
    """A line id, quantity or price as a page writes them: ASCII digits, a dozen at most
    (``int()`` refuses a string of over 4,300 digits, and no price or id comes near)."""
    return text.isascii() and text.isdigit() and len(text) <= SHOWN_NUMBER_MAX_DIGITS


def changes_since_shown(
    view: carts.CartView, shown: str, *, paying: Order | None = None
) -> list[str]:
    """What the shopper would pay for, or wait for, that the checkout page they sent did not
    show (another tab changed the bag, staff changed a price, the last piece in stock was
    sold so a line is now made to order): each change in a sentence; none when the page
    showed the bag as it is. A line that came into stock meanwhile is good news, and asks
    nothing of the shopper. With ``paying``, the order a frozen bag is being paid for: its
    payment page keeps the prices and the making of its own lines, which are what the sent
    page is held to, not the bag's as they are now."""
    seen = _read_shown(shown)
    if seen is None:
        return ["Your bag is not as the page you sent showed it."]
    ordered = _lines_by_piece(paying)
    changes = []
    for item in view.items:
        name = item.product.name
        line = ordered.get((item.product.id, item.line.variant_key))
        unit_price = line.unit_price if line else item.unit_price
        money = format_money(unit_price, view.currency)
        was = seen.pop(item.line.id, None)
        if was is None:
            changes.append(f"{name} ({money}) has been added to your bag.")
            continue
        quantity, price, made = was
        if item.line.quantity != quantity:
            changes.append(f"Your bag now holds {item.line.quantity} of {name}, not {quantity}.")
        if unit_price != price:
            before = format_money(price, view.currency)
            changes.append(f"{name} is now {money} (it was {before}).")
        if line is not None:
            if line.made_to_order and made == SHOWN_IN_STOCK:
                ships = f", to ship by {line.ships_by.day} {line.ships_by:%B %Y}"
                changes.append(f"{name} is now made to order{ships if line.ships_by else ''}.")
        elif item.made_to_order and _made_as_shown(item) != made:
            weeks = item.availability.promised_weeks
            changes.append(
                f"{name} is now made to order"
                + (f", to ship in about {weeks} weeks." if weeks else ".")
            )
    if seen:
        changes.append(
            "A piece you saw is no longer in your bag."
            if len(seen) == 1
            else f"{len(seen)} pieces you saw are no longer in your bag."
        )
    return changes


def _not_payable_online(view: carts.CartView, amounts: Totals) -> str | None:
    """Why Stripe's payment page would refuse this bag whenever it is asked (too many lines,
    too large or too small an amount: ``stripe_gateway.MAX_LINE_ITEMS``, ``MAX_AMOUNT``,
    ``min_amount``), for the shopper to read before anything is reserved; None when it can
    be paid."""
    pieces = stripe_gateway.MAX_LINE_ITEMS - (1 if amounts.shipping else 0)
    if len(view.items) > pieces:
        return (
            f"Your bag holds {len(view.items)} different pieces, and our payment page takes "
            f"{pieces} at most: please buy some of them first, or contact us."
        )
    if amounts.total > stripe_gateway.MAX_AMOUNT:
        most = format_money(stripe_gateway.MAX_AMOUNT, view.currency)
        return (
            f"An order of more than {most} can't be paid online: please contact us, and we "
            "will arrange it with you."
        )
    least = stripe_gateway.min_amount(view.currency)
    if amounts.total < least:
        return (
            f"An order of less than {format_money(least, view.currency)} can't be paid online: "
            "please contact us."
        )
    return None


def create_pending_order(
    session: AnySession,
    details: CheckoutDetails,
    *,
    currency: str,
    lines: list[OrderLine],
    shipping: int,
    expiry_minutes: int,
    note: str,
    cart_id: int | None = None,
    bespoke_quote_id: int | None = None,
) -> Order:
    """A PENDING order of these lines, its total worked out here from them, carrying its
    expiry from this moment (so the sweeper can always end it). The bag's checkout and a
    bespoke deposit (``services.quotes``) both make their orders here; the caller reserves
    any stock and commits."""
    subtotal = sum(line.unit_price * line.quantity for line in lines)
    order = Order(
        number=orders.new_order_number(session),
        user_id=details.user_id,
        cart_id=cart_id,
        bespoke_quote_id=bespoke_quote_id,
        email=details.email,
        status=OrderStatus.PENDING,
        currency=currency,
        subtotal=subtotal,
        shipping=shipping,
        total=subtotal + shipping,
        gift_message=details.gift_message,
        shipping_address=dict(details.shipping),
        billing_address=dict(details.billing),
        checkout_expires_at=payment_expiry(expiry_minutes),
    )
    order.lines.extend(lines)
    orders.add_note(order, note, actor=SHOPPER)
    session.add(order)
    session.flush()
    return order


def _line_items(order: Order) -> list[LineItem]:
    """What Stripe charges: the order's lines, and its delivery when it costs anything, so
    the page's total is always the order's (the webhook checks the two match)."""
    items = [
        LineItem(
            name=line.product_name,
            description=line.configuration_summary,
            unit_amount=line.unit_price,
            quantity=line.quantity,
        )
        for line in order.lines
    ]
    if order.shipping:
        items.append(
            LineItem(name=DELIVERY, description="", unit_amount=order.shipping, quantity=1)
        )
    return items


@dataclass(frozen=True)
class StripeCustomer:
    """An account (None for a guest), its Stripe customer, and the address Stripe holds."""

    user: User | None
    id: str | None = None
    email: str | None = None


def _stripe_customer(
    session: AnySession, user_id: int | None, *, replacing: str | None = None
) -> StripeCustomer:
    """The account and its Stripe Customer, made at its first checkout (idempotently: two
    checkouts racing get the same one); nothing for a guest. ``replacing``: the customer
    Stripe no longer has (deleted in its dashboard, say), for whom a new one is made, the same
    one however often this is asked. A customer made before the account's email changed is
    given the new one (else Stripe's page prefills the old address, and its receipts go
    there); should Stripe refuse it, the page is made all the same, and the next checkout
    tries again. Writes nothing: the caller keeps the customer on the account once Stripe
    has answered (:func:`_keep_customer`)."""
    user = session.get(User, user_id) if user_id is not None else None
    if user is None:
        return StripeCustomer(None)
    if user.stripe_customer_id and user.stripe_customer_id != replacing:
        held = user.stripe_customer_email
        if held != user.email:
            try:
                stripe_gateway.update_customer_email(user.stripe_customer_id, user.email)
                held = user.email
            except stripe_gateway.UnknownCustomerError:
                raise
            except PaymentProviderError as error:
                logger.warning(
                    "Stripe kept the old email of customer %s: %s", user.stripe_customer_id, error
                )
        return StripeCustomer(user, user.stripe_customer_id, held)
    name = user.display_name if user.display_name != user.email else ""
    email = user.email
    key = _customer_key(user.id, email, name) + (f"-replacing-{replacing}" if replacing else "")
    customer_id = stripe_gateway.create_customer(
        email=email, name=name, user_id=user.id, idempotency_key=key
    )
    return StripeCustomer(user, customer_id, email)


def _customer_key(user_id: int, email: str, name: str) -> str:
    """The idempotency key of an account's customer: the account, and what Stripe is sent.
    Stripe refuses a key sent again with other details for a day; a checkout whose customer
    Stripe made but the shop never kept (the worker killed, Stripe answering too late) left
    the key taken, so a shopper who then corrected their name or email was told the payment
    provider couldn't be reached on every checkout. Two checkouts racing with the same
    details still make one customer."""
    digest = hashlib.sha256(f"{email}\0{name}".encode()).hexdigest()[:16]
    return f"customer-user-{user_id}-{digest}"


def _keep_customer(customer: StripeCustomer) -> None:
    """The account's Stripe customer, and the address Stripe holds for it."""
    if customer.user is not None:
        customer.user.stripe_customer_id = customer.id
        customer.user.stripe_customer_email = customer.email


def _payment_page(
    session: AnySession, request: stripe_gateway.CheckoutRequest, user_id: int | None
) -> tuple[StripeCustomer, str, str]:
    """Stripe's payment page for the request, with the account's customer (kept on the
    account as soon as Stripe has made it). A customer Stripe no longer has is replaced once,
    and the page asked again under a key of its own (Stripe keeps the refusal under the
    first). Returns the customer, the page's id and URL."""
    try:
        customer = _stripe_customer(session, user_id)
        _keep_customer(customer)
        page = stripe_gateway.create_checkout_session(replace(request, customer_id=customer.id))
    except stripe_gateway.UnknownCustomerError:
        user = session.get(User, user_id) if user_id is not None else None
        gone = user.stripe_customer_id if user is not None else None
        if user is None or gone is None:
            raise
        logger.warning("Stripe has no customer %s of account %s: a new one is made", gone, user.id)
        customer = _stripe_customer(session, user_id, replacing=gone)
        _keep_customer(customer)
        page = stripe_gateway.create_checkout_session(
            replace(
                request,
                customer_id=customer.id,
                idempotency_key=f"{request.idempotency_key}-{customer.id}",
            )
        )
    return customer, *page


def begin_payment(
    session: AnySession,
    order: Order,
    urls: ReturnUrls,
    *,
    end_if_unavailable: bool = True,
    as_account: bool = True,
) -> str:
    """Ask Stripe for the order's payment page and return its URL.

    Call it with the order committed and no lock held: nothing is written until Stripe has
    answered. The request is the same every time for one order (same idempotency key, same
    expiry), so asking again after a crash finds the page Stripe already made. If Stripe
    refuses or can't be reached, the order is cancelled and the cart handed back
    (:class:`PaymentUnavailableError`), unless another request has given it a page meanwhile.
    Not with ``end_if_unavailable`` false, on the way back to a page (``resume_order``): a
    second submit meets Stripe's refusal of the key the first request's call still holds,
    and must not end the order that request is making a page for; it is left PENDING, for
    its maker, a later resume or the sweeper once its time is up. Not ``as_account``: the page
    is made with the order's address alone (``customer_email``), never its account's Stripe
    customer, whose details (her address as it is now) Stripe's page shows: a deposit paid
    from the quote's link by someone not signed in as the commission's account. That request
    being another, its idempotency key is one of its own (``checkout-<number>-by-email``).

    Stripe's answer is stored in one conditional UPDATE: only on an order still PENDING with
    no other page. An order that ended while Stripe was making the page (cancelled in another
    window, by staff, or by a second submit that Stripe turned away) keeps its ending; the
    page is closed at Stripe at once, kept on the order's timeline (should it be paid all the
    same, the webhook flags the payment for a refund) and the shopper is told
    (:class:`PaymentEndedError`): nobody is sent to pay for pieces the order no longer holds.
    """
    assert order.checkout_expires_at is not None
    by_email = not as_account and order.user_id is not None
    request = stripe_gateway.CheckoutRequest(
        order_number=order.number,
        currency=order.currency,
        line_items=_line_items(order),
        email=order.email,
        customer_id=None,
        success_url=urls.success,
        cancel_url=urls.cancel,
        expires_at=order.checkout_expires_at,
        idempotency_key=f"checkout-{order.number}" + ("-by-email" if by_email else ""),
    )
    order_id = order.id
    customer_of = None if by_email else order.user_id
    try:
        customer, checkout_session_id, url = _payment_page(session, request, customer_of)
    except PaymentProviderError as error:
        if end_if_unavailable:
            reason = f"Stripe failed: {error}"
            settle(session, order_id, PaymentPage.unavailable(None), reason=reason)
        raise PaymentUnavailableError() from error
    stored = session.execute(
        update(Order)
        .where(
            Order.id == order_id,
            Order.status == OrderStatus.PENDING,
            or_(
                Order.stripe_checkout_session_id.is_(None),
                Order.stripe_checkout_session_id == checkout_session_id,
            ),
        )
        .values(stripe_checkout_session_id=checkout_session_id)
        .execution_options(synchronize_session=False)
    )
    if stored.rowcount == 1:
        set_committed_value(order, "stripe_checkout_session_id", checkout_session_id)
        orders.add_note(order, "Sent to the payment page", actor=SHOPPER)
        session.flush()
        return url
    # Let go of what this transaction holds before asking Stripe again (on SQLite the
    # database's write lock, taken by the UPDATE; an account's new Stripe customer, written
    # with it), then write that customer again.
    session.rollback()
    closed = close_payment_page(checkout_session_id)
    _keep_customer(customer)
    ended = lock_order(session, order_id)
    if ended is not None:
        if ended.stripe_checkout_session_id is None:
            ended.stripe_checkout_session_id = checkout_session_id
        orders.add_note(
            ended,
            f"A payment page made as the order ended was closed ({closed.state.value})",
            actor=SYSTEM,
        )
        session.flush()
    raise PaymentEndedError()


class PageState(enum.StrEnum):
    """Where Stripe's payment page for an order stands."""

    NONE = "none"  # the order never got one (a crash, or Stripe failed)
    OPEN = "open"
    EXPIRED = "expired"
    PAID = "paid"
    AWAITING_BANK = "awaiting_bank"  # completed with a bank payment still on its way
    UNREACHABLE = "unreachable"
    # Stripe answered that it has no such page (made under other keys, or never made there):
    # whether it was paid can't be known from here.
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class PaymentPage:
    """Where one payment page stands: ``checkout_session_id`` is the page that was asked
    about (None: the order had none), so a decision taken on it can be checked, under the
    order's lock, against the page the order holds by then (:func:`settle`)."""

    state: PageState
    checkout_session_id: str | None = None
    url: str | None = None
    payment_intent: str | None = None
    # What a completed page took, as Stripe's API reports it.
    amount_total: int | None = None
    currency: str | None = None

    @classmethod
    def unavailable(cls, checkout_session_id: str | None) -> PaymentPage:
        return cls(PageState.UNREACHABLE, checkout_session_id)


def _page_from(checkout_session) -> PaymentPage:
    intent = checkout_session.payment_intent
    intent_id = intent if isinstance(intent, str) else getattr(intent, "id", None)
    asked_about = checkout_session.id
    if checkout_session.status == "open":
        return PaymentPage(PageState.OPEN, asked_about, url=checkout_session.url)
    if checkout_session.status == "complete":
        paid = checkout_session.payment_status in ("paid", "no_payment_required")
        state = PageState.PAID if paid else PageState.AWAITING_BANK
        return PaymentPage(
            state,
            asked_about,
            payment_intent=intent_id,
            amount_total=checkout_session.amount_total,
            currency=checkout_session.currency,
        )
    return PaymentPage(PageState.EXPIRED, asked_about)


def look_up_payment_page(checkout_session_id: str | None) -> PaymentPage:
    """Ask Stripe (no database work) where an order's payment page stands."""
    if not checkout_session_id:
        return PaymentPage(PageState.NONE)
    try:
        return _page_from(stripe_gateway.retrieve_checkout_session(checkout_session_id))
    except stripe_gateway.UnknownCheckoutSessionError:
        return PaymentPage(PageState.UNKNOWN, checkout_session_id)
    except PaymentProviderError:
        return PaymentPage.unavailable(checkout_session_id)


def close_payment_page(checkout_session_id: str | None) -> PaymentPage:
    """Make sure nobody can pay on an order's payment page any more (no database work).

    Expiring a page that was paid or had already expired fails at Stripe, so the page is
    then looked up to say which. UNREACHABLE means Stripe could not be asked; UNKNOWN, that
    it has no such page (nobody can pay on it through these keys, but it may have been paid
    under others).
    """
    if not checkout_session_id:
        return PaymentPage(PageState.NONE)
    try:
        return _page_from(stripe_gateway.expire_checkout_session(checkout_session_id))
    except stripe_gateway.UnknownCheckoutSessionError:
        return PaymentPage(PageState.UNKNOWN, checkout_session_id)
    except PaymentProviderError:
        return look_up_payment_page(checkout_session_id)


class Settled(enum.StrEnum):
    CANCELLED = "cancelled"
    PAID = "paid"
    PROCESSING = "processing"
    FLAGGED = "flagged"
    OPEN = "open"
    UNREACHABLE = "unreachable"
    # Stripe doesn't know the order's page: flagged for staff (UNKNOWN_PAGE_FLAG), not ended.
    UNKNOWN = "unknown"
    SKIPPED = "skipped"
    # The order got a payment page after the one asked about was looked up (another request
    # made it meanwhile): nothing was decided; ask Stripe about the order's page again.
    CHANGED = "changed"


def lock_order(session: AnySession, order_id: int, *, unless_held: bool = False) -> Order | None:
    """The order with its lines and timeline, locked for this transaction and read afresh
    (on SQLite too: :func:`take_turns_on_sqlite`).

    ``unless_held``: never wait for another transaction holding it (PostgreSQL's ``SKIP
    LOCKED``): None then, as for an order that doesn't exist. For a lock taken out of the
    order every path takes them in (an order after its commission): a lock that never waits
    can't be one half of a deadlock. SQLite has one writer, which this transaction is once
    it has written: there the order is always taken."""
    take_turns_on_sqlite(session, Order, order_id)
    return session.scalar(
        select(Order)
        .where(Order.id == order_id)
        .options(selectinload(Order.lines), selectinload(Order.events))
        .with_for_update(of=Order, skip_locked=unless_held)
        .execution_options(populate_existing=True)
    )


def settle(
    session: AnySession,
    order_id: int,
    page: PaymentPage,
    *,
    reason: str,
    actor: str = SYSTEM,
    actor_user_id: int | None = None,
    cancel_if_unreachable: bool = True,
    hold_also: Sequence[int] = (),
) -> Settled:
    """Apply what Stripe said about a PENDING order's payment page, under the order's lock.

    The order's state is checked again here, so a payment event that landed meanwhile always
    wins: a paid order is never cancelled. An order with no page, or an expired one, is
    cancelled (stock released, cart thawed). A page completed with a bank payment on its way
    makes the order PROCESSING; one that Stripe says was paid, with no event to say so, is
    flagged once for staff and left reserved. With Stripe unreachable, or not knowing the
    page, the order is cancelled only if ``cancel_if_unreachable`` (a late payment is then
    flagged by the webhook); otherwise a page Stripe doesn't know is flagged once for staff
    (UNKNOWN), for the shopper may have paid on it under other keys, and asking again would
    get the same answer.

    ``page`` must be the order's page: when the order holds another by now (a checkout
    request stored the page Stripe had just made for it), nothing is decided (CHANGED), so an
    order is never cancelled under a live payment page nobody closed.

    ``hold_also``: stock rows a new checkout will reserve in this same transaction (a payment
    replaced): taken with the order's own before any is released, all in id order, so the
    transaction never holds a row while waiting for a lower one another checkout holds.
    """
    order = lock_order(session, order_id)
    if order is None or order.status is not OrderStatus.PENDING:
        return Settled.SKIPPED
    if order.stripe_checkout_session_id != page.checkout_session_id:
        return Settled.CHANGED
    state = page.state
    if state is PageState.UNREACHABLE and not cancel_if_unreachable:
        return Settled.UNREACHABLE
    if state is PageState.UNKNOWN and not cancel_if_unreachable:
        if UNKNOWN_PAGE_FLAG not in order.attention_reason:
            flag(order, UNKNOWN_PAGE_FLAG, actor=actor)
        return Settled.UNKNOWN
    if state is PageState.OPEN:
        return Settled.OPEN
    if state is PageState.PAID:
        if page.payment_intent:
            # The order's own payment: a refund or a dispute of it finds the order.
            order.stripe_payment_intent_id = page.payment_intent
        if AWAITING_EVENT_FLAG not in order.attention_reason:
            flag(order, AWAITING_EVENT_FLAG, actor=actor)
        return Settled.FLAGGED
    if state is PageState.AWAITING_BANK:
        if page.payment_intent:
            order.stripe_payment_intent_id = page.payment_intent
        await_bank_payment(
            session,
            order,
            actor=actor,
            note="Stripe says the checkout completed; waiting for the bank payment",
        )
        return Settled.PROCESSING
    for inventory_id in sorted({row for row, _ in stock_taken(order)} | set(hold_also)):
        hold_row(session, Inventory, inventory_id)
    close_unpaid(
        session,
        order,
        OrderStatus.CANCELLED,
        actor=actor,
        note=reason,
        actor_user_id=actor_user_id,
    )
    return Settled.CANCELLED


def flag(
    order: Order,
    reason: str,
    *,
    actor: str,
    stripe_event_id: str | None = None,
    on_timeline: bool = True,
) -> None:
    """Ask staff to look at the order, and say why on its timeline (unless ``on_timeline`` is
    false: a flag worn only until the step after it, which takes it off). A reason the order
    already wears is not written twice."""
    order.needs_attention = True
    reason = orders.readable(reason)
    reasons = orders.flagged_for(order)
    if reason not in reasons:
        order.attention_reason = "\n".join([*reasons, reason])
    if on_timeline:
        orders.add_note(order, reason, actor=actor, stripe_event_id=stripe_event_id)


def holds_its_cart(order: Order) -> bool:
    """Whether the order's cart is frozen for it: while it is PENDING (a cart starts one
    checkout at a time). Once the order moves on, the cart is the shopper's again: emptied
    if the order took its lines, thawed if not."""
    return order.status is OrderStatus.PENDING and order.cart_id is not None


def close_unpaid(
    session: AnySession,
    order: Order,
    status: OrderStatus,
    *,
    actor: str,
    note: str,
    stripe_event_id: str | None = None,
    actor_user_id: int | None = None,
) -> None:
    """End an unpaid order (CANCELLED or PAYMENT_FAILED): release its stock and give the
    shopper their cart back exactly as it was. The one place this is done.

    Only a PENDING order's cart is frozen for it (:func:`holds_its_cart`): a bank payment
    that fails, or a cancelled order that was waiting for one, leaves alone a cart that has
    since moved on (emptied when the order went PROCESSING, perhaps frozen for the next).
    """
    holds_cart = holds_its_cart(order)
    orders.transition_to(
        order,
        status,
        actor=actor,
        note=note,
        stripe_event_id=stripe_event_id,
        actor_user_id=actor_user_id,
    )
    release_stock(session, order)
    if holds_cart:
        carts.thaw(session, order.cart_id)
    _clear_overdue_flag(order, actor=actor, stripe_event_id=stripe_event_id)
    _clear_unknown_page_flag(order, actor=actor, stripe_event_id=stripe_event_id)
    session.flush()


def await_bank_payment(
    session: AnySession,
    order: Order,
    *,
    actor: str,
    note: str,
    stripe_event_id: str | None = None,
) -> None:
    """The checkout is complete but the money is still on its way (a bank payment): the order
    keeps its stock, and the cart's lines, now the order's, leave the cart."""
    holds_cart = holds_its_cart(order)
    orders.transition_to(
        order, OrderStatus.PROCESSING, actor=actor, note=note, stripe_event_id=stripe_event_id
    )
    if holds_cart:
        carts.empty(session, order.cart_id)
    _clear_unknown_page_flag(order, actor=actor, stripe_event_id=stripe_event_id)
    session.flush()


def complete_payment(
    session: AnySession,
    order: Order,
    *,
    actor: str,
    note: str,
    stripe_event_id: str | None = None,
) -> None:
    """The money arrived: the order is PAID, its reserved units leave stock and its lines
    leave the cart (unless they left it already, when a bank payment made it PROCESSING: the
    cart may hold the shopper's next bag by now). A flag raised while waiting for this event
    is cleared, on the timeline."""
    holds_cart = holds_its_cart(order)
    orders.transition_to(
        order, OrderStatus.PAID, actor=actor, note=note, stripe_event_id=stripe_event_id
    )
    order.paid_at = utcnow()
    commit_stock(session, order)
    if holds_cart:
        carts.empty(session, order.cart_id)
    clear_flag(order, AWAITING_EVENT_FLAG, actor=actor, stripe_event_id=stripe_event_id)
    _clear_overdue_flag(order, actor=actor, stripe_event_id=stripe_event_id)
    _clear_unknown_page_flag(order, actor=actor, stripe_event_id=stripe_event_id)
    session.flush()


def clear_flag(
    order: Order,
    reason: str,
    *,
    actor: str,
    note: str = "The payment event arrived: the warning that it was missing is cleared",
    stripe_event_id: str | None = None,
    on_timeline: bool = True,
) -> None:
    """Take one reason off the order's flag (the flag goes with the last), with ``note`` on
    the timeline (unless ``on_timeline`` is false); nothing if the order was not flagged for
    it."""
    reasons = orders.flagged_for(order)
    if reason not in reasons:
        return
    remaining = [line for line in reasons if line != reason]
    order.attention_reason = "\n".join(remaining)
    order.needs_attention = bool(remaining)
    if on_timeline:
        orders.add_note(order, note, actor=actor, stripe_event_id=stripe_event_id)


def _clear_overdue_flag(order: Order, *, actor: str, stripe_event_id: str | None) -> None:
    clear_flag(
        order,
        BANK_PAYMENT_OVERDUE_FLAG,
        actor=actor,
        note="The bank payment's outcome is known: the warning that it was overdue is cleared",
        stripe_event_id=stripe_event_id,
    )


def _clear_unknown_page_flag(order: Order, *, actor: str, stripe_event_id: str | None) -> None:
    clear_flag(
        order,
        UNKNOWN_PAGE_FLAG,
        actor=actor,
        note="The order no longer waits on its payment page: the warning that Stripe didn't "
        "know the page is cleared",
        stripe_event_id=stripe_event_id,
    )


def order_for_payment_session(session: AnySession, checkout_session_id: str) -> Order | None:
    return session.scalar(
        select(Order)
        .where(Order.stripe_checkout_session_id == checkout_session_id)
        .options(selectinload(Order.lines), selectinload(Order.events))
    )


def other_details_than(order: Order, details: CheckoutDetails) -> bool:
    """Whether the checkout form sent again (a second tab) asks for other details than the
    order already being paid for: that order must not be paid thinking it goes where the
    second form said."""
    return (order.email, order.shipping_address, order.billing_address, order.gift_message) != (
        details.email,
        dict(details.shipping),
        dict(details.billing),
        details.gift_message,
    )


def pending_order_for_cart(session: AnySession, cart: Cart) -> Order | None:
    """The unpaid order a frozen cart is waiting on, if any."""
    return session.scalar(
        select(Order)
        .where(Order.cart_id == cart.id, Order.status == OrderStatus.PENDING)
        .order_by(Order.id.desc())
        .limit(1)
    )


# How many times a shopper's resume or cancel looks at the order's payment page again when
# another request gave the order a page as it was deciding (once is all a race can take).
ROUNDS = 3


class Resumed(enum.StrEnum):
    TO_PAYMENT = "to_payment"  # ``url`` is the payment page
    FINISHED = "finished"  # paid, or awaiting a bank payment: show the order
    RELEASED = "released"  # the page had expired (or never existed): the cart is back
    UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class Resumption:
    outcome: Resumed
    url: str | None = None
    order: Order | None = None


def resume_payment(session: AnySession, cart: Cart, urls: ReturnUrls) -> Resumption:
    """Back to the payment page of the order a frozen cart is waiting on.

    Commits nothing itself, but calls Stripe: the caller must hold no lock (commit first).
    An order whose page was never made (a crash, or a page the shopper never saw) asks Stripe
    again with the same request; an expired page releases the order and thaws the cart.
    """
    order = pending_order_for_cart(session, cart)
    if order is None and not carts.thaw(session, cart.id):
        # A checkout froze the cart again meanwhile: its order is the one to go back to.
        order = pending_order_for_cart(session, cart)
    if order is None:
        # Frozen with nothing to pay for (the order already ended): nothing holds it any more.
        return Resumption(Resumed.RELEASED)
    return resume_order(session, order, urls)


def resume_order(
    session: AnySession, order: Order, urls: ReturnUrls, *, as_account: bool = True
) -> Resumption:
    """Back to a PENDING order's payment page: the open one, or the same request asked of
    Stripe again when the page was never made (``as_account``: as :func:`begin_payment`);
    an expired page ends the order (RELEASED).
    Calls Stripe, so the caller must hold no lock and have nothing left to commit (commit
    first): should another request give the order a page meanwhile, the order's lock is let
    go (a rollback) and that page is looked up instead."""
    for _ in range(ROUNDS):
        resumption = _resume_once(session, order, urls, as_account=as_account)
        if resumption is not None:
            return resumption
        session.rollback()
    return Resumption(Resumed.UNREACHABLE, order=order)


def _resume_once(
    session: AnySession, order: Order, urls: ReturnUrls, *, as_account: bool
) -> Resumption | None:
    """One look at the order's page; None when it changed before anything was decided."""
    page = look_up_payment_page(order.stripe_checkout_session_id)
    if page.state is PageState.OPEN and page.url:
        return Resumption(Resumed.TO_PAYMENT, url=page.url, order=order)
    if page.state in (PageState.UNREACHABLE, PageState.UNKNOWN):
        # A page Stripe doesn't know is not ended here (it may have been paid under other
        # keys): the sweeper flags it for staff once its time is up.
        return Resumption(Resumed.UNREACHABLE, order=order)
    if page.state is PageState.PAID:
        # The payment event is on its way; the order page will show it.
        return Resumption(Resumed.FINISHED, order=order)
    if page.state is PageState.NONE and _time_left(order) > timedelta(minutes=MIN_EXPIRY_MINUTES):
        try:
            url = begin_payment(
                session, order, urls, end_if_unavailable=False, as_account=as_account
            )
        except PaymentEndedError:
            return Resumption(Resumed.RELEASED, order=order)
        except PaymentUnavailableError:
            return Resumption(Resumed.UNREACHABLE, order=order)
        return Resumption(Resumed.TO_PAYMENT, url=url, order=order)
    reason = (
        "The payment page was never opened, and its time ran out"
        if page.state is PageState.NONE
        else "The payment page had expired"
    )
    settled = settle(session, order.id, page, reason=reason, actor=SHOPPER)
    if settled is Settled.CHANGED:
        return None
    if settled is Settled.PROCESSING:
        return Resumption(Resumed.FINISHED, order=order)
    return Resumption(Resumed.RELEASED, order=order)


def _time_left(order: Order) -> timedelta:
    if order.checkout_expires_at is None:
        return timedelta(0)
    return order.checkout_expires_at - utcnow()


class Cancelled(enum.StrEnum):
    CANCELLED = "cancelled"
    TOO_LATE = "too_late"  # the payment went through first: show the order instead
    NOTHING = "nothing"  # no payment in progress
    # Stripe would not close the page, which it says is still open: nothing changed.
    NOT_NOW = "not_now"


@dataclass(frozen=True)
class Cancellation:
    outcome: Cancelled
    order: Order | None = None


def cancel_payment(session: AnySession, cart: Cart, *, to_check_out: bool = False) -> Cancellation:
    """The shopper gives up paying: close Stripe's page, cancel the order, thaw the cart.

    Calls Stripe, so the caller must hold no lock and have nothing left to commit (commit
    first). If the payment landed first, nothing is cancelled. If Stripe can't be reached,
    nothing is cancelled either (``NOT_NOW``): the page may still be open, and its pieces put
    back on sale could be sold to someone else and then paid for on it. Should the order get
    its page while this closes the one it had (none, when the cancel comes as the checkout is
    still asking Stripe for it), the order's lock is let go (a rollback) and the new page is
    closed in turn.

    ``to_check_out``: the bag is checked out again in this same transaction (a payment
    replaced with other details): the stock rows its lines take are held with the order's,
    in id order (``settle``'s ``hold_also``).
    """
    settled = Settled.CHANGED
    hold_also = carts.stock_row_ids(session, cart.id) if to_check_out else []
    for _ in range(ROUNDS):
        order = pending_order_for_cart(session, cart)
        if order is None:
            if cart.frozen_at is None:
                return Cancellation(Cancelled.NOTHING)
            if carts.thaw(session, cart.id):
                return Cancellation(Cancelled.CANCELLED)
            continue  # a checkout froze the cart again meanwhile: cancel its order

        page = close_payment_page(order.stripe_checkout_session_id)
        if page.state is PageState.PAID:
            return Cancellation(Cancelled.TOO_LATE, order)
        if page.state is PageState.UNREACHABLE:
            # The page may still be open: the payment stays as it was, its pieces reserved,
            # rather than sell them again under a page the shopper can still pay on (and,
            # replacing it, a new page could not be asked of a Stripe just found unreachable).
            return Cancellation(Cancelled.NOT_NOW, order)
        settled = settle(
            session,
            order.id,
            page,
            reason="The shopper cancelled the payment",
            actor=SHOPPER,
            hold_also=hold_also,
        )
        if settled is not Settled.CHANGED:
            break
        session.rollback()
    if order is None:
        return Cancellation(Cancelled.NOTHING)
    if settled is Settled.CANCELLED:
        return Cancellation(Cancelled.CANCELLED, order)
    if settled is Settled.SKIPPED and order.status is OrderStatus.CANCELLED:
        return Cancellation(Cancelled.CANCELLED, order)
    if settled is Settled.OPEN:
        # Closing it failed, and Stripe says the shopper can still pay on it: the order and
        # its reservation stay, rather than sell the pieces again under a live page.
        return Cancellation(Cancelled.NOT_NOW, order)
    return Cancellation(Cancelled.TOO_LATE, order)


def stale_order_ids(
    session: AnySession,
    *,
    expired_before: datetime,
    after: int | None = None,
    limit: int = 200,
) -> list[int]:
    """PENDING orders whose payment page expired before ``expired_before``, oldest first;
    ``after``: only those after that order (the last of the previous batch).

    Orders already flagged for staff are left to them (and to the payment event that will
    clear the flag), so Stripe is not asked about them again on every run.
    """
    return _unflagged_ids(session, OrderStatus.PENDING, expired_before, after, limit)


def overdue_bank_payment_ids(
    session: AnySession,
    *,
    started_before: datetime,
    after: int | None = None,
    limit: int = 200,
) -> list[int]:
    """PROCESSING orders (a bank payment on its way) whose checkout started before
    ``started_before`` and that staff have not been asked about yet, oldest first; ``after``:
    only those after that order (the last of the previous batch)."""
    return _unflagged_ids(session, OrderStatus.PROCESSING, started_before, after, limit)


def _unflagged_ids(
    session: AnySession,
    status: OrderStatus,
    expired_before: datetime,
    after: int | None,
    limit: int,
) -> list[int]:
    """Orders in ``status`` whose payment page expired before ``expired_before`` and that
    are not flagged for staff, oldest first (ties by id): what the sweeper looks at.

    The sweeper reads them a batch at a time, each batch starting after the last order of
    the one before (``after``): orders left as they were (Stripe unreachable, or one that
    failed) are passed over for the rest of the run, so however many there are, they never
    hide a newer order from it.
    """
    query = (
        select(Order.id)
        .where(
            Order.status == status,
            Order.checkout_expires_at < expired_before,
            Order.needs_attention.is_(False),
        )
        .order_by(Order.checkout_expires_at, Order.id)
        .limit(limit)
    )
    if after is not None:
        last = select(Order.checkout_expires_at).where(Order.id == after).scalar_subquery()
        query = query.where(
            or_(
                Order.checkout_expires_at > last,
                and_(Order.checkout_expires_at == last, Order.id > after),
            )
        )
    return list(session.scalars(query))


def flag_overdue_bank_payment(session: AnySession, order_id: int) -> bool:
    """Ask staff about a bank payment that should have arrived (or failed) by now: its event
    may have been lost, and the order holds its pieces until someone decides. Once per order;
    whether it was flagged now. Stripe is not asked: staff look, then cancel or wait."""
    order = lock_order(session, order_id)
    if order is None or order.status is not OrderStatus.PROCESSING or order.needs_attention:
        return False
    flag(order, BANK_PAYMENT_OVERDUE_FLAG, actor=SYSTEM)
    return True


def sweep_stale_order(session: AnySession, order_id: int) -> tuple[Settled, PaymentPage]:
    """The safety net for a lost ``checkout.session.expired`` or a crash before Stripe was
    asked: close the order's payment page at Stripe, then settle it (see :func:`settle`).
    Returns the outcome and the page as Stripe reported it: one paid whose event never came
    is FLAGGED, and the caller applies the payment (``payments.paid_without_its_event``). A
    page Stripe doesn't know (the shop's keys changed to another account, say) is flagged for
    staff, not cancelled (UNKNOWN): it may have been paid under the account it was made under,
    and it is not asked about again.

    Several hosts may sweep at once: each decision is taken again under the order's lock.
    """
    checkout_session_id = session.scalar(
        select(Order.stripe_checkout_session_id).where(
            Order.id == order_id, Order.status == OrderStatus.PENDING
        )
    )
    page = close_payment_page(checkout_session_id)
    settled = settle(
        session,
        order_id,
        page,
        reason="The payment page expired without a payment",
        cancel_if_unreachable=False,
    )
    if settled is Settled.CANCELLED:
        # As Stripe's own expiry event tells the shopper (``payments.session_expired``): the
        # late event finds the order cancelled and tells nobody. It was PENDING, so its bag,
        # if it had one, was thawed with the pieces in it.
        cancelled = session.get(Order, order_id)
        assert cancelled is not None
        orders.email_cancelled(session, cancelled, back_in_bag=cancelled.cart_id is not None)
    return settled, page
