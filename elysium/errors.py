"""Error pages in the shop's look; htmx gets a small fragment in the messages region."""

from __future__ import annotations

import contextlib
import math
import time
from urllib.parse import parse_qsl

from flask import Flask, Response, current_app, g, make_response, render_template, request
from flask_limiter import RequestLimit
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import DBAPIError, OperationalError, PendingRollbackError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm.exc import ObjectDeletedError, StaleDataError
from werkzeug.exceptions import HTTPException, InternalServerError

from elysium.extensions import db, limiter, login_manager
from elysium.htmx import is_htmx
from elysium.logs import logged_path, request_id

MESSAGES = {
    400: ("This request could not be understood", "Please go back and try again."),
    403: ("You can't open this page", "If you think you should, please sign in again."),
    404: ("We couldn't find that page", "It may have moved, or the piece is no longer offered."),
    405: ("That isn't allowed here", "This page can't be used that way."),
    409: ("That changed meanwhile", "Please go back and try again."),
    413: ("That was too large", "Please send something smaller."),
    415: ("That isn't a form we can read", "Please go back and send the form again."),
    429: ("Too many attempts", "Please wait a moment and try again."),
    500: ("Something went wrong on our side", "We have been told. Please try again shortly."),
    503: (
        "We'll be back in a moment",
        "The shop is briefly unavailable. Please try again shortly.",
    ),
}
FORM_EXPIRED = (
    "This page had expired before the form was sent (its session ended meanwhile). Please "
    "reload the page and send it again."
)
GONE_MEANWHILE = (
    "What this page was about was changed or removed meanwhile (in another window, perhaps). "
    "Please start again."
)
# What a 503 asks a client to wait before trying again while the database is unreachable.
DATABASE_RETRY_AFTER_SECONDS = 5
# SQLAlchemy's code for using a connection that was lost inside the transaction.
LOST_CONNECTION = "8s2b"


def seconds_until_reset(request_limit: RequestLimit) -> int:
    return max(math.ceil(request_limit.reset_at - time.time()), 1)


def wait_message(request_limit: RequestLimit) -> str:
    """E.g. "Too many attempts. Please try again in 40 seconds" (in minutes beyond 90 s)."""
    seconds = seconds_until_reset(request_limit)
    when = f"{seconds} seconds" if seconds < 90 else f"{math.ceil(seconds / 60)} minutes"
    return f"Too many attempts. Please try again in {when}."


# The fields a page puts in its forms (tokens, what the page showed), not what anyone typed.
NOT_TYPED = frozenset(
    {
        "csrf_token",
        "homepage",
        "request_key",
        "attention_seen",
        "refunds_seen",
        "newest_seen",
        "seen",
        "seen_stock",
        "seen_threshold",
        "nonce",
        "next",
        "tab",
        "bag_as_shown",
        "add_to_bag_state",
        "intent",
        "piece",
        "product",
        "scope",
        "slug",
        "started",
    }
)


def typed_in_form() -> list[tuple[str, str]]:
    """What a form sent that someone typed or chose, as (label, text): each field not hidden,
    not a password and not empty, under its name made readable ("valid_until": "Valid
    until"), without NULs; nothing for a request that sends no form."""
    if request.method != "POST":
        return []
    typed = [
        (name.replace("_", " ").capitalize(), value.replace("\x00", ""))
        for name, value in _form_items()
        if isinstance(name, str) and name not in NOT_TYPED and "password" not in name
    ]
    return [(label, text) for label, text in typed if text.strip()]


def _form_items() -> list[tuple[str, str]]:
    """The form's fields as sent, bytes that aren't UTF-8 read as U+FFFD: Werkzeug reads an
    urlencoded body holding such raw bytes as no form at all."""
    if request.mimetype == "application/x-www-form-urlencoded":
        body = request.get_data(cache=True).decode("utf-8", "replace")
        return parse_qsl(body, keep_blank_values=True, errors="replace")
    return list(request.form.items(multi=True))


def render_unsent(
    status: int, typed: list[tuple[str, str]], *, heading: str, why: str, link: tuple[str, str]
) -> Response:
    """A form that can't be acted on (a quote written over half an hour, an idea typed with a
    character we can't read): nothing of it was done, and the page that says why holds what it
    sent, to copy, and nothing else of the page it came from."""
    page = render_template("errors/unsent.html", unsent=typed, heading=heading, why=why, link=link)
    response = make_response(page, status)
    response.headers["Cache-Control"] = "no-store"
    if is_htmx():  # the whole page, not the panel the form would have replaced
        response.headers["HX-Retarget"] = "body"
        response.headers["HX-Reswap"] = "innerHTML"
    return response


