"""Checkout: the shopper's details, then off to Stripe's payment page and back.

Every rule lives in :mod:`elysium.services.checkout`: these views parse, call it, commit and
answer. The order and its reservation are committed before Stripe is asked for a payment
page (so nothing is locked while Stripe answers, and a crash leaves an order the sweeper can
release). Only the webhook marks an order paid.
"""

from __future__ import annotations

from collections.abc import Mapping

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

from elysium.checkout.forms import NEW_ADDRESS, CheckoutForm, address_form
from elysium.extensions import db
from elysium.htmx import htmx_redirect, is_htmx, personal_pages
from elysium.ids import as_id
from elysium.integrations import stripe_gateway
from elysium.models.orders import Order, OrderStatus
from elysium.services import addresses
from elysium.services import cart as carts
from elysium.services import checkout as checkouts
from elysium.services.addresses import AddressError
from elysium.urls import absolute_url
from elysium.web.cart import current_cart
from elysium.web.forms import AddressForm
from elysium.web.quotes import paying_deposit

bp = Blueprint("checkout", __name__, url_prefix="/checkout")

# Stripe fills in the session id when it sends the shopper back.
SESSION_ID_QUERY = "?session_id={CHECKOUT_SESSION_ID}"
CANCELLED = "Payment cancelled — your bag is just as you left it."
RELEASED = "Your payment page had expired, so your bag is yours to change again."
NOTHING_TO_CANCEL = "There is no payment in progress."
UNREACHABLE = "We couldn't reach our payment provider — please try again in a moment."
BAG_MOVED = "Your bag changed as you continued to payment: please look over it."
OTHER_DETAILS = (
    "Your bag is already being paid for in another window (order {number}), with other "
    "details than these, which have not been used. To pay with the details below instead, "
    "choose “Cancel that payment and use these details”."
)
OTHER_BAG = (
    "Your bag is already being paid for in another window (order {number}), and not as this "
    "page showed it: {changes} To pay for it as it is now, with the details below, choose "
    "“Cancel that payment and use these details”."
)
ALSO_CHANGED = "Also, while you were checking out, your order changed: {changes}"

Forms = tuple[CheckoutForm, AddressForm, AddressForm]

personal_pages(bp)


def _saved_addresses() -> list:
    if not current_user.is_authenticated:
        return []
    return addresses.addresses_of(db.session, current_user)


def _forms() -> Forms:
    form = CheckoutForm()
    saved = _saved_addresses()
    form.shipping_choice.choices = [
        SelectChoice(str(address.id), f"{address.full_name}, {address.line1}, {address.city}")
        for address in saved
    ] + [SelectChoice(NEW_ADDRESS, "A new address")]
    billing_form = address_form("billing")
    if request.method == "GET":
        if current_user.is_authenticated:
            form.email.data = current_user.email
        default = next((a for a in saved if a.is_default_shipping), saved[0] if saved else None)
        form.shipping_choice.data = str(default.id) if default else NEW_ADDRESS
        # The account's default billing address, when it isn't where the order goes: filled
        # in as the billing address (it was never used: billing was the delivery address).
        billing = next((a for a in saved if a.is_default_billing), None)
        if billing is not None and billing is not default:
            form.billing_same.data = False
            billing_form = address_form("billing", obj=billing)
    return form, address_form("shipping"), billing_form


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


# The new address's fields a shopper types (the country is always chosen).
TYPED_ADDRESS_FIELDS = ("full_name", "company", "line1", "line2", "city", "region", "postcode")


def _shipping_snapshot(form: CheckoutForm, shipping: AddressForm) -> dict[str, str] | None:
    choice = form.shipping_choice.data or NEW_ADDRESS
    if choice == NEW_ADDRESS or not current_user.is_authenticated:
        return _address(shipping)
    if any((shipping[name].data or "").strip() for name in TYPED_ADDRESS_FIELDS):
        # A saved address chosen and another typed below: which one is meant is not ours to
        # guess (the typed one, a gift's, went unnoticed to the saved address).
        form.shipping_choice.errors = [
            "You chose a saved address and typed another one below: choose “A new address” "
            "to deliver to the one you typed, or clear it."
        ]
        return None
    address_id = as_id(choice)
    saved = (
        addresses.address_of(db.session, current_user, address_id)
        if address_id is not None
        else None
    )
    if saved is None:
        form.shipping_choice.errors = ["Choose one of your addresses, or add a new one."]
        return None
    try:
        return addresses.deliverable_snapshot(saved)
    except AddressError as error:
        problems = " ".join(error.errors.values())
        form.shipping_choice.errors = [
            f"We can't deliver to this address as it is saved ({problems}): edit it in your "
            "address book, or add a new one."
        ]
        return None


