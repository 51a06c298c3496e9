"""Revalidating the shop window: home, the listing, collections and product pages answer
``If-None-Match`` with a 304 when the page the browser holds is still right for that visitor.

These pages are public, but each rendering is one visitor's: it carries their CSRF token (in
every form and in ``hx-headers``), their bag count, whether they are signed in, their
recently viewed pieces. So the page is rendered as usual, and its ETag is a keyed hash of
what was rendered, with two changes:

- the CSRF token as signed for this request is taken out. Flask-WTF signs a timestamp into
  it, so its text changes every second, but with ``WTF_CSRF_TIME_LIMIT = None`` any token
  signed for the same session secret stays valid (``flask_wtf.csrf.validate_csrf`` checks
  the signature and compares what it carries with the session's secret, never its age);
- the session's CSRF secret (the raw token the signed ones carry) is put in, together with
  the key that signs the tokens. The ETag only matches for the session whose tokens the
  held page carries, and no longer matches once that session's secret (or the key) changes.

The ETag has two halves: that hash, and one of the page without any secret. A request is
matched by the first half, except one from a client that keeps no cookies (no ``Cookie``
header, and not a browser's by its user agent: a crawler, a script, ``web.browsing.is_a_script``;
a browser's prefetch or HEAD is a browser's too). Such a
client gets a new session and token every time, so the first half never matched for it; it
is matched by the second, since the token of a session it won't send back is as useless in
the copy it holds as in a new one. A browser that comes back without its session (closed,
cookies cleared) is never matched by the second half: the copy it holds carries a token of
the session it lost, and its first form would be refused. A browser's first page, which made
its session, is matched by the first half once it sends the cookie.

Anything else a visitor sees (a price, the bag count, signing in, a message) is in the page,
so it changes the ETag too. The hash is keyed, so nobody can work out another visitor's ETag.
The pages are sent ``Cache-Control: private, no-cache`` (a browser keeps them but asks every
time; a shared cache never keeps them) with ``Vary: Cookie``, and the ETag is weak: the bytes
differ from one rendering to the next (the token), what they mean does not. A 304 saves the
bytes on the wire, not the rendering.
"""

from __future__ import annotations

import hashlib
import hmac

from flask import Response, current_app, g, request, session

from elysium.web.browsing import is_a_script

PAGES = frozenset({"shop.home", "shop.listing", "shop.collection", "shop.product"})


def _csrf_settings() -> tuple[str, bytes]:
    """The name Flask-WTF keeps its token under (in ``g`` and the session), and its key."""
    config = current_app.config
    field = config.get("WTF_CSRF_FIELD_NAME") or "csrf_token"
    key = config.get("WTF_CSRF_SECRET_KEY") or current_app.secret_key or ""
    return field, key if isinstance(key, bytes) else str(key).encode()


def page_etag(body: bytes) -> str:
    """The page's ETag: what it shows for whom, then what it shows (the module's docstring)."""
    field, key = _csrf_settings()
    signed = g.get(field)
    if isinstance(signed, str) and signed:
        body = body.replace(signed.encode(), b"")
    anyone = hmac.new(key, b"\0", digestmod=hashlib.sha256)
    anyone.update(body)
    for_whom = hmac.new(key, str(session.get(field, "")).encode(), digestmod=hashlib.sha256)
    for_whom.update(b"\0")
    for_whom.update(body)
    return for_whom.hexdigest()[:HALF] + anyone.hexdigest()[:HALF]


HALF = 16


def held_copy_matches(etag: str) -> str | None:
    """The ETag the request sent (``If-None-Match``) that stands for the page now drawn, if
    any: by its first half, or by its second for a client that keeps no cookies."""
    keeps_none = "HTTP_COOKIE" not in request.environ and is_a_script()
    half = slice(HALF, 2 * HALF) if keeps_none else slice(0, HALF)
    for held in request.if_none_match.as_set(include_weak=True):
        # A header is anyone's: compare_digest refuses text outside ASCII (a 500 before), and
        # Werkzeug reads an empty entity-tag ("") as None (a 500 too).
        if not isinstance(held, str) or len(held) != 2 * HALF or not held.isascii():
            continue
        if hmac.compare_digest(held[half], etag[half]):
            return held
    return None


# A request carrying none of these gets the page as it is: nothing to compare or cut.
CONDITIONAL_HEADERS = (
    "HTTP_IF_NONE_MATCH",
    "HTTP_IF_MATCH",
    "HTTP_IF_MODIFIED_SINCE",
    "HTTP_IF_UNMODIFIED_SINCE",
    "HTTP_RANGE",
)


def revalidate(response: Response) -> Response:
    """The after-request hook: tag the shop window's pages and answer a matching
    ``If-None-Match`` with 304. Other pages, other methods and other statuses are untouched.

    Every page of the shop window passes here, so the usual case (no ``Cache-Control`` or
    ``Vary`` yet, no conditional header) writes its headers as text instead of through
    Werkzeug's parsed header objects, which cost more than the hash."""
    if request.endpoint not in PAGES or request.method not in ("GET", "HEAD"):
        return response
    if response.status_code != 200 or response.direct_passthrough or response.is_streamed:
        return response
    headers = response.headers
    if "Cache-Control" in headers:
        if response.cache_control.no_store:
            return response
        response.cache_control.private = True
        response.cache_control.no_cache = True
    else:
        headers["Cache-Control"] = "private, no-cache"
    if "Vary" in headers:
        response.vary.add("Cookie")
    else:
        headers["Vary"] = "Cookie"
    etag = page_etag(response.get_data())
    environ = request.environ
    if any(name in environ for name in CONDITIONAL_HEADERS):
        # The held copy's own ETag goes back with its 304, so the browser keeps what it holds.
        response.set_etag(held_copy_matches(etag) or etag, weak=True)
        return response.make_conditional(request)
    response.set_etag(etag, weak=True)
    return response