def render_error(status: int, detail: str | None = None) -> Response:
    try:
        return _drawn_error(status, detail)
    except SQLAlchemyError as error:
        # The page's header reads the account and the bag: with the database down (or the
        # account's row deleted under the request), a signed-in visitor's 404 or expired form
        # would become a 500. It is drawn as for a guest instead.
        current_app.logger.warning("The %s page was drawn as for a guest: %s", status, error)
        try:
            db.session.rollback()
        except SQLAlchemyError:
            db.session.remove()
        drawn_as_for_a_guest()
        return _drawn_error(status, detail)


def _drawn_error(status: int, detail: str | None) -> Response:
    title, hint = MESSAGES.get(status, (f"Error {status}", "Please try again."))
    # The reference is the request id, which the logs and any Sentry report carry too.
    context = {"status": status, "title": title, "hint": detail or hint, "reference": request_id()}
    if is_htmx():
        response = make_response(render_template("partials/_error.html", **context), status)
        response.headers["HX-Retarget"] = "#messages"
        response.headers["HX-Reswap"] = "innerHTML"
    else:
        response = make_response(render_template("errors/error.html", **context), status)
    response.vary.add("HX-Request")
    # Drawn for this visitor (their CSRF token, their header): no cache keeps it.
    response.headers["Cache-Control"] = "no-store"
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

    @app.errorhandler(CSRFError)
    def handle_expired_form(error: CSRFError) -> Response:
        """A form whose CSRF token this session no longer knows: says so, rather than that
        the request could not be understood (with htmx the form stays on the page)."""
        app.logger.info("CSRF refused %s %s: %s", request.method, logged_path(), error.description)
        return render_error(400, FORM_EXPIRED)

    @app.errorhandler(InternalServerError)
    def handle_server_error(error: InternalServerError) -> Response:
        # Flask has already logged the original exception with its traceback. A database
        # that went away meanwhile must not turn the 500 page into the server's bare one.
        try:
            db.session.rollback()
        except SQLAlchemyError:
            db.session.remove()
        return render_error(500)

    @app.errorhandler(DBAPIError)
    @app.errorhandler(PendingRollbackError)
    @app.errorhandler(PoolTimeoutError)
    def handle_database_error(error: SQLAlchemyError) -> Response:
        if not database_unavailable(error):
            raise error  # a fault of ours: logged with its traceback, and the 500 page
        app.logger.warning(
            "Database unavailable (%s %s): %s",
            request.method,
            logged_path(),
            getattr(error, "orig", None) or error,
        )
        return unavailable_page()

    @app.errorhandler(ObjectDeletedError)
    @app.errorhandler(StaleDataError)
    def handle_row_deleted_meanwhile(error: SQLAlchemyError) -> Response:
        """A row this request had read was deleted by another before it was read or written
        again (the account closed in another tab as this one checked out or saved the
        profile, an address deleted in one window as another edits it): the request is
        over, with a 409 page that says so, never a 500. Whoever is signed in is read again on the
        next request (a closed account is signed out then)."""
        app.logger.info("A row was deleted under %s %s: %s", request.method, logged_path(), error)
        with contextlib.suppress(SQLAlchemyError):
            db.session.rollback()
        drawn_as_for_a_guest()  # the account may be the row gone
        return render_error(409, GONE_MEANWHILE)

    @app.teardown_appcontext
    def end_database_session(_error: BaseException | None) -> None:
        """End the request's database session (rolling back what it left open) before
        Flask-SQLAlchemy's own teardown does: a connection lost after the last statement must
        not turn a request that was answered into the server's bare 500."""
        try:
            db.session.remove()
        except SQLAlchemyError as error:
            app.logger.warning("Database connection lost at the end of the request: %s", error)
            db.session.remove()  # the lost connection is now discarded: this one succeeds


def database_unavailable(error: SQLAlchemyError) -> bool:
    """The database could not be reached or lost the connection (it is down, restarting,
    refusing more connections), or every pooled connection stayed busy: nothing is wrong with
    the request, and the same request can succeed in a moment."""
    if isinstance(error, OperationalError | PoolTimeoutError):
        return True
    if isinstance(error, PendingRollbackError):
        # The connection was lost earlier in the request, where the error was caught (the
        # header's bag count does that): SQLAlchemy's "can't reconnect until rolled back".
        return error.code == LOST_CONNECTION
    return isinstance(error, DBAPIError) and error.connection_invalidated


def drawn_as_for_a_guest() -> None:
    """The error page about to be drawn shows nobody's account and bag: its header would read
    them from the database, which is down or has lost the account's row."""
    g._login_user = login_manager.anonymous_user()  # what flask_login's current_user reads
    g.setdefault("cart_count", 0)  # elysium.web.cart.cart_count would ask the database


def unavailable_page() -> Response:
    """503 with ``Retry-After``, drawn without the database: the session's transaction is
    rolled back (nothing half-done is kept), the page is drawn as for a guest (loading the
    account would need the database) and the bag count is left out."""
    with contextlib.suppress(SQLAlchemyError):
        db.session.rollback()
    drawn_as_for_a_guest()
    response = render_error(503)
    response.headers["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
    response.headers["Cache-Control"] = "no-store"
    return response