def _details(forms: Forms) -> checkouts.CheckoutDetails | None:
    """The checkout details if every field is valid (errors are attached to the forms)."""
    form, shipping_form, billing_form = forms
    valid = form.validate()
    shipping = _shipping_snapshot(form, shipping_form)
    billing = shipping if form.billing_same.data else _address(billing_form)
    if not valid or shipping is None or billing is None:
        return None
    return checkouts.CheckoutDetails(
        email=form.email.data,
        shipping=shipping,
        billing=billing,
        gift_message=form.gift_message.data or "",
        user_id=current_user.id if current_user.is_authenticated else None,
    )


def _page(
    forms: Forms,
    status: int = 200,
    *,
    problem: str | None = None,
    told_of_changes: bool = False,
) -> Response:
    """The checkout page (or, for htmx, its body) for the shopper's cart as it is now. A form
    sent back (a detail to correct, Stripe unreachable) shows the bag as it is now: what
    changed since the page the shopper sent is said with the problem, unless it was already
    (``told_of_changes``), so the form sent next never goes to payment for a change nobody
    named."""
    cart = current_cart()
    view = carts.view(db.session, cart)
    form, shipping, billing = forms
    sent = form.bag_as_shown.data if request.method == "POST" else None
    to_tell = problem and sent and not told_of_changes and not view.frozen
    if to_tell and (changes := checkouts.changes_since_shown(view, sent)):
        problem = f"{problem} {ALSO_CHANGED.format(changes=' '.join(changes))}"
    # Beside a payment in progress, the form's one button replaces it with a payment of the
    # bag as it is now: that is the bag its page shows.
    form.bag_as_shown.data = checkouts.bag_as_shown(view)
    html = render_template(
        "checkout/_checkout.html" if is_htmx() else "checkout/show.html",
        cart=view,
        pending=checkouts.pending_order_for_cart(db.session, cart) if view.frozen else None,
        totals=checkouts.totals(
            view, signature_above=current_app.config["SIGNATURE_REQUIRED_ABOVE"]
        ),
        form=form,
        shipping=shipping,
        billing=billing,
        saved_addresses=_saved_addresses(),
        payments_configured=stripe_gateway.payments_configured(),
        problem=problem,
        # The form as it was sent, beside the payment already in progress: to replace it.
        replacing=view.frozen and request.method == "POST",
    )
    return make_response(html, status)


def _leave_for(url: str) -> Response:
    """Off to Stripe (or elsewhere): 303 for a form, ``HX-Redirect`` for htmx."""
    return htmx_redirect(url) if is_htmx() else redirect(url, 303)


def _back_to_cart(message: str) -> Response:
    flash(message)
    return _leave_for(url_for("cart.show"))


def _return_urls() -> checkouts.ReturnUrls:
    """Back from Stripe: to the order after paying; to the cart (which offers to resume or
    cancel the payment) after leaving the payment page."""
    return checkouts.ReturnUrls(
        success=absolute_url("checkout.success") + SESSION_ID_QUERY,
        cancel=absolute_url("cart.show"),
    )


@bp.get("")
def show() -> Response:
    view = carts.view(db.session, current_cart())
    if view.is_empty or (view.checkout_blocked and not view.frozen):
        return redirect(url_for("cart.show"), 303)
    return _page(_forms())


def _to_order(order: Order | None) -> Response:
    if order is None or not order.stripe_checkout_session_id:
        return _leave_for(url_for("cart.show"))
    return _leave_for(url_for("checkout.success", session_id=order.stripe_checkout_session_id))


def _resume(cart) -> Response:
    """Back to the payment page the frozen cart is waiting on, or say why not."""
    resumption = checkouts.resume_payment(db.session, cart, _return_urls())
    db.session.commit()
    if resumption.outcome is checkouts.Resumed.TO_PAYMENT and resumption.url:
        return _leave_for(resumption.url)
    if resumption.outcome is checkouts.Resumed.FINISHED:
        return _to_order(resumption.order)
    if resumption.outcome is checkouts.Resumed.UNREACHABLE:
        return _back_to_cart(UNREACHABLE)
    return _back_to_cart(RELEASED)


def _already_paying(
    forms: Forms, details: checkouts.CheckoutDetails | None, as_shown: str | None
) -> Response:
    """The bag is already being paid for (a second submit, or another tab): back to that
    payment page, unless this form can't be read, asks for other details than its order's,
    or showed another bag (another tab added a piece, then paid). Then the form is shown
    again as it was sent, beside the payment in progress, to replace that payment
    (``replace``) or go back to it."""
    cart = current_cart()
    if cart is None:
        # The bag went meanwhile (signing in, in another tab, put it in the account's).
        return _back_to_cart(BAG_MOVED)
    if details is None:
        return _page(forms, 422, problem="Please correct the details marked below.")
    pending = checkouts.pending_order_for_cart(db.session, cart)
    if pending is not None:
        view = carts.view(db.session, cart)
        changes = (
            checkouts.changes_since_shown(view, as_shown, paying=pending)
            if as_shown is not None
            else []
        )
        if changes:
            problem = OTHER_BAG.format(number=pending.number, changes=" ".join(changes))
            return _page(forms, 409, problem=problem, told_of_changes=True)
        if checkouts.other_details_than(pending, details):
            return _page(forms, 409, problem=OTHER_DETAILS.format(number=pending.number))
    return _resume(cart)


