"""Pages for machines: health check, robots.txt and the sitemap."""

from __future__ import annotations

from flask import Blueprint, Response, make_response, render_template
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


@bp.get("/sitemap.xml")
def sitemap() -> Response:
    collections, products = sitemap_entries(db.session)
    response = make_response(
        render_template("sitemap.xml", collections=collections, products=products)
    )
    response.mimetype = "application/xml"
    return response
