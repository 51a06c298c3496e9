"""The bag: adding from the product page, the bag page, quantities, and the guest cookie.

A guest's bag is found by a random token kept in a signed, HttpOnly cookie; a signed-in
shopper's bag is on the account. Every change goes through :mod:`elysium.services.cart`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    g,
    has_request_context,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user
from itsdangerous import BadData, URLSafeSerializer
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from elysium.cart.forms import AddToBagForm, QuantityForm
from elysium.extensions import db
from elysium.htmx import fragments, is_htmx, personal_pages, render
from elysium.models.cart import Cart
from elysium.models.catalog import Product
from elysium.services import cart as bags
from elysium.services import catalog
from elysium.services.configuration import (
    Configuration,
    ConfigurationError,
    configure,
)
from elysium.shop.routes import configurator_context

bp = Blueprint("cart", __name__, url_prefix="/cart")

COOKIE_SALT = "elysium.bag"
MAX_TOKEN_LENGTH = 64
T = TypeVar("T")


def _serializer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt=COOKIE_SALT)


def guest_token() -> str | None:
    """The token in the guest's bag cookie; a missing or tampered cookie is no token."""
    raw = request.cookies.get(current_app.config["CART_COOKIE_NAME"])
    if not raw:
        return None
    try:
        token = _serializer().loads(raw)
    except BadData:
        return None
    if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN_LENGTH:
        return None
    return token


def _keep_guest_cookie(cart: Cart) -> None:
    """(Re)send the guest cookie after a change, so it lasts as long as the bag is used."""
    if cart.user_id is None and cart.token:
        g.bag_cookie_token = cart.token


@bp.after_app_request
def write_bag_cookie(response: Response) -> Response:
    config = current_app.config
    name = config["CART_COOKIE_NAME"]
    if g.get("clear_bag_cookie"):
        response.delete_cookie(
            name, secure=config["SESSION_COOKIE_SECURE"], httponly=True, samesite="Lax"
        )
    elif token := g.get("bag_cookie_token"):
        response.set_cookie(
            name,
            _serializer().dumps(token),
            max_age=config["CART_COOKIE_DAYS"] * 24 * 3600,
            secure=config["SESSION_COOKIE_SECURE"],
            httponly=True,
            samesite="Lax",
        )
    return response


def current_cart(*, create: bool = False) -> Cart | None:
    """This shopper's bag: the account's when signed in, else the guest cookie's."""
    if current_user.is_authenticated:
        return bags.cart_for(
            db.session,
            user_id=current_user.id,
            create=create,
            currency=current_app.config["SHOP_CURRENCY"],
        )
    token = guest_token()
    cart = bags.find_cart(db.session, token=token) if token else None
    if cart is None and create:
        cart = bags.cart_for(
            db.session,
            token=bags.new_token(),
            create=True,
            currency=current_app.config["SHOP_CURRENCY"],
        )
    return cart


def merge_guest_bag(user: Any) -> None:
    """On sign-in: the guest bag joins the account's (or becomes it); the cookie goes."""
    token = guest_token()
    if token is None:
        return
    g.clear_bag_cookie = True
    guest = bags.find_cart(db.session, token=token)
    if guest is None:
        return
    target = bags.find_cart(db.session, user_id=user.id)
    try:
        if target is None:
            report = bags.adopt(db.session, guest, user.id)
        else:
            report = bags.merge_into(db.session, guest, target)
    except bags.CartError as error:
        db.session.rollback()
        g.clear_bag_cookie = False
        flash(error.message)
        return
    db.session.commit()
    for message in report.messages:
        flash(message)


def _header_count() -> int:
    if current_user.is_authenticated:
        return bags.count_for(db.session, user_id=current_user.id)
    token = guest_token()
    return bags.count_for(db.session, token=token) if token else 0


@bp.app_context_processor
def bag_count() -> dict[str, int]:
    """The header's bag count: one small query, once per request (none without a bag)."""
    if not has_request_context():
        return {"bag_count": 0, "max_quantity_per_line": bags.MAX_QUANTITY_PER_LINE}
    if "bag_count" not in g:
        try:
            g.bag_count = _header_count()
        except SQLAlchemyError:
            # Never let the header break a page (an error page included).
            current_app.logger.exception("Could not count the bag")
            g.bag_count = 0
    return {"bag_count": g.bag_count, "max_quantity_per_line": bags.MAX_QUANTITY_PER_LINE}


personal_pages(bp)


def _announce(message: str, *, error: bool = False) -> str:
    """The page's #messages region and the header count, both updated out of band."""
    return render_template(
        "cart/_announce.html", message=message, error=error, count=g.get("bag_count", 0)
    )


def _with_retry(change: Callable[[], T]) -> T:
    """Run a change and commit; two requests racing to create the same bag or line collide
    on a unique constraint, and the loser simply tries once more."""
    try:
        result = change()
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        result = change()
        db.session.commit()
    return result


