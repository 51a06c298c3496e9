"""The wishlist: the heart on cards and product pages, and the list itself."""

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
from flask_login import current_user, login_required

from elysium.extensions import db
from elysium.htmx import fragments, htmx_redirect, is_htmx, notice, personal_pages
from elysium.models.catalog import Product
from elysium.models.users import User
from elysium.services import cart as carts
from elysium.services import catalog, wishlist
from elysium.services.configuration import ConfigurationError, configure
from elysium.services.wishlist import SavedPiece, WishlistError
from elysium.web.commits import committed_with_retry
from elysium.web.sign_in import safe_next
from elysium.web.wishlist import Heart, wishlist_heart
from elysium.wishlist.forms import HeartForm, ItemActionForm, choices_from

bp = Blueprint("wishlist", __name__, url_prefix="/wishlist")


personal_pages(bp)


def _user() -> User:
    return current_user._get_current_object()


def _redirect(location: str) -> Response:
    response = redirect(location, 303)
    response.vary.add("HX-Request")
    return response


@bp.post("/toggle")
def toggle() -> Response:
    form = HeartForm()
    product = catalog.product_by_slug(db.session, form.slug.data or "") or abort(404)
    back = safe_next(form.next.data, default=url_for("shop.product", slug=product.slug))
    if not current_user.is_authenticated:
        # The heart is a POST: after signing in, the shopper comes back to the piece.
        login_url = url_for("auth.login", next=back)
        if not is_htmx():
            return _redirect(login_url)
        response = htmx_redirect(login_url)
        response.vary.add("HX-Request")
        return response
    if not form.validate_on_submit():
        abort(400)
    user = _user()
    try:
        intent = form.intent.data or ""
        if form.whole_piece:
            saved = wishlist.toggle_piece(db.session, user.id, product, intent)
        else:
            configuration = configure(product, form.choices())
            saved = wishlist.toggle(db.session, user.id, product, configuration, intent)
    except ConfigurationError as error:
        db.session.rollback()
        return _not_saved(product, form, back, " ".join(error.errors.values()))
    except WishlistError as error:
        db.session.rollback()
        return _not_saved(product, form, back, error.message)
    db.session.commit()
    verb = "saved to" if saved else "removed from"
    message = f"{product.name} is {verb} your wishlist."
    if is_htmx():
        heart = Heart(product, saved, None if form.whole_piece else form.choices(), back)
        return fragments(render_template("wishlist/_heart.html", heart=heart), notice(message))
    flash(message)
    return _redirect(back)


def _not_saved(product: Product, form: HeartForm, back: str, message: str) -> Response:
    """422: htmx keeps the heart as it was and hears why; a browser gets a page saying so."""
    if is_htmx():
        heart = wishlist_heart(product, None if form.whole_piece else form.choices(), back)
        return fragments(
            render_template("wishlist/_heart.html", heart=heart),
            notice(message, error=True),
            status=422,
        )
    response = make_response(
        render_template("wishlist/not_saved.html", product=product, message=message, back=back),
        422,
    )
    response.vary.add("HX-Request")
    return response


@bp.get("/heart/<slug>")
def heart(slug: str) -> Response:
    """The product page's heart for the configurator's current choices (htmx refreshes it as
    they change); a plain request is sent to the product page in that configuration."""
    product = catalog.product_by_slug(db.session, slug) or abort(404)
    choices = choices_from(request.args)
    back = url_for("shop.product", slug=product.slug, **{k: v for k, v in choices.items() if v})
    if not is_htmx():
        return _redirect(back)
    return fragments(
        render_template("wishlist/_heart.html", heart=wishlist_heart(product, choices, back))
    )


def _page(errors: dict[int, str] | None = None, status: int = 200) -> Response:
    pieces = wishlist.saved_pieces(db.session, _user().id)
    response = make_response(
        render_template("wishlist/show.html", pieces=pieces, errors=errors or {}),
        status,
    )
    response.vary.add("HX-Request")
    return response


@bp.get("")
@login_required
def show() -> Response:
    return _page()


def _owned(item_id: int) -> SavedPiece:
    """The signed-in shopper's saved piece; anyone else's is not found (404, never 403)."""
    piece = wishlist.saved_piece(db.session, _user().id, item_id)
    if piece is None:
        abort(404)
    return piece


def _gone(message: str, *updates: str) -> Response:
    """The item left the list: htmx removes it (an empty body) and hears why; a browser is
    redirected to the list."""
    if is_htmx():
        parts = list(updates)
        if not wishlist.count(db.session, _user().id):
            parts.append(render_template("wishlist/_items.html", pieces=[], oob=True))
        return fragments(*parts, notice(message))
    flash(message)
    return _redirect(url_for("wishlist.show"))


def _refused(piece: SavedPiece, message: str) -> Response:
    """422: the item stays, with the reason beside it."""
    if is_htmx():
        return fragments(
            render_template("wishlist/_item.html", piece=piece, error=message),
            status=422,
        )
    return _page({piece.item.id: message}, status=422)


@bp.post("/<int:item_id>/remove")
@login_required
def remove(item_id: int) -> Response:
    piece = _owned(item_id)
    if not ItemActionForm().validate_on_submit():
        abort(400)
    name = piece.product.name
    wishlist.remove(db.session, piece)
    db.session.commit()
    return _gone(f"{name} is removed from your wishlist.")


@bp.post("/<int:item_id>/move")
@login_required
def move_to_cart(item_id: int) -> Response:
    piece = _owned(item_id)
    if not ItemActionForm().validate_on_submit():
        abort(400)
    name = piece.product.name

    def move() -> tuple[carts.LineChange, int]:
        # Tried again after a collision (the account's bag made meanwhile): read afresh.
        moved = _owned(item_id)
        cart, change = wishlist.move_to_cart(db.session, _user().id, moved)
        return change, carts.item_count(db.session, cart)

    try:
        change, count = committed_with_retry(move)
    except (WishlistError, carts.CartError) as error:
        db.session.rollback()
        return _refused(_owned(item_id), error.message)
    return _gone(
        change.message or f"{name} is in your bag.",
        render_template("cart/_count.html", cart_count=count, oob=True),
    )
