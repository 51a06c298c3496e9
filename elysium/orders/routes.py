"""An order's page for a guest, reached through the signed link in their emails."""

from __future__ import annotations

from flask import Blueprint, Response, abort, make_response, render_template, request

from elysium.extensions import db
from elysium.security import keep_the_address_here
from elysium.services import orders

bp = Blueprint("orders", __name__, url_prefix="/orders")


@bp.get("/<number>")
def detail(number: str) -> Response:
    """Anyone without the right token gets the same 404 as for an order that doesn't exist."""
    token = request.args.get("token", "")
    order = orders.order_for_guest_token(db.session, number, token) or abort(404)
    response = make_response(render_template("orders/guest.html", order=order))
    response.headers["Cache-Control"] = "no-store"
    keep_the_address_here(response)
    return response
