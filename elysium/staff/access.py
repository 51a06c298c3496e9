"""Who may open a staff page: a member of staff, signed in, who passed the second factor in
this session within the last 12 hours and has not been idle for 30 minutes.

Guests are sent to sign in; anyone signed in who is not staff gets the same 404 as for a page
that doesn't exist (the back office doesn't announce itself). A staff member who has not
passed the second factor (or not recently) is sent to it. The role is read from the database
on every request, and the session names the account's session version, so revoking a member
of staff (``flask revoke-staff``) closes their open sessions at once.

The times live in the signed session cookie as UTC timestamps, next to the account they were
earned by: a shopper session promoted to staff, or a session of someone else, has none, and a
copy of an old cookie carries its own old times. The clock is
:func:`elysium.models.types.utcnow`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from functools import wraps
from typing import Any

from flask import Response, abort, current_app, flash, redirect, request, session, url_for
from flask_login import current_user

from elysium.htmx import htmx_redirect, is_htmx
from elysium.models.types import utcnow
from elysium.web.sign_in import safe_next, same_site_path, sign_out, unauthorized

SECOND_FACTOR_AT = "staff_second_factor_at"
SECOND_FACTOR_USER = "staff_second_factor_user"
LAST_SEEN = "staff_last_seen"
SECOND_FACTOR_LIFETIME = timedelta(hours=12)
IDLE_LIMIT = timedelta(minutes=30)
STAFF_HOME = "/staff"


def _age(name: str) -> float | None:
    """Seconds since the session's timestamp ``name``, or None when it has none."""
    raw = session.get(name)
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        return None
    return utcnow().timestamp() - raw


def _earned_by_this_account() -> bool:
    return session.get(SECOND_FACTOR_USER) == current_user.get_id()


def passed_second_factor() -> bool:
    """Whether this session passed the second factor, for this account (and this session
    version of it), within the last 12 hours, and has been active in the last 30 minutes."""
    passed = _age(SECOND_FACTOR_AT)
    seen = _age(LAST_SEEN)
    return (
        _earned_by_this_account()
        and passed is not None
        and passed < SECOND_FACTOR_LIFETIME.total_seconds()
        and seen is not None
        and seen <= IDLE_LIMIT.total_seconds()
    )


def mark_second_factor_passed() -> None:
    """The second step succeeded: this session is a staff session from now on."""
    now = utcnow().timestamp()
    session[SECOND_FACTOR_AT] = now
    session[SECOND_FACTOR_USER] = current_user.get_id()
    session[LAST_SEEN] = now


def _idled_out() -> bool:
    """A staff session of this account that has seen no staff page for 30 minutes."""
    seen = _age(LAST_SEEN)
    return _earned_by_this_account() and seen is not None and seen > IDLE_LIMIT.total_seconds()


def _go(location: str) -> Response:
    return htmx_redirect(location) if is_htmx() else redirect(location, 303)


def _here() -> str:
    """Where to come back to: this page, or for a form the page it was sent from."""
    if request.method == "GET":
        return request.full_path.rstrip("?")
    return safe_next(same_site_path(request.referrer), default=STAFF_HOME)


def _sign_out_idle_session() -> Response:
    sign_out()
    flash("You were signed out after 30 minutes without activity in the back office.")
    return _go(url_for("auth.login", next=_here()))


def require_staff(*, second_factor: bool = True) -> Response | None:
    """The check every staff request passes first (registered on the staff blueprint).

    ``second_factor=False`` is for the second factor's own pages: they need the role only.
    """
    if not current_user.is_authenticated:
        return unauthorized()
    if not current_user.is_staff:
        abort(404)
    if _idled_out():
        return _sign_out_idle_session()
    if not second_factor:
        return None
    if not passed_second_factor():
        return _go(url_for("staff.security.second_factor", next=_here()))
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
