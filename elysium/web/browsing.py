"""Browsing memory in the request: who is looking (the account, or the guest's visitor
cookie), whether it is a person at all, and recording a product page's view without ever
slowing or breaking the page. The rules live in :mod:`elysium.services.views`.

A guest is known by a random id in a signed, HttpOnly, SameSite=Lax cookie
(``elysium_visitor``; ``__Host-elysium_visitor`` in production, as every cookie of the shop's:
see ``config.cookie_name``). It names nobody and opens nothing; it is sent with a product page
only, and lasts ``VISITOR_COOKIE_DAYS`` after the last one. Robots, ``HEAD`` requests and
prefetches get neither a cookie nor a row.
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime

from flask import Response, current_app, g, request
from flask_login import current_user
from itsdangerous import BadData, URLSafeSerializer

from elysium.config import cookie_name
from elysium.extensions import db
from elysium.models.users import User
from elysium.services import views
from elysium.services.catalog import ProductCard
from elysium.web.fragments import cards_to_show, read_with_version

COOKIE = "elysium_visitor"
SALT = "elysium.browsing.visitor"
VISITOR_COOKIE_DAYS = 180  # as long as views are kept (``flask analytics prune``)
# The request's WSGI environ keys (not ``g``, which a test's several requests may share): the
# piece on screen's slug and when the visitor last saw it, as "Recently viewed" read it; the
# slug and what "Recently viewed" read before the page (``read_recently_viewed_first``).
LAST_SEEN = "elysium.last_seen"
RECENT = "elysium.recently_viewed"
VISITOR = "elysium.visitor"

# Obvious robots and link previews, by what their user agent says about itself.
ROBOT = re.compile(
    r"bot|crawl|spider|slurp|preview|headless|lighthouse|facebookexternalhit|embedly|"
    r"scrap|python-|curl/|wget|httpclient|go-http|okhttp|java/|monitor|pingdom|phantomjs",
    re.IGNORECASE,
)


def _serializer(name: str) -> URLSafeSerializer:
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt=f"{SALT}:{name}")


def _cookie_name() -> str:
    return cookie_name(COOKIE, secure=current_app.config["SESSION_COOKIE_SECURE"])


def this_visitor() -> str | None:
    """The guest's visitor id from their cookie; a missing or tampered one is none (checked
    once per request)."""
    environ = request.environ
    if VISITOR not in environ:
        environ[VISITOR] = _visitor_from_cookie()
    return environ[VISITOR]


def _visitor_from_cookie() -> str | None:
    name = _cookie_name()
    raw = request.cookies.get(name)
    if not raw:
        return None
    try:
        visitor = _serializer(name).loads(raw)
    except BadData:
        return None
    if not isinstance(visitor, str) or not 0 < len(visitor) <= views.MAX_VISITOR_LENGTH:
        return None
    return visitor


def _visitor_for_request() -> str | None:
    """The guest's id: from their cookie, else a new one for this request (a person only;
    a product page sends it in the cookie)."""
    visitor = this_visitor()
    if visitor is None and is_a_person():
        visitor = g.get("new_visitor") or secrets.token_urlsafe(16)
        g.new_visitor = visitor
    return visitor


def is_a_script() -> bool:
    """The client says it is no browser (a crawler, a script, a monitor), or says nothing."""
    agent = request.user_agent.string
    return not agent or bool(ROBOT.search(agent))


def is_a_person() -> bool:
    """A plain GET from a browser: not a robot, not a ``HEAD``, not a prefetch or prerender."""
    if request.method != "GET" or is_a_script():
        return False
    purpose = " ".join(
        request.headers.get(header, "") for header in ("Sec-Purpose", "Purpose", "X-Moz")
    ).lower()
    return "prefetch" not in purpose and "prerender" not in purpose


def record_product_view(product_id: int, slug: str, response: Response) -> None:
    """After a product page is rendered: record the view (the one write a GET may make).

    A page changes nothing: should anything in the session have changed, it is rolled back
    first, so the commit carries this insert alone. Any failure is logged and swallowed: the
    page is already rendered and is sent as it is. A guest without a visitor id gets one, in
    the cookie sent with this page. A repeat that the page's "Recently viewed" already saw
    costs nothing (``views.record_view``): nothing is written, so nothing is committed (the
    request's end rolls back whatever the check began).
    """
    if not is_a_person():
        return
    user_id: int | None = current_user.id if current_user.is_authenticated else None
    visitor: str | None = None
    if user_id is None:
        visitor = _visitor_for_request()
        name = _cookie_name()
        # The cookie that came, when it holds this visitor: the signature is the same text.
        raw = request.cookies.get(name) if this_visitor() == visitor else None
        response.set_cookie(
            name,
            raw or _serializer(name).dumps(visitor),
            max_age=VISITOR_COOKIE_DAYS * 24 * 3600,
            path="/",
            secure=current_app.config["SESSION_COOKIE_SECURE"],
            httponly=True,
            samesite="Lax",
        )
    try:
        if db.session.new or db.session.dirty or db.session.deleted:
            db.session.rollback()  # never commit anything else with the view
        if views.record_view(
            db.session, product_id, user_id=user_id, visitor=visitor, last_seen=_last_seen(slug)
        ):
            db.session.commit()
    except Exception:
        current_app.logger.exception("Could not record a view of product %s", product_id)
        try:
            db.session.rollback()
        except Exception:
            current_app.logger.exception("Could not roll back after a failed view")


def adopt_guest_views(user: User) -> None:
    """On sign-in: the guest's views become the account's (the cookie stays: it names no
    one, and views made after signing out are a new guest's until the next sign-in).

    Commits its own change: it runs after the sign-in itself has been committed. A failure is
    logged; the sign-in stands.
    """
    visitor = this_visitor()
    if visitor is None:
        return
    try:
        views.adopt_guest_views(db.session, visitor, user.id)
        db.session.commit()
    except Exception:
        current_app.logger.exception("Could not move a guest's views to their account")
        db.session.rollback()


def _viewer() -> dict[str, object]:
    """Whose "Recently viewed" this request shows: the account's, else the guest's."""
    if current_user.is_authenticated:
        return {"user_id": current_user.id}
    return {"visitor": _visitor_for_request()}


def read_recently_viewed_first(on_screen: str | None = None) -> None:
    """Before a page that shows "Recently viewed" reads anything (a product page, whose piece
    is ``on_screen``, or the bag): the list (drawn in the page for a browser without
    JavaScript; on a product page it also tells whether this view is a repeat), read in the
    statement that reads the catalogue's version and the bag count (``fragments.
    read_with_version``), one round trip for the three. :func:`recently_viewed` then shows it."""
    query = views.recently_viewed_query(**_viewer())
    if query is None:
        return
    statement, parameters = query
    recent = views.recent_from_rows(read_with_version(statement, parameters), on_screen)
    request.environ[RECENT] = (on_screen, recent)
    request.environ[LAST_SEEN] = (on_screen, recent.last_seen)


def recently_viewed(exclude: str | None = None) -> list[ProductCard]:
    """The current visitor's recently viewed pieces, as cards (a template global, for the
    partial): their ids in one small query (or as :func:`read_recently_viewed_first` read
    them), each card kept per catalogue version (``web.fragments.cards_to_show``).

    A newcomer is asked about too (under the id their first product page will give them), so
    a page costs the same queries whatever the visitor's history; a robot is not.
    """
    on_screen, recent = request.environ.get(RECENT, (None, None))
    if recent is None or on_screen != exclude:
        recent = views.recently_viewed(db.session, **_viewer(), on_screen=exclude)
        if exclude is not None:
            request.environ[LAST_SEEN] = (exclude, recent.last_seen)
    return cards_to_show(recent.ids)


def _last_seen(slug: str) -> datetime | None:
    """When the visitor last saw the piece ``slug``, if this request's "Recently viewed" has
    just read it (the page's <noscript> copy, drawn before the view is recorded)."""
    on_screen, when = request.environ.get(LAST_SEEN, (None, None))
    return when if on_screen == slug else None
