"""GET /art/<piece>/<metal>/<stone>.svg: one picture per piece, metal and stone; ``.png``:
the same picture rendered, for emails, link previews and search engines, which show no SVG.

Caching. The URL a page hands out carries the piece's fingerprint (``?v=``: a hash of its
template and of the palettes and stone sizes, ``elysium.web.artwork.fingerprint``), so a
picture asked for with the current fingerprint never changes under that URL and is sent
``immutable`` for a year, like a fingerprinted static file. Any other ``v`` (an old email after
the drawings changed, a hand-typed URL) still gets today's drawing, but only for the shop's
static max-age, since what that URL shows can change. Both carry an ETag, so a browser that
revalidates gets a 304 without the body.

The picture is drawn from the URL alone, never from the database: the metal must be one of
the palettes, the stone a sane weight (or ``none``) and the piece one of the drawings;
anything else is a 404.
"""

from __future__ import annotations

import hashlib

from flask import Blueprint, Response, abort, current_app, request

from elysium.extensions import limiter
from elysium.web.artwork import draw, fingerprint, raster

bp = Blueprint("art", __name__)

YEAR = 365 * 24 * 3600
# The SVG is shown as an image; opened on its own it may load nothing and run nothing.
SVG_POLICY = (
    "default-src 'none'; style-src 'none'; script-src 'none'; frame-ancestors 'none'; sandbox"
)


@bp.get("/art/<name>/<metal>/<stone>.svg")
def drawing(name: str, metal: str, stone: str) -> Response:
    svg = draw(name, metal, stone)
    if svg is None:
        abort(404)
    response = _picture(Response(svg, mimetype="image/svg+xml"), name)
    response.headers["Content-Security-Policy"] = SVG_POLICY
    return response.make_conditional(request)


# Each stone weight is its own picture, and rendering one costs tens of milliseconds: a
# client asking for many it hasn't got is slowed, not the shop. Mail clients and their image
# proxies, which fetch the PNGs, ask for a few at a time and keep them.
@bp.get("/art/<name>/<metal>/<stone>.png", endpoint="raster")
@limiter.limit("120/minute")
def raster_drawing(name: str, metal: str, stone: str) -> Response:
    png = raster(name, metal, stone)
    if png is None:
        abort(404)
    return _picture(Response(png, mimetype="image/png"), name).make_conditional(request)


def _picture(response: Response, name: str) -> Response:
    """A picture's caching: immutable for a year under its current fingerprint."""
    response.set_etag(hashlib.sha256(response.get_data()).hexdigest()[:20])
    response.cache_control.public = True
    if request.args.get("v") == fingerprint(name):
        response.cache_control.max_age = YEAR
        response.cache_control.immutable = True
    else:
        response.cache_control.max_age = current_app.get_send_file_max_age(None) or 0
    return response
