"""Pages for machines: health check, robots.txt, the sitemap and /favicon.ico."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, current_app, make_response, render_template, request
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from elysium.extensions import db
from elysium.services.catalog import sitemap_entries
from elysium.urls import absolute_url

bp = Blueprint("site", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """For the load balancer: 200 when the database answers, 503 when it does not.

    It answers whatever host the request names (see ``elysium.urls.ANY_HOST_ENDPOINTS``).
    """
    try:
        db.session.execute(text("SELECT 1"))
    except SQLAlchemyError:
        db.session.rollback()
        response = make_response({"status": "unavailable", "database": "unreachable"}, 503)
    else:
        response = make_response({"status": "ok", "database": "ok"}, 200)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/robots.txt")
def robots() -> Response:
    lines = [
        "User-agent: *",
        "Disallow: /cart",
        "Disallow: /checkout",
        "Disallow: /account",
        "Disallow: /auth/",
        "Disallow: /staff",
        "Disallow: /wishlist",
        "Disallow: /shop/*/price",
        f"Sitemap: {absolute_url('site.sitemap')}",
    ]
    response = make_response("\n".join(lines) + "\n")
    response.mimetype = "text/plain"
    return response


@bp.get("/favicon.ico")
def favicon() -> Response:
    """Browsers ask for it on every first visit, whatever the page's <link rel="icon"> says.
    Its URL never changes with its content, so it is kept for a day (and revalidated by its
    ETag), not for ever. A few hundred bytes: read whole, so no file is left open."""
    assert current_app.static_folder is not None
    icon = Path(current_app.static_folder, "img", "favicon.ico").read_bytes()
    response = make_response(icon)
    response.mimetype = "image/x-icon"
    response.cache_control.public = True
    response.cache_control.max_age = 86400
    response.add_etag()
    return response.make_conditional(request)


@bp.get("/sitemap.xml")
def sitemap() -> Response:
    collections, products = sitemap_entries(db.session)
    response = make_response(
        render_template("sitemap.xml", collections=collections, products=products)
    )
    response.mimetype = "application/xml"
    return response
