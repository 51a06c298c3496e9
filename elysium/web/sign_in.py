"""Who is signed in: Flask-Login wired to the user's session version, the session cookie's
interface, signing a user in (which brings their guest cart along), and safe ``next`` URLs."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

from flask import (
    Flask,
    Request,
    Response,
    after_this_request,
    current_app,
    g,
    redirect,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface, SessionMixin
from flask_login import login_user, logout_user
from flask_login.config import SESSION_KEYS
from itsdangerous import BadSignature, TimestampSigner

from elysium.errors import render_unsent, typed_in_form
from elysium.extensions import REMEMBERED_UNTIL, db, login_manager
from elysium.htmx import htmx_redirect, is_htmx
from elysium.models.users import User
from elysium.security import CLOCKS_APART_SECONDS
from elysium.urls import same_site_path
from elysium.web.browsing import adopt_guest_views
from elysium.web.cart import BAG_IDENTITY_KEY, merge_guest_cart, renew_bag_identity
from elysium.web.devices import remember_device
from elysium.web.signatures import VerifiedValues


def load_user(identity: str) -> User | None:
    """``"<id>:<session version>"``; an old version, or a deactivated user, is nobody.

    Read from the primary even on a page that reads the catalogue from a replica: a session
    ended a moment ago (signed out everywhere, a new password, an account closed) must not
    live on for as long as the replica lags. Nor does the rest of it: this browser's session
    is cleared as signing out clears it (:func:`_session_ended`)."""
    user = _user_of(identity)
    if user is None:
        if _holds_more_than_signing_in():
            _session_ended()
        else:
            # Left unwritten; but should this request write the session all the same (a
            # guest using the browser now: a deposit to pay, a request sent), the ended
            # identity goes, so what the guest writes is never taken for the account's.
            g.ended_identity = identity
    return user


def _user_of(identity: str) -> User | None:
    user_id, _, version = identity.partition(":")
    if not (user_id.isdigit() and version.isdigit()):
        return None
    if (until := session.get(REMEMBERED_UNTIL)) is not None and time.time() > until:
        # A session a remember cookie started ends with the cookie's 30 days, for good: the
        # account leaves it, so the cookie, refused and sent again, can't bring it back.
        session.pop("_user_id", None)
        return None
    user = db.session.get(User, int(user_id), bind_arguments={"primary": True})
    if user is None or not user.is_active or user.session_version != int(version):
        return None
    return user


# What signing in keeps in a session (Flask-Login's keys, when a remembered session ends, and
# the identity of the next guest bag, drawn at every sign-in: it names no bag made yet, since
# a signed-in browser fills the account's).
SIGNING_IN_KEYS = frozenset(SESSION_KEYS | {REMEMBERED_UNTIL, BAG_IDENTITY_KEY})


def _holds_more_than_signing_in() -> bool:
    """Whether an ended session holds anything besides who it was and its CSRF secret. One
    that doesn't is left as it is, unwritten: its identity opens nothing any more, and a
    request sent with it just before this browser signed out, or changed its password and
    was signed in again (a fragment loading as the button was pressed), would otherwise be
    answered with a cookie that overwrites the one that answer gave ("You are signed out."
    lost, or the browser signed out)."""
    field = current_app.config.get("WTF_CSRF_FIELD_NAME") or "csrf_token"
    return bool(session.keys() - SIGNING_IN_KEYS - {field})


def _session_ended() -> None:
    """The session named an account it no longer opens (ended on another device: signed
    out everywhere, a new password or email, the account closed or deactivated; or a
    remembered session past its 30 days): what the account left in it goes too, as on
    signing out (:func:`sign_out`), since the browser may be a shared computer's, and the
    next person a guest: the request it just sent (``bespoke_thanks``), the deposits it went
    to pay (``web.quotes.DEPOSITS_KEY``), a second factor. Its CSRF secret stays, so a form
    typed meanwhile is answered by the 401 page that holds what was typed, and a guest bag
    stays with its own cookie, as on signing out. Flask-Login's own keys go with the rest; a
    remember cookie naming the ended session is refused and deleted by
    ``extensions.LoginManager``, as before."""
    _start_afresh()
    _forget_pages()


def sign_in(user: User, remember: bool = False) -> None:
    """A fresh session for the signed-in user, so no earlier session id survives (no fixation).

    A guest cart (from its own cookie, which ``session.clear()`` leaves alone) joins the
    account's cart, and the shopper is told what was merged. The browser becomes a known device
    of the account, which the sign-in throttle never slows down. The pieces the guest viewed
    become the account's (their "Recently viewed" follows them).
    """
    _start_afresh()
    login_user(user, remember=remember, duration=current_app.config["REMEMBER_COOKIE_DURATION"])
    remember_device(user)
    merge_guest_cart(user)
    adopt_guest_views(user)


def _start_afresh() -> None:
    """Empty the session (no earlier id or account survives it) but for its CSRF secret: the
    forms open in the browser's other windows, and htmx's header, were drawn with it, and
    would all be refused, with what was typed in them, after signing in or out in one. The
    secret is no credential: it lives in this signed, HttpOnly ``__Host-`` cookie, which a
    page of another site can't send with its POST (``SameSite=Lax``). A guest bag made from
    now on is a new one, never one made before (``renew_bag_identity``)."""
    field = current_app.config.get("WTF_CSRF_FIELD_NAME") or "csrf_token"
    secret = session.get(field)
    session.clear()
    if secret:
        session[field] = secret
    renew_bag_identity()


def safe_next(target: str | None, default: str | None = None) -> str:
    """A same-site path to go to after signing in; anything else lands on the account page."""
    fallback = default or url_for("account.overview")
    if not target or any(char in target for char in "\\\r\n\t") or not target.startswith("/"):
        return fallback
    if target.startswith("//"):
        return fallback
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return fallback
    return target


def sign_out() -> None:
    """This browser is nobody again: the session is cleared first, then Flask-Login signs
    out, leaving in the new session its note to delete the remember cookie. The other way
    round the note is cleared away, and the cookie signs the browser straight back in.

    The answer also asks the browser to forget the shop's pages it holds: a shop page is
    ``private, no-cache`` and Back shows it from the browser's cache without asking, with the
    bag count, the hearts and "Recently viewed" of whoever was signed in (a shared computer)."""
    _start_afresh()
    logout_user()
    _forget_pages()


def _forget_pages() -> None:
    """The answer asks the browser to forget the shop's pages it holds (:func:`sign_out`)."""

    @after_this_request
    def forget_pages(response: Response) -> Response:
        response.headers["Clear-Site-Data"] = '"cache"'
        return response


