"""The cart (the shopper's bag): adding from the product page, the cart page, quantities.

Which cart is the shopper's, and its guest cookie, is the request layer's business
(:mod:`elysium.web.cart`); every change goes through :mod:`elysium.services.cart`. Showing the
cart never writes: it reports what needs the shopper's attention.
"""

from __future__ import annotations

from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from markupsafe import Markup

from elysium.cart.forms import AddToCartForm, QuantityForm
from elysium.db_routing import READ_METHODS
from elysium.extensions import db
from elysium.htmx import fragments, is_htmx, personal_pages
from elysium.models.cart import Cart
from elysium.models.catalog import Product
from elysium.services import cart as carts
from elysium.services.checkout import pending_order_for_cart
from elysium.services.configuration import Configuration, ConfigurationError, configure
from elysium.web.browsing import read_recently_viewed_first
from elysium.web.cart import current_cart, keep_guest_cookie, remember_count
from elysium.web.commits import committed_with_retry
from elysium.web.configurator import configurator_context
from elysium.web.fragments import bag_lines_to_show, drawn_once, product_to_add

bp = Blueprint("cart", __name__, url_prefix="/cart")

personal_pages(bp)


def _announce(message: str, *, error: bool = False) -> str:
    """The page's #messages region and the header count, both updated out of band."""
    return render_template("cart/_announce.html", message=message, error=error)


def _context(cart: Cart | None, line_errors: dict[int, dict[str, str]] | None = None) -> dict:
    """What the cart page draws: the cart as the shopper sees it, and the order it is being
    paid for, if it is frozen."""
    lines = bag_lines_to_show(cart) if cart is not None else None
    view = carts.view(db.session, cart, lines=lines)
    remember_count(view.item_count)
    pending = pending_order_for_cart(db.session, cart) if cart and view.frozen else None
    return {"cart": view, "pending": pending, "line_errors": line_errors or {}}


def _cart_response(
    status: int = 200,
    *,
    message: str | None = None,
    error: bool = False,
    line_errors: dict[int, dict[str, str]] | None = None,
) -> Response:
    """The cart, freshly read: the page, or for htmx its body plus the out-of-band updates."""
    context = _context(current_cart(with_lines=request.method in READ_METHODS), line_errors)
    if is_htmx():
        body = render_template("cart/_cart.html", **context)
        announcement = _announce(message, error=error) if message else ""
        response = fragments(body, announcement, status=status)
    else:
        if message:
            flash(message)
        response = make_response(render_template("cart/show.html", **context), status)
    response.vary.add("HX-Request")
    return response


@bp.get("")
def show() -> Response:
    if not is_htmx():
        read_recently_viewed_first()
    return _cart_response()


def _after_change(message: str) -> Response:
    """Success: htmx gets the cart body and the announcements; a browser is redirected."""
    if is_htmx():
        return _cart_response(message=message)
    flash(message)
    return redirect(url_for("cart.show"), 303)


def _refused(error: carts.CartError) -> Response:
    db.session.rollback()
    # A line gone (another window removed it) is still a 404, with the bag as it is now.
    status = 404 if isinstance(error, carts.LineNotFoundError) else 409
    return _cart_response(status, message=error.message, error=True)


def _owned_cart() -> Cart:
    """The shopper's cart; with no cart, no line can be theirs (404)."""
    return current_cart() or abort(404)


@bp.post("/items/<int:line_id>")
def update_line(line_id: int) -> Response:
    cart = _owned_cart()
    form = QuantityForm()
    if not form.validate():
        if not any(line.id == line_id for line in cart.lines):
            return _refused(carts.LineNotFoundError())
        message = form.quantity.errors[0] if form.quantity.errors else "Please try again."
        return _cart_response(
            422,
            message=message,
            error=True,
            line_errors={line_id: {"message": message, "value": form.quantity.data or ""}},
        )
    try:
        change = carts.set_quantity(db.session, cart, line_id, form.value)
    except carts.CartError as error:
        return _refused(error)
    db.session.commit()
    keep_guest_cookie(cart)
    return _after_change(change.message)


@bp.post("/items/<int:line_id>/delete")
def remove_line(line_id: int) -> Response:
    cart = _owned_cart()
    try:
        line = next((line for line in cart.lines if line.id == line_id), None)
        name = line.product.name if line else ""
        carts.remove_line(db.session, cart, line_id)
    except carts.CartError as error:
        return _refused(error)
    db.session.commit()
    keep_guest_cookie(cart)
    return _after_change(f"Removed {name} from your bag.")


