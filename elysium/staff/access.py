"""Who may open a staff page: a member of staff, signed in, who passed the second factor in
this session within the last 12 hours and has not been idle for 30 minutes
(:mod:`elysium.web.staff_session` keeps those times).

Guests are sent to sign in; anyone signed in who is not staff gets the same 404 as for a page
that doesn't exist (the back office doesn't announce itself). A staff member who has not
passed the second factor (or not recently) is sent to it. The role is read from the database
on every request, and the session names the account's session version, so revoking a member
of staff (``flask revoke-staff``) closes their open sessions at once.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import (
    Response,
    abort,
    current_app,
    flash,
    redirect,
    request,
    session,
    url_for,
)
from flask_login import current_user

from elysium.errors import render_unsent, typed_in_form
from elysium.htmx import htmx_redirect, is_htmx
from elysium.models.types import utcnow
from elysium.urls import same_site_path
from elysium.web.sign_in import safe_next, sign_out, unauthorized
from elysium.web.staff_session import (
    IDLE_LIMIT,
    LAST_SEEN,
    age,
    earned_by_this_account,
    passed_second_factor,
)

STAFF_HOME = "/staff"


def _idled_out() -> bool:
    """A staff session of this account that has seen no staff page for 30 minutes."""
    seen = age(LAST_SEEN)
    return earned_by_this_account() and seen is not None and seen > IDLE_LIMIT.total_seconds()


def _go(location: str) -> Response:
    return htmx_redirect(location) if is_htmx() else redirect(location, 303)


def _here() -> str:
    """Where to come back to: this page, or for a form the page it was sent from."""
    if request.method == "GET":
        return request.full_path.rstrip("?")
    return safe_next(same_site_path(request.referrer), default=STAFF_HOME)


def _sign_out_idle_session() -> Response:
    """Signed out, and sent to sign in again; a form gets what it sent shown back
    (:func:`_shown_back`)."""
    typed = typed_in_form()
    sign_out()
    sign_in_url = url_for("auth.login", next=_here())
    if typed:
        return _shown_back(
            typed,
            heading="You were signed out",
            why="After 30 minutes without activity in the back office you were signed out",
            link=(sign_in_url, "Sign in again"),
        )
    flash("You were signed out after 30 minutes without activity in the back office.")
    return _go(sign_in_url)


def _signed_out_meanwhile() -> Response:
    """Nobody signed in: to sign in, then back. A form gets what it sent shown back
    (:func:`_shown_back`): the session may have ended in another window (an idle page
    there signed it out) while this one was being written."""
    if typed := typed_in_form():
        return _shown_back(
            typed,
            heading="You were signed out",
            why="You were signed out of the back office while this was being written",
            link=(url_for("auth.login", next=_here()), "Sign in again"),
        )
    return unauthorized()


def _to_second_factor() -> Response:
    """To the second factor, then back; a form gets what it sent shown back
    (:func:`_shown_back`): the 12 hours may end while staff write a quote."""
    location = url_for("staff.security.second_factor", next=_here())
    if typed := typed_in_form():
        return _shown_back(
            typed,
            heading="Your code is needed again",
            why="The back office asks for the code from your authenticator app every 12 hours",
            link=(location, "Enter your code"),
        )
    return _go(location)


def _shown_back(typed: list[tuple[str, str]], *, heading: str, why: str, link: tuple) -> Response:
    """The form's page shown back, with nothing else of the back office (403)."""
    return render_unsent(403, typed, heading=heading, why=why, link=link)


def require_staff(*, second_factor: bool = True) -> Response | None:
    """The check every staff request passes first (registered on the staff blueprint).

    ``second_factor=False`` is for the second factor's own pages: they need the role only.
    """
    if not current_user.is_authenticated:
        return _signed_out_meanwhile()
    if not current_user.is_staff:
        abort(404)
    if _idled_out():
        return _sign_out_idle_session()
    if not second_factor:
        return None
    if not passed_second_factor():
        return _to_second_factor()
    view = current_app.view_functions.get(request.endpoint or "")
    if getattr(view, "staff_activity", True):
        session[LAST_SEEN] = utcnow().timestamp()
    return None


def not_activity(view: Callable[..., Any]) -> Callable[..., Any]:
    """For a request a timer makes rather than a person (a polling refresh): it is checked
    like any other, but does not restart the 30 minutes before an idle sign-out."""
    view.staff_activity = False  # type: ignore[attr-defined]
    return view


def second_factor_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """For a page among the second factor's own that is a staff page like any other."""

    @wraps(view)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if (refusal := require_staff()) is not None:
            return refusal
        return view(*args, **kwargs)

    return guarded
