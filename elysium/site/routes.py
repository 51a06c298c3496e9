"""Pages for machines: health check, robots.txt, the sitemap and /favicon.ico."""

from __future__ import annotations

from pathlib import Path

import redis
from flask import Blueprint, Response, current_app, make_response, render_template, request
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from elysium.config import REDIS_TIMEOUT_SECONDS
from elysium.db_routing import replica_state
from elysium.extensions import db
from elysium.services.catalog import sitemap_entries
from elysium.urls import absolute_url

bp = Blueprint("site", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """For the load balancer: 200 when the database answers, 503 when it does not.

    Redis is reported too, but a Redis that doesn't answer leaves the answer 200 ("degraded"):
    the shop keeps selling without it (rate limits count in each process meanwhile), and
    taking every server out of the pool for it would close the shop. So is the read replica,
    as this process last found it (``db_routing.replica_state``): failing or behind, it leaves
    the answer 200 too (the primary serves meanwhile). It answers whatever host the request
    names (see ``elysium.urls.ANY_HOST_ENDPOINTS``).
    """
    try:
        db.session.execute(text("SELECT 1"))
    except SQLAlchemyError:
        db.session.rollback()
        database = "unreachable"
    else:
        database = "ok"
    body = {"status": "ok", "database": database}
    if current_app.config.get("REDIS_URL"):
        body["redis"] = "ok" if redis_answers() else "unreachable"
    if (replica := replica_state()) is not None:
        body["replica"] = replica
    if database != "ok":
        body["status"] = "unavailable"
    elif body.get("redis") == "unreachable":
        body["status"] = "degraded"
    response = make_response(body, 503 if database != "ok" else 200)
    response.headers["Cache-Control"] = "no-store"
    return response


def redis_answers() -> bool:
    """Whether Redis at ``REDIS_URL`` answers a PING within ``REDIS_TIMEOUT_SECONDS``."""
    client = current_app.extensions.get("elysium.health_redis")
    if client is None:
        client = redis.Redis.from_url(
            current_app.config["REDIS_URL"],
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        )
        current_app.extensions["elysium.health_redis"] = client
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


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
