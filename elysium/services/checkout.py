"""Starting, paying for and abandoning a checkout: the order, its stock and the frozen bag.

The order (PENDING) and its reservation are made in the caller's transaction before Stripe is
asked for a payment page; if Stripe fails, :func:`abandon_checkout` undoes both. Services
never commit: the caller does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from elysium.integrations import stripe_gateway
from elysium.models.cart import Cart
from elysium.models.orders import Order, OrderLine, OrderStatus
from elysium.models.types import utcnow
from elysium.services import cart as bags
from elysium.services import inventory, orders
from elysium.services.inventory import StockStatus

ACTOR = "shopper"
# Stripe refuses an expiry under 30 minutes (or over 24 hours) from when it creates the session;
# the margin covers the time the request takes to get there.
MIN_EXPIRY_MINUTES = 30
MAX_EXPIRY_MINUTES = 60
EXPIRY_MARGIN = timedelta(minutes=1)
SHIPPING_NOTE = "Complimentary insured delivery"


class CheckoutError(Exception):
    """The bag can't be checked out as it is; ``message`` is for the shopper."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class SoldOutDuringCheckoutError(CheckoutError):
    """Another shopper reserved the last unit first; the caller must roll back."""

    def __init__(self, product_name: str):
        super().__init__(
            f"{product_name} has just sold out — someone else took the last one. "
            "Your bag is unchanged; please review it."
        )
        self.product_name = product_name


@dataclass(frozen=True)
class Totals:
    subtotal: int
    shipping: int
    total: int
    signature_required: bool = False


def shipping_for(subtotal: int) -> int:
    """Insured delivery is complimentary for now (the order records it as 0)."""
    return 0


def totals(bag: bags.BagView, *, signature_above: int | None = None) -> Totals:
    """What the order will cost; ``signature_above`` is the total over which the insured
    courier needs a signature."""
    shipping = shipping_for(bag.subtotal)
    total = bag.subtotal + shipping
    return Totals(
        bag.subtotal, shipping, total, signature_above is not None and total > signature_above
    )


def payment_expiry(minutes: int) -> datetime:
    """When the payment page (and the stock held for it) expires: ``minutes`` from now."""
    minutes = min(max(minutes, MIN_EXPIRY_MINUTES), MAX_EXPIRY_MINUTES)
    return utcnow() + timedelta(minutes=minutes) + EXPIRY_MARGIN


