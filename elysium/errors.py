"""Error pages in the shop's look; htmx gets a small fragment in the messages region."""

from __future__ import annotations

import math
import time

from flask import Flask, Response, make_response, render_template
from flask_limiter import RequestLimit
from werkzeug.exceptions import HTTPException, InternalServerError

from elysium.extensions import db, limiter
from elysium.htmx import is_htmx

MESSAGES = {
    400: ("This request could not be understood", "Please go back and try again."),
    403: ("You can't open this page", "If you think you should, please sign in again."),
    404: ("We couldn't find that page", "It may have moved, or the piece is no longer offered."),
    405: ("That isn't allowed here", "This page can't be used that way."),
    413: ("That was too large", "Please send something smaller."),
    429: ("Too many attempts", "Please wait a moment and try again."),
    500: ("Something went wrong on our side", "We have been told. Please try again shortly."),
}


def seconds_until_reset(request_limit: RequestLimit) -> int:
    return max(math.ceil(request_limit.reset_at - time.time()), 1)


def wait_message(request_limit: RequestLimit) -> str:
    """E.g. "Too many attempts. Please try again in 40 seconds" (in minutes beyond 90 s)."""
    seconds = seconds_until_reset(request_limit)
    when = f"{seconds} seconds" if seconds < 90 else f"{math.ceil(seconds / 60)} minutes"
    return f"Too many attempts. Please try again in {when}."


def render_error(status: int, detail: str | None = None) -> Response:
    title, hint = MESSAGES.get(status, (f"Error {status}", "Please try again."))
    context = {"status": status, "title": title, "hint": detail or hint}
    if is_htmx():
        response = make_response(render_template("partials/_error.html", **context), status)
        response.headers["HX-Retarget"] = "#messages"
        response.headers["HX-Reswap"] = "innerHTML"
    else:
        response = make_response(render_template("errors/error.html", **context), status)
    response.vary.add("HX-Request")
    return response


def register(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def handle_http_error(error: HTTPException) -> Response:
        if error.response is not None:
            return error.response  # a view already drew this error (e.g. a form's 429)
        if error.code == 429 and (current := limiter.current_limit) is not None:
            response = render_error(429, wait_message(current))
            response.headers["Retry-After"] = str(seconds_until_reset(current))
            return response
        response = render_error(error.code or 500)
        if error.code == 405 and error.valid_methods:
            response.headers["Allow"] = ", ".join(error.valid_methods)
        return response

    @app.errorhandler(InternalServerError)
    def handle_server_error(error: InternalServerError) -> Response:
        # Flask has already logged the original exception with its traceback.
        db.session.rollback()
        return render_error(500)