@bp.post("/empty")
def empty_bag() -> Response:
    """Remove every line at once. The bag page asks first (a disclosure with a second button),
    so the confirmation is the same with or without JavaScript; a bag being paid for is
    refused (409) until its payment is resumed or cancelled."""
    cart = current_cart()
    if cart is None:
        return _after_change("Your bag is already empty.")
    try:
        removed = carts.remove_all_lines(db.session, cart)
    except carts.CartError as error:
        return _refused(error)
    db.session.commit()
    keep_guest_cookie(cart)
    if not removed:
        return _after_change("Your bag is already empty.")
    pieces = "1 piece" if removed == 1 else f"{removed} pieces"
    return _after_change(f"Emptied your bag: removed {pieces}.")


def _add_refused(
    product: Product, form: AddToCartForm, errors: dict[str, str], status: int, message: str
) -> Response:
    """422 (fix these choices) or 409 (sold out, cart frozen): the product page again with
    the shopper's choices and the messages next to the fields; for htmx, the error slots.
    """
    quantity = form.quantity.data or "1"
    if is_htmx():
        slots = render_template("cart/_error_slots.html", errors=errors, product=product)
        block = _add_to_bag_block(product, form, errors, quantity, message, error=True)
        return fragments(block, slots, _announce(message, error=True), status=status)
    context = configurator_context(product, form.shown_choices(), errors)
    return make_response(
        render_template(
            "shop/product.html",
            quantity=quantity,
            cart_status=message,
            cart_status_error=True,
            **context,
        ),
        status,
    )


@bp.post("/items")
def add_item() -> Response:
    form = AddToCartForm()
    product = product_to_add((form.product.data or "").strip())
    if product is None:
        abort(404)
    errors: dict[str, str] = {}
    if not form.validate() and form.quantity.errors:
        errors["quantity"] = form.quantity.errors[0]
    configuration: Configuration | None = None
    try:
        configuration = configure(product, form.choices(), require_size=True)
    except ConfigurationError as error:
        errors.update(error.errors)
    if errors or configuration is None:
        summary = " ".join(["Please correct the choices marked above:", *errors.values()])
        return _add_refused(product, form, errors, 422, summary)

    def add() -> tuple[carts.LineChange, tuple[str, str] | None]:
        cart = current_cart(create=True)
        assert cart is not None
        # A guest's bag made by this request (not written yet) holds the new line alone.
        new_bag = cart.id is None
        change = carts.add_item(db.session, cart, product, configuration, form.value)
        # Before the commit, which would expire the cart and cost a query to read it again.
        keep_guest_cookie(cart)
        if new_bag and change.line is not None:
            remember_count(change.line.quantity)
        else:
            remember_count(carts.item_count(db.session, cart))
        # htmx's answer is drawn now too, from the piece and its stock as this request read
        # them: the commit expires them, and they would have to be read again.
        drawn = None
        if is_htmx():
            block = _add_to_bag_block(
                product, form, {}, str(form.value), change.message, error=False
            )
            drawn = (block, _error_slots_emptied(product))
        return change, drawn

    try:
        change, drawn = committed_with_retry(add)
    except carts.CartError as error:
        db.session.rollback()
        return _add_refused(product, form, {}, 409, error.message)
    if drawn is None:
        flash(change.message)
        return redirect(url_for("cart.show"), 303)
    block, slots = drawn
    return fragments(block, slots, _announce(change.message))


def _add_to_bag_block(
    product: Product,
    form: AddToCartForm,
    errors: dict[str, str],
    quantity: str,
    message: str,
    *,
    error: bool,
) -> str:
    """The product page's Add to bag block after an htmx add. Refused, with the stock as it
    is now: a piece that just sold out (409) disables the button and says what can be had
    instead. Added, the piece chosen could be had (the bag took it on the stock this request
    read), so the block offers it again as it was, with nothing worked out anew."""
    shown: dict[str, object] = {"choices": form.shown_choices(), "add_to_bag_state": "available"}
    if error:
        context = configurator_context(product, form.shown_choices(), errors)
        shown = {key: context[key] for key in ("choices", "stock", "add_to_bag_state")}
    return render_template(
        "cart/_add_to_cart.html",
        product=product,
        errors=errors,
        quantity=quantity,
        cart_status=message,
        cart_status_error=error,
        **shown,
    )


def _error_slots_emptied(product: Product) -> Markup:
    """The configurator's error slots, emptied (out of band) after a piece went in the bag:
    the same markup for every piece with the same choices, drawn once per process."""
    asks = (bool(product.metals), bool(product.diamonds))
    asks += (product.has_ring_size, product.offers_engraving)
    return drawn_once(
        "error-slots-emptied",
        *asks,
        caller=lambda: render_template("cart/_error_slots.html", errors={}, product=product),
    )