def _freeze(session: Any, cart: Cart) -> None:
    """Freeze the bag in one conditional UPDATE, so two submits can't both start a checkout."""
    frozen = session.execute(
        update(Cart)
        .where(Cart.id == cart.id, Cart.frozen_at.is_(None))
        .values(frozen_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if frozen.rowcount != 1:
        raise bags.FrozenCartError()
    session.expire(cart, ["frozen_at"])


def start_checkout(
    session: Any,
    cart: Cart | None,
    *,
    email: str,
    shipping: dict[str, str],
    billing: dict[str, str],
    gift_message: str = "",
    user_id: int | None = None,
) -> Order:
    """Create the PENDING order for this bag, reserve its stock and freeze the bag.

    Raises :class:`CheckoutError` (empty or blocked bag), :class:`bags.FrozenCartError`
    (already being paid for) or :class:`SoldOutDuringCheckoutError` (the caller rolls back).
    """
    if cart is None:
        raise CheckoutError("Your bag is empty.")
    if cart.frozen_at is not None:
        raise bags.FrozenCartError()
    bag = bags.view(session, cart)
    if bag.is_empty:
        raise CheckoutError("Your bag is empty.")
    if bag.checkout_blocked:
        raise CheckoutError("Some pieces in your bag need your attention before checkout.")
    _freeze(session, cart)
    amounts = totals(bag)
    order = Order(
        number=orders.new_order_number(session),
        user_id=user_id,
        cart_id=cart.id,
        email=email,
        status=OrderStatus.PENDING,
        currency=bag.currency,
        subtotal=amounts.subtotal,
        shipping=amounts.shipping,
        total=amounts.total,
        gift_message=gift_message,
        shipping_address=dict(shipping),
        billing_address=dict(billing),
    )
    for item in bag.lines:
        product = item.product
        row = next(
            (row for row in product.inventory if row.variant_key == item.line.variant_key), None
        )
        order.lines.append(
            OrderLine(
                product_id=product.id,
                inventory_id=row.id if row else None,
                product_name=product.name,
                product_slug=product.slug,
                variant_key=item.line.variant_key,
                configuration=dict(item.line.configuration),
                configuration_summary=item.summary,
                made_to_order=item.availability.status is StockStatus.MADE_TO_ORDER,
                unit_price=item.unit_price,
                quantity=item.line.quantity,
            )
        )
    orders.add_note(order, f"Checkout started. {SHIPPING_NOTE}.", actor=ACTOR)
    session.add(order)
    session.flush()
    for line in order.lines:
        if line.made_to_order or line.inventory_id is None:
            continue
        try:
            inventory.reserve(session, line.inventory_id, line.quantity, order_id=order.id)
        except inventory.OutOfStockError as error:
            raise SoldOutDuringCheckoutError(line.product_name) from error
    return order


def attach_payment_session(
    session: Any, order: Order, *, stripe_session_id: str, expires_at: datetime
) -> None:
    order.stripe_checkout_session_id = stripe_session_id
    order.checkout_expires_at = expires_at
    orders.add_note(order, "Sent to the payment page", actor=ACTOR)
    session.flush()


def abandon_checkout(session: Any, order: Order, reason: str, *, actor: str = ACTOR) -> bool:
    """Cancel an unpaid order, release its stock and give the shopper their bag back.

    False (and nothing changed) if the order is no longer pending — a payment that landed
    first is never undone here.
    """
    if order.status is not OrderStatus.PENDING:
        return False
    orders.transition_to(order, OrderStatus.CANCELLED, actor=actor, note=reason)
    for line in order.lines:
        if line.inventory_id is not None and not line.made_to_order:
            inventory.release(session, line.inventory_id, line.quantity, order_id=order.id)
    if order.cart_id is not None:
        session.execute(update(Cart).where(Cart.id == order.cart_id).values(frozen_at=None))
    session.flush()
    return True


def order_for_payment_session(session: Any, stripe_session_id: str, *, lock: bool = False):
    statement = select(Order).where(Order.stripe_checkout_session_id == stripe_session_id)
    if lock:
        statement = statement.with_for_update().execution_options(populate_existing=True)
    return session.scalar(statement)


def pending_order_for_cart(session: Any, cart: Cart) -> Order | None:
    """The unpaid order a frozen bag is waiting on, if any."""
    return session.scalar(
        select(Order)
        .where(Order.cart_id == cart.id, Order.status == OrderStatus.PENDING)
        .order_by(Order.id.desc())
        .limit(1)
    )


def stale_order_ids(session: Any, *, expired_before: datetime, limit: int = 200) -> list[int]:
    """PENDING orders whose payment page expired before ``expired_before``, oldest first."""
    return list(
        session.scalars(
            select(Order.id)
            .where(
                Order.status == OrderStatus.PENDING,
                Order.checkout_expires_at < expired_before,
            )
            .order_by(Order.checkout_expires_at)
            .limit(limit)
        )
    )


def settle_stale_order(session: Any, order_id: int) -> str:
    """The safety net for a lost ``checkout.session.expired``: ask Stripe, and cancel the
    order (releasing its stock) only if it really was not paid.

    The order row is locked (another host running the sweeper skips it), and
    :func:`abandon_checkout` only ever cancels a PENDING order. Returns what happened:
    ``cancelled``, ``paid`` (Stripe took the money; the order is flagged for staff),
    ``unreachable`` (Stripe did not answer; try again next run) or ``skipped``.
    """
    order = session.scalar(
        select(Order)
        .where(Order.id == order_id, Order.status == OrderStatus.PENDING)
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    )
    if order is None:
        return "skipped"
    if order.stripe_checkout_session_id:
        try:
            stripe_session = stripe_gateway.retrieve_checkout_session(
                order.stripe_checkout_session_id
            )
            if stripe_session.status == "open":
                stripe_session = stripe_gateway.expire_checkout_session(stripe_session.id)
        except stripe_gateway.PaymentProviderError:
            return "unreachable"
        if stripe_session.status == "complete":
            if not order.needs_attention:
                order.needs_attention = True
                order.attention_reason = "Stripe says this checkout completed, but no payment "
                order.attention_reason += "event arrived: check the payment and the webhook"
                orders.add_note(order, order.attention_reason, actor="system")
            return "paid"
    abandon_checkout(session, order, "The payment page expired without a payment", actor="system")
    return "cancelled"