@bp.post("")
def start() -> Response:
    cart = current_cart()
    if cart is None or not cart.lines:
        return _leave_for(url_for("cart.show"))
    forms = _forms()
    if not stripe_gateway.payments_configured():
        return _page(forms, 503, problem="Payments are not configured.")
    details = _details(forms)
    # Empty when the page showed an empty bag (another tab emptied it as it was sent): the
    # pieces added since are then changes like any other. Missing, nothing is checked.
    as_shown = forms[0].bag_as_shown.data if forms[0].bag_as_shown.raw_data else None
    if cart.frozen_at is not None and details is not None and forms[0].replace.data:
        # That payment is cancelled and this one started in one transaction, committed with
        # the new order: the pieces it held pass to it, never free for another shopper in
        # between. Refused, or a worker stopped half-way, that payment stays as it was, its
        # page closed at Stripe (Stripe's report of that ends it).
        cancellation = checkouts.cancel_payment(db.session, cart, to_check_out=True)
        if cancellation.outcome is checkouts.Cancelled.TOO_LATE:
            db.session.commit()
            return _to_order(cancellation.order)
        if cancellation.outcome is checkouts.Cancelled.NOT_NOW:
            db.session.commit()
            return _page(forms, 503, problem=UNREACHABLE)
        db.session.refresh(cart)
    if cart.frozen_at is not None:
        return _already_paying(forms, details, as_shown)
    if details is None:
        return _page(forms, 422, problem="Please correct the details marked below.")
    try:
        order = checkouts.start_checkout(
            db.session,
            cart,
            details,
            expiry_minutes=current_app.config["CHECKOUT_EXPIRY_MINUTES"],
            as_shown=as_shown,
        )
        db.session.commit()
    except checkouts.CheckoutError as error:
        # Typically a piece sold out, or another shopper just reserved the last one.
        db.session.rollback()
        told = isinstance(error, checkouts.BagChangedError)
        return _page(forms, 409, problem=error.message, told_of_changes=told)
    except carts.FrozenCartError:
        db.session.rollback()
        return _already_paying(forms, details, as_shown)
    except carts.CartGoneError:
        # Another tab signed in meanwhile: the guest's bag is the account's now, or joined it.
        db.session.rollback()
        return _back_to_cart(BAG_MOVED)
    try:
        url = checkouts.begin_payment(db.session, order, _return_urls())
    except checkouts.PaymentUnavailableError as error:
        db.session.commit()
        return _page(forms, error.status, problem=error.message)
    db.session.commit()
    return _leave_for(url)


@bp.post("/resume")
def resume() -> Response:
    cart = current_cart()
    if cart is None or cart.frozen_at is None:
        return _back_to_cart(NOTHING_TO_CANCEL)
    return _resume(cart)


@bp.post("/cancel")
def cancel() -> Response:
    cart = current_cart()
    if cart is None:
        return _back_to_cart(NOTHING_TO_CANCEL)
    cancellation = checkouts.cancel_payment(db.session, cart)
    db.session.commit()
    if cancellation.outcome is checkouts.Cancelled.TOO_LATE:
        # Paid (or paying) after all: show where it stands rather than claim it was cancelled.
        return _to_order(cancellation.order)
    if cancellation.outcome is checkouts.Cancelled.NOTHING:
        return _back_to_cart(NOTHING_TO_CANCEL)
    if cancellation.outcome is checkouts.Cancelled.NOT_NOW:
        return _back_to_cart(UNREACHABLE)
    return _back_to_cart(CANCELLED)


def _may_see(order: Order) -> bool:
    """The account that owns the order, the browser whose cart it was bought from, or (a
    deposit, bought from no cart) the browser that went to pay it."""
    if current_user.is_authenticated and order.user_id == current_user.id:
        return True
    if paying_deposit(order):
        return True
    cart = current_cart()
    return cart is not None and order.cart_id == cart.id


@bp.get("/success")
def success() -> Response:
    """Where Stripe sends the shopper after paying. Shows the order (and polls until the
    webhook has landed) to its own shopper; anyone else holding the link learns only that an
    order was received. Never marks anything paid."""
    checkout_session_id = request.args.get("session_id", "")
    if not checkout_session_id or len(checkout_session_id) > 255:
        abort(404)
    order = checkouts.order_for_payment_session(db.session, checkout_session_id) or abort(404)
    if not _may_see(order):
        return make_response(render_template("checkout/received.html"))
    template = "checkout/_status.html" if is_htmx() else "checkout/success.html"
    return make_response(render_template(template, order=order, S=OrderStatus))
