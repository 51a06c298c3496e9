"""Checkout: the shopper's details, then off to Stripe's payment page and back.

The order and its stock reservation are committed before Stripe is asked for a payment page,
so a crash in between leaves a PENDING order that the expiry sweeper can release; if Stripe
fails, the order is cancelled at once and the bag handed back. Only the webhook marks an
order paid.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms.fields.choices import SelectChoice

from elysium.account.forms import AddressForm
from elysium.cart.routes import current_cart
from elysium.checkout.forms import NEW_ADDRESS, CheckoutForm, address_form
from elysium.extensions import db
from elysium.htmx import htmx_redirect, is_htmx, personal_pages
from elysium.integrations import stripe_gateway
from elysium.integrations.stripe_gateway import LineItem, PaymentProviderError
from elysium.models.orders import Order, OrderStatus
from elysium.seo import absolute_url
from elysium.services import addresses
from elysium.services import cart as bags
from elysium.services import checkout as checkouts
from elysium.services.addresses import AddressError

bp = Blueprint("checkout", __name__, url_prefix="/checkout")

PROVIDER_DOWN = "We couldn't reach our payment provider — your bag is saved, please try again."
# Stripe fills in the session id when it sends the shopper back.
SESSION_ID_QUERY = "?session_id={CHECKOUT_SESSION_ID}"
CANCELLED = "Checkout cancelled — your bag is just as you left it."


personal_pages(bp)


def _saved_addresses() -> list:
    if not current_user.is_authenticated:
        return []
    return addresses.addresses_of(db.session, current_user)


def _forms() -> tuple[CheckoutForm, AddressForm, AddressForm]:
    form = CheckoutForm()
    saved = _saved_addresses()
    form.shipping_choice.choices = [
        SelectChoice(str(address.id), f"{address.full_name}, {address.line1}, {address.city}")
        for address in saved
    ] + [SelectChoice(NEW_ADDRESS, "A new address")]
    if request.method == "GET":
        if current_user.is_authenticated:
            form.email.data = current_user.email
        default = next((a for a in saved if a.is_default_shipping), saved[0] if saved else None)
        form.shipping_choice.data = str(default.id) if default else NEW_ADDRESS
    return form, address_form("shipping"), address_form("billing")


def _attach(form: FlaskForm, errors: Mapping[str, str]) -> None:
    for name, message in errors.items():
        field = form._fields.get(name) if name else None
        if field is None:
            form.form_errors.append(message)
        elif not field.errors:
            field.errors = [*field.errors, message]


def _address(form: AddressForm) -> dict[str, str] | None:
    try:
        return addresses.as_plain(addresses.clean(form.address()))
    except AddressError as error:
        _attach(form, error.errors)
        return None


def _shipping_snapshot(form: CheckoutForm, shipping: AddressForm) -> dict[str, str] | None:
    choice = form.shipping_choice.data or NEW_ADDRESS
    if choice == NEW_ADDRESS or not current_user.is_authenticated:
        return _address(shipping)
    saved = (
        addresses.address_of(db.session, current_user, int(choice)) if choice.isdigit() else None
    )
    if saved is None:
        form.shipping_choice.errors = ["Choose one of your addresses, or add a new one."]
        return None
    return addresses.as_snapshot(saved)


def _page(
    bag: bags.BagView,
    forms: tuple[CheckoutForm, AddressForm, AddressForm],
    status: int = 200,
    *,
    problem: str | None = None,
    pending: Order | None = None,
) -> Response:
    form, shipping, billing = forms
    html = render_template(
        "checkout/_checkout.html" if is_htmx() else "checkout/show.html",
        bag=bag,
        totals=checkouts.totals(
            bag, signature_above=current_app.config["SIGNATURE_REQUIRED_ABOVE"]
        ),
        form=form,
        shipping=shipping,
        billing=billing,
        saved_addresses=_saved_addresses(),
        payments_configured=stripe_gateway.payments_configured(),
        problem=problem,
        pending=pending,
    )
    return make_response(html, status)


def _leave_for(url: str) -> Response:
    """Off to Stripe: 303 for a form, ``HX-Redirect`` for htmx (which never gets a 3xx)."""
    return htmx_redirect(url) if is_htmx() else redirect(url, 303)


@bp.get("")
def show() -> Response:
    cart = current_cart()
    bag = bags.view(db.session, cart)
    if bag.is_empty or bag.checkout_blocked:
        db.session.commit()
        return redirect(url_for("cart.show"), 303)
    pending = (
        checkouts.pending_order_for_cart(db.session, cart)
        if cart is not None and cart.frozen_at is not None
        else None
    )
    response = _page(bag, _forms(), pending=pending)
    db.session.commit()
    return response


def _line_items(order: Order) -> list[LineItem]:
    return [
        LineItem(
            name=line.product_name,
            description=line.configuration_summary,
            unit_amount=line.unit_price,
            quantity=line.quantity,
        )
        for line in order.lines
    ]


def _resume(cart: Any) -> Response | None:
    """A second submit while the bag is frozen: back to the payment page already open."""
    order = checkouts.pending_order_for_cart(db.session, cart)
    if order is None or not order.stripe_checkout_session_id:
        return None
    try:
        session = stripe_gateway.retrieve_checkout_session(order.stripe_checkout_session_id)
    except PaymentProviderError:
        return None
    if session.status != "open" or not session.url:
        return None
    return _leave_for(session.url)


@bp.post("")
def start() -> Response:
    cart = current_cart()
    bag = bags.view(db.session, cart)
    if bag.is_empty:
        db.session.commit()
        return _leave_for(url_for("cart.show"))
    forms = _forms()
    if bag.checkout_blocked:
        # Typically another shopper has just reserved the last piece: say which one.
        problems = " ".join(
            f"{item.product.name}: {item.problem}" for item in bag.lines if item.blocking
        )
        response = _page(bag, forms, 409, problem=problems)
        db.session.commit()
        return response
    form, shipping_form, billing_form = forms
    if not stripe_gateway.payments_configured():
        return _page(bag, forms, 503, problem="Payments are not configured.")
    if cart.frozen_at is not None:
        resumed = _resume(cart)
        if resumed is not None:
            return resumed
        return _page(bag, forms, 409, problem=bags.FROZEN_MESSAGE)
    valid = form.validate()
    shipping = _shipping_snapshot(form, shipping_form)
    billing = shipping if form.billing_same.data else _address(billing_form)
    if not valid or shipping is None or billing is None:
        db.session.rollback()
        bag = bags.view(db.session, current_cart())
        return _page(bag, forms, 422, problem="Please correct the details marked below.")

    try:
        order = checkouts.start_checkout(
            db.session,
            cart,
            email=form.email.data,
            shipping=shipping,
            billing=billing,
            gift_message=form.gift_message.data or "",
            user_id=current_user.id if current_user.is_authenticated else None,
        )
        db.session.commit()
    except checkouts.CheckoutError as error:
        db.session.rollback()
        bag = bags.view(db.session, current_cart())
        status = 409 if isinstance(error, checkouts.SoldOutDuringCheckoutError) else 422
        return _page(bag, forms, status, problem=error.message)
    except bags.FrozenCartError as error:
        db.session.rollback()
        resumed = _resume(current_cart())
        if resumed is not None:
            return resumed
        bag = bags.view(db.session, current_cart())
        return _page(bag, forms, 409, problem=error.message)

    expires_at = checkouts.payment_expiry(current_app.config["CHECKOUT_EXPIRY_MINUTES"])
    try:
        session_id, url = stripe_gateway.create_checkout_session(
            order,
            _line_items(order),
            success_url=absolute_url("checkout.success") + SESSION_ID_QUERY,
            cancel_url=absolute_url("checkout.cancel") + SESSION_ID_QUERY,
            expires_at=expires_at,
            idempotency_key=f"checkout-{order.number}",
        )
    except PaymentProviderError as error:
        current_app.logger.warning("Stripe failed for order %s: %s", order.number, error)
        checkouts.abandon_checkout(
            db.session, order, f"The payment provider failed: {error}", actor="system"
        )
        db.session.commit()
        bag = bags.view(db.session, current_cart())
        return _page(bag, forms, 503, problem=PROVIDER_DOWN)
    checkouts.attach_payment_session(
        db.session, order, stripe_session_id=session_id, expires_at=expires_at
    )
    db.session.commit()
    return _leave_for(url)


def _order_from_query(*, lock: bool = False) -> Order:
    session_id = request.args.get("session_id", "")
    if not session_id or len(session_id) > 255:
        abort(404)
    order = checkouts.order_for_payment_session(db.session, session_id, lock=lock)
    return order or abort(404)


@bp.get("/success")
def success() -> Response:
    """Shows the order; never marks it paid (only the webhook does)."""
    order = _order_from_query()
    template = "checkout/_status.html" if is_htmx() else "checkout/success.html"
    response = make_response(render_template(template, order=order, S=OrderStatus))
    db.session.commit()
    return response


def _completed_at_stripe(session_id: str) -> bool:
    """Whether the shopper finished paying after all (the webhook may not have landed)."""
    try:
        return stripe_gateway.retrieve_checkout_session(session_id).status == "complete"
    except PaymentProviderError:
        return False


@bp.get("/cancel")
def cancel() -> Response:
    order = _order_from_query()
    session_id = order.stripe_checkout_session_id or ""
    to_success = redirect(url_for("checkout.success", session_id=session_id), 303)
    if order.status is OrderStatus.PENDING:
        try:
            stripe_gateway.expire_checkout_session(session_id)
        except PaymentProviderError as error:
            # Already expired (fine) or completed (then it is not ours to cancel); if Stripe
            # is unreachable, cancel here anyway: a late payment is flagged for staff.
            current_app.logger.info("Could not expire %s: %s", order.number, error)
            if _completed_at_stripe(session_id):
                return to_success
    order = _order_from_query(lock=True)
    checkouts.abandon_checkout(db.session, order, "The shopper cancelled at the payment page")
    db.session.commit()
    if order.status is not OrderStatus.CANCELLED:
        # Paid (or paying) after all: show where it stands rather than claim it was cancelled.
        return to_success
    flash(CANCELLED)
    return redirect(url_for("cart.show"), 303)
