"""The bag. (Lines, quantities and stock arrive with the bag issue; this is its page.)"""

from __future__ import annotations

from flask import Blueprint, Response, make_response, render_template

bp = Blueprint("cart", __name__, url_prefix="/cart")


@bp.app_context_processor
def bag_count() -> dict[str, int]:
    """The header's bag count. Zero until the bag issue gives bags lines."""
    return {"bag_count": 0}


@bp.get("")
def show() -> Response:
    response = make_response(render_template("cart/show.html"))
    response.headers["Cache-Control"] = "no-store"
    return response