def unauthorized() -> Response:
    """Send a visitor to sign in, then back here; htmx is told with ``HX-Redirect``.

    A form someone typed in is never lost: its session may have ended on another device (a
    new password, "sign out" there) while it was being written. Nothing is done, and a 401
    page holds what it sent (never a password) to copy, with the link to sign in and come
    back to the form's page; for htmx too, in place of the page (htmx would otherwise leave
    it for the sign-in page). A form that is only its button (delete, remove) goes to sign
    in as before."""
    reading = request.method in ("GET", "HEAD")
    target = request.full_path.rstrip("?") if reading else request.referrer
    login_url = url_for("auth.login", next=safe_next(same_site_path(target), default="/"))
    if not reading and (typed := typed_in_form()):
        return render_unsent(
            401,
            typed,
            heading="You were signed out",
            why="You were signed out, here or on another device, while this was being written",
            link=(login_url, "Sign in again"),
        )
    if is_htmx():
        return htmx_redirect(login_url)
    return redirect(login_url, 303)


# Ages are counted by the clock itsdangerous signs and checks with (a signer's, any key).
_SIGNATURE_CLOCK = TimestampSigner("only-its-clock-is-used")


class PublicAwareSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session, except that a response marked ``public`` (a static
    file, a drawing, the favicon) never says ``Vary: Cookie``. Flask adds it whenever the
    session was looked at, and Flask-Login looks after every request; but a public answer
    is by its own declaration the same for everyone, and that header would make a shared
    cache keep one copy per visitor. A response that sets a cookie keeps it.

    A cookie whose signature checked out is not checked again when it comes back
    (:mod:`elysium.web.signatures`); its age still is, on every request."""

    def __init__(self) -> None:
        self._verified = VerifiedValues()

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if not app.secret_key:
            return None
        raw = request.cookies.get(self.get_cookie_name(app))
        if not raw:
            return self.session_class()
        max_age = int(app.permanent_session_lifetime.total_seconds())
        checked = (app.secret_key, tuple(app.config["SECRET_KEY_FALLBACKS"] or ()), raw)
        found = self._verified.get(checked)
        if found is None:
            serializer = self.get_signing_serializer(app)
            assert serializer is not None  # there is a secret key
            try:
                # Its age is checked below, allowing for another server's clock.
                data, signed = serializer.loads(raw, return_timestamp=True)
            except BadSignature:
                return self.session_class()
            found = (int(signed.timestamp()), data)
            self._verified.put(checked, found)
        signed_at, data = found
        age = _SIGNATURE_CLOCK.get_timestamp() - signed_at
        if not -CLOCKS_APART_SECONDS <= age <= max_age:
            return self.session_class()  # too old, or signed far in the future
        return self.session_class(data)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        if session.modified and session.get("_user_id") == g.get("ended_identity", False):
            for key in SESSION_KEYS | {REMEMBERED_UNTIL}:
                session.pop(key, None)
        super().save_session(app, session, response)
        public = "public" in response.headers.get("Cache-Control", "").lower()
        if public and "Set-Cookie" not in response.headers:
            kept = [header for header in response.vary if header.lower() != "cookie"]
            response.vary = kept or None  # type: ignore[assignment]


def init_app(app: Flask) -> None:
    app.session_interface = PublicAwareSessionInterface()
    login_manager.init_app(app)
    login_manager.user_loader(load_user)
    login_manager.unauthorized_handler(unauthorized)
    login_manager.session_protection = "basic"
