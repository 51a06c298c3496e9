"""The current shopper's cart: the account's when signed in, else the guest cookie's.

A guest's cart is found by a random token kept in a signed, HttpOnly cookie
(``CART_COOKIE_NAME``: ``__Host-elysium_bag`` in production). The cookie is (re)sent after a
change and removed when the guest cart joins an account's at sign-in. Every change to a cart's
lines goes through :mod:`elysium.services.cart`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from flask import Response, current_app, flash, g, has_request_context, request, session
from flask_login import current_user
from itsdangerous import BadData, URLSafeSerializer
from sqlalchemy import Select
from sqlalchemy.exc import SQLAlchemyError

from elysium.config import HOST_COOKIE_PREFIX
from elysium.extensions import db
from elysium.models.cart import Cart
from elysium.models.users import User
from elysium.services import cart as carts
from elysium.web.commits import committed_with_retry
from elysium.web.signatures import VerifiedValues

COOKIE_SALT = "elysium.bag"
MAX_TOKEN_LENGTH = 64
# The session's random part of its new bags' token (``session_bag_token``), drawn again at
# every sign-in and sign-out (``renew_bag_identity``).
BAG_IDENTITY_KEY = "bag_identity"
_verified = VerifiedValues()


def _serializer(cookie_name: str) -> URLSafeSerializer:
    """A ``__Host-`` name signs with a salt of its own: see ``former_cookie_name``."""
    salt = COOKIE_SALT
    if cookie_name.startswith(HOST_COOKIE_PREFIX):
        salt = f"{COOKIE_SALT}:{cookie_name}"
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt=salt)


def former_cookie_name() -> str | None:
    """The name the cookie had before production gave it the ``__Host-`` prefix, or ``None``.

    A bag under the former name is still found, once: its token moves to the new name and the
    old cookie is deleted. Any subdomain, or a plain-http answer, can set a cookie by the
    former name; but the new name signs with its own salt, so only a token handed out before
    the move verifies under the old one, and nobody can plant a bag of theirs in a shopper's
    browser that way.
    """
    name = current_app.config["CART_COOKIE_NAME"]
    former = name.removeprefix(HOST_COOKIE_PREFIX)
    return former if former != name else None


def _read(cookie_name: str) -> str | None:
    raw = request.cookies.get(cookie_name)
    if not raw:
        return None
    checked = (current_app.config["SECRET_KEY"], cookie_name, raw)
    token = _verified.get(checked)
    if token is None:
        try:
            token = _serializer(cookie_name).loads(raw)
        except BadData:
            return None
        _verified.put(checked, token)
    if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN_LENGTH:
        return None
    return token


def guest_token() -> str | None:
    """The token in the guest's cart cookie; a missing or tampered cookie is no token.

    A token found under the cookie's former name is sent back under the new one.
    """
    name = current_app.config["CART_COOKIE_NAME"]
    former = former_cookie_name()
    if name in request.cookies or former is None:
        return _read(name)
    token = _read(former)
    if token is not None:
        g.setdefault("cart_cookie_token", token)
    return token


def keep_guest_cookie(cart: Cart) -> None:
    """(Re)send the guest cookie after a change, so it lasts as long as the cart is used."""
    if cart.user_id is None and cart.token:
        g.cart_cookie_token = cart.token


def write_cart_cookie(response: Response) -> Response:
    """After every request: set or clear the guest cart cookie as the request decided; a
    cookie under the former name is moved to the new one and deleted."""
    config = current_app.config
    name = config["CART_COOKIE_NAME"]
    former = former_cookie_name()
    if former is not None and former in request.cookies:
        guest_token()  # moves the token, if nothing in this request looked for the cart
        response.delete_cookie(
            former, secure=config["SESSION_COOKIE_SECURE"], httponly=True, samesite="Lax"
        )
    if g.get("clear_cart_cookie"):
        response.delete_cookie(
            name, secure=config["SESSION_COOKIE_SECURE"], httponly=True, samesite="Lax"
        )
    elif token := g.get("cart_cookie_token"):
        response.set_cookie(
            name,
            _serializer(name).dumps(token),
            max_age=config["CART_COOKIE_DAYS"] * 24 * 3600,
            secure=config["SESSION_COOKIE_SECURE"],
            httponly=True,
            samesite="Lax",
        )
    return response


def current_cart(*, create: bool = False, with_lines: bool = False) -> Cart | None:
    """This shopper's cart; with ``create``, a new empty one if they have none (POSTs only);
    ``with_lines``, its lines read with it (``carts.find_cart``)."""
    currency = current_app.config["SHOP_CURRENCY"]
    if current_user.is_authenticated:
        return carts.cart_for(
            db.session,
            user_id=current_user.id,
            create=create,
            currency=currency,
            with_lines=with_lines,
        )
    token = guest_token()
    cart = carts.find_cart(db.session, token=token, with_lines=with_lines) if token else None
    if cart is None and create:
        token = session_bag_token()
        if g.get("made_a_bag"):  # an earlier try of this request made one, and collided
            cart = carts.find_cart(db.session, token=token, with_lines=with_lines)
            while cart is not None and carts.taken_to_payment(db.session, cart):
                # Its cookie gone, a bag being paid for or bought from is nobody's here: it
                # would show its order, or stay frozen. The session's next bag is the one.
                token = session_bag_token(after=cart.id)
                cart = carts.find_cart(db.session, token=token, with_lines=with_lines)
        if cart is None:
            g.made_a_bag = True
            cart = carts.new_cart(db.session, token=token, currency=currency)
    return cart


def session_bag_token(after: int | None = None) -> str:
    """The token a guest's new bag is made with: the same for every request of this browser
    session until it signs in or out, so that two first adds at once (two tabs, a double
    submit) meet in one bag, as an account's two windows do (the second collides with the
    first's token and tries again, into it), and an add whose answer, with the bag's cookie,
    never arrived is found by the next.
    A random token would make one bag each, and the shopper keep whichever cookie came last.
    Only a bag never taken to payment is found so (``current_cart``): one whose cookie is
    gone after it was is no longer this browser's, and the session's next bag has the token
    worked out ``after`` it (its id), which two tabs work out alike too.

    It is the session's CSRF secret (which a POST that got this far was checked against; it
    outlives signing in and out) and the random value drawn at the session's last sign-in or
    sign-out (``renew_bag_identity``), keyed with ``SECRET_KEY``: nobody can work it out from
    the session's cookie or the page's token. The CSRF secret alone made every guest bag of
    the browser session one token: a bag cookie copied before a sign-in (a shared computer)
    opened the bag the next guest made after the sign-out, and her payment. A session without
    a CSRF secret draws a token at random."""
    secret = session.get(current_app.config.get("WTF_CSRF_FIELD_NAME") or "csrf_token")
    if not isinstance(secret, str) or not secret:
        return carts.new_token()
    key = str(current_app.config["SECRET_KEY"]).encode()
    made = f"{COOKIE_SALT}:{secret}"
    if isinstance(identity := session.get(BAG_IDENTITY_KEY), str):
        made += f":identity:{identity}"
    if after is not None:
        made += f":after:{after}"
    digest = hmac.new(key, made.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def renew_bag_identity() -> None:
    """The browser session's new guest bags are new ones from now on (signing in or out):
    every tab shares the new session, so its tabs still fill one bag, but not the bag of
    whoever used the browser before, nor one whose cookie was copied then."""
    session[BAG_IDENTITY_KEY] = secrets.token_urlsafe(16)


PAID_FOR_AS_A_GUEST = (
    "The bag you began paying for before signing in stays with this browser until that "
    "payment ends: sign out to resume or cancel it. If it ends unpaid, its pieces join your "
    "bag the next time you sign in here."
)
ACCOUNTS_BAG_BEING_PAID = (
    "Your account's bag is being paid for on another device, so the pieces in this browser's "
    "bag wait here: they join your bag the next time you sign in here once that payment ends."
)


def merge_guest_cart(user: User) -> None:
    """On sign-in: the guest cart joins the account's (or becomes it); the cookie goes.

    Commits its own change: it runs after the sign-in itself has been committed. The account's
    other device making its first bag at this moment wins the account's one bag: the guest's
    is then merged into it (:func:`committed_with_retry`). Two sign-ins of this browser at
    once (a double click) bring the guest's bag once: the second finds it the account's
    already, or gone into it, and brings nothing.
    """
    token = guest_token()
    if token is None:
        return
    g.clear_cart_cookie = True
    accounts_bag: set[int] = set()

    def merge() -> carts.MergeReport | None:
        guest = carts.find_cart(db.session, token=token)
        if guest is None:
            return None
        target = carts.find_cart(db.session, user_id=user.id)
        if target is None:
            return carts.adopt(db.session, guest, user.id)
        accounts_bag.add(target.id)
        return carts.merge_into(db.session, guest, target)

    try:
        try:
            report = committed_with_retry(merge)
        except carts.CartGoneError:
            # The browser's other window signed in at this very moment and took the guest's
            # bag first (the account's now, or merged into it): looked for again, it is gone.
            db.session.rollback()
            report = committed_with_retry(merge)
    except carts.FrozenCartError as error:
        # This browser's bag, or the account's, is being paid for: this one stays the guest's.
        # (A guest's payment stays the guest's: on a shared computer the next person to sign
        # in must not take over a stranger's payment, nor later their order's page.)
        db.session.rollback()
        g.clear_cart_cookie = False
        flash(ACCOUNTS_BAG_BEING_PAID if error.cart_id in accounts_bag else PAID_FOR_AS_A_GUEST)
        return
    except carts.CartError as error:
        db.session.rollback()
        g.clear_cart_cookie = False
        flash(error.message)
        return
    if report is None:
        return
    for message in report.messages:
        flash(message)


def _bag_owner() -> dict[str, object]:
    """Whose bag the header counts: the account's when signed in, else the guest cookie's."""
    if current_user.is_authenticated:
        return {"user_id": current_user.id}
    return {"token": guest_token()}


def header_count_query() -> tuple[Select, dict[str, object]] | None:
    """The header's count for this shopper as a statement and its parameters
    (``services.cart.count_query``); None without a bag to count."""
    return carts.count_query(**_bag_owner())


def _header_count() -> int:
    return carts.count_for(db.session, **_bag_owner())


def cart_count() -> int:
    """The header's count: one small query, once per request (none without a cart)."""
    if not has_request_context():
        return 0
    if "cart_count" not in g:
        try:
            g.cart_count = _header_count()
        except SQLAlchemyError:
            # Never let the header break a page (an error page included).
            current_app.logger.exception("Could not count the cart")
            g.cart_count = 0
    return g.cart_count


def remember_count(count: int) -> None:
    """The count a view already knows (it just changed the cart), so the header shows it."""
    g.cart_count = count


def cart_template_context() -> dict[str, object]:
    """``cart_count`` is the function, called by ``cart/_count.html`` when the count is shown
    (a fragment without the header asks nothing); a view may pass the number instead."""
    return {"cart_count": cart_count}