def _bag_response(
    status: int = 200,
    *,
    message: str | None = None,
    error: bool = False,
    line_errors: dict[int, dict[str, str]] | None = None,
) -> Response:
    """The bag, freshly read: the page, or for htmx its body plus the out-of-band updates.

    Viewing may reduce a quantity to the stock left; that is committed after rendering, so
    the page is drawn from the objects already loaded (committing first would expire them).
    """
    bag = bags.view(db.session, current_cart())
    g.bag_count = bag.item_count
    context = {"bag": bag, "line_errors": line_errors or {}}
    if is_htmx():
        body = render_template("cart/_bag.html", **context)
        announcement = _announce(message, error=error) if message else ""
        response = fragments(body, announcement, status=status)
    else:
        if message:
            flash(message)
        response = make_response(render_template("cart/show.html", **context), status)
    db.session.commit()
    return response


@bp.get("")
def show() -> Response:
    bag = bags.view(db.session, current_cart())
    g.bag_count = bag.item_count
    response = render("cart/show.html", "cart/_bag.html", bag=bag, line_errors={})
    db.session.commit()
    return response


def _after_change(message: str) -> Response:
    """Success: htmx gets the bag body and the announcements; a browser is redirected."""
    if is_htmx():
        return _bag_response(message=message)
    flash(message)
    return redirect(url_for("cart.show"), 303)


def _refused(error: bags.CartError) -> Response:
    db.session.rollback()
    if isinstance(error, bags.LineNotFoundError):
        abort(404)
    return _bag_response(409, message=error.message, error=True)


def _owned_cart() -> Cart:
    """The shopper's bag; with no bag, no line can be theirs (404)."""
    return current_cart() or abort(404)


@bp.post("/items/<int:line_id>")
def update_line(line_id: int) -> Response:
    cart = _owned_cart()
    form = QuantityForm()
    if not form.validate():
        if not any(line.id == line_id for line in cart.lines):
            abort(404)
        message = form.quantity.errors[0] if form.quantity.errors else "Please try again."
        return _bag_response(
            422,
            message=message,
            error=True,
            line_errors={line_id: {"message": message, "value": form.quantity.data or ""}},
        )
    try:
        change = bags.set_quantity(db.session, cart, line_id, form.value)
    except bags.CartError as error:
        return _refused(error)
    db.session.commit()
    _keep_guest_cookie(cart)
    return _after_change(change.message)


@bp.post("/items/<int:line_id>/delete")
def remove_line(line_id: int) -> Response:
    cart = _owned_cart()
    try:
        line = next((line for line in cart.lines if line.id == line_id), None)
        name = line.product.name if line else ""
        bags.remove_line(db.session, cart, line_id)
    except bags.CartError as error:
        return _refused(error)
    db.session.commit()
    _keep_guest_cookie(cart)
    return _after_change(f"Removed {name} from your bag.")


def _add_refused(
    product: Product, form: AddToBagForm, errors: dict[str, str], status: int, message: str
) -> Response:
    """422 (fix these choices) or 409 (sold out, bag frozen): the product page again with
    the shopper's choices and the messages next to the fields; for htmx, the error slots.
    """
    quantity = form.quantity.data or "1"
    if is_htmx():
        slots = render_template("cart/_error_slots.html", errors=errors, product=product)
        block = render_template(
            "cart/_add_to_bag.html",
            product=product,
            errors=errors,
            quantity=quantity,
            bag_status=message,
            bag_status_error=True,
        )
        return fragments(block, slots, _announce(message, error=True), status=status)
    context = configurator_context(product, form.choices(), errors)
    return make_response(
        render_template(
            "shop/product.html",
            quantity=quantity,
            bag_status=message,
            bag_status_error=True,
            **context,
        ),
        status,
    )


@bp.post("/items")
def add_item() -> Response:
    form = AddToBagForm()
    product = catalog.product_by_slug(db.session, (form.product.data or "").strip())
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

    def add() -> tuple[Cart, bags.LineChange]:
        cart = current_cart(create=True)
        assert cart is not None
        return cart, bags.add_item(db.session, cart, product, configuration, form.value)

    try:
        cart, change = _with_retry(add)
    except bags.CartError as error:
        db.session.rollback()
        return _add_refused(product, form, {}, 409, error.message)
    _keep_guest_cookie(cart)
    g.bag_count = bags.item_count(db.session, cart)
    if not is_htmx():
        flash(change.message)
        return redirect(url_for("cart.show"), 303)
    slots = render_template("cart/_error_slots.html", errors={}, product=product)
    block = render_template(
        "cart/_add_to_bag.html",
        product=product,
        errors={},
        quantity=str(form.value),
        bag_status=change.message,
        bag_status_error=False,
    )
    return fragments(block, slots, _announce(change.message))
