"""What a session has earned as a staff session: the second factor, passed for this account
within the last 12 hours, and activity in the back office within the last 30 minutes.

The times live in the signed session cookie as UTC timestamps, next to the account they were
earned by: a shopper session promoted to staff, or a session of someone else, has none, and a
copy of an old cookie carries its own old times. The clock is
:func:`elysium.models.types.utcnow`. The back office checks them on every request
(``staff.access``); the account pages check them before a staff account's email or password
changes (:func:`sign_in_details_guarded`), so a password alone can never take a staff login
over.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from functools import wraps
from typing import Any

from flask import flash, redirect, session, url_for
from flask_login import current_user

from elysium.htmx import htmx_redirect, is_htmx
from elysium.models.types import utcnow

SECOND_FACTOR_AT = "staff_second_factor_at"
SECOND_FACTOR_USER = "staff_second_factor_user"
LAST_SEEN = "staff_last_seen"
SECOND_FACTOR_LIFETIME = timedelta(hours=12)
IDLE_LIMIT = timedelta(minutes=30)
SIGN_IN_DETAILS_NEED_SECOND_FACTOR = (
    "A staff account's email and password change only in a session that has passed its "
    "second step: enter your code, then make the change."
)


def age(name: str) -> float | None:
    """Seconds since the session's timestamp ``name``, or None when it has none."""
    raw = session.get(name)
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        return None
    return utcnow().timestamp() - raw


def earned_by_this_account() -> bool:
    return session.get(SECOND_FACTOR_USER) == current_user.get_id()


def second_factor_passed_lately() -> bool:
    """Whether this session passed the second factor, for this account (and this session
    version of it), within the last 12 hours, busy in the back office since or not: enough to
    change how the account signs in."""
    passed = age(SECOND_FACTOR_AT)
    return (
        earned_by_this_account()
        and passed is not None
        and passed < SECOND_FACTOR_LIFETIME.total_seconds()
    )


def passed_second_factor() -> bool:
    """What the back office asks: the second factor passed lately, and the session active
    there in the last 30 minutes."""
    seen = age(LAST_SEEN)
    return second_factor_passed_lately() and seen is not None and seen <= IDLE_LIMIT.total_seconds()


def mark_second_factor_passed() -> None:
    """The second step succeeded: this session is a staff session from now on."""
    now = utcnow().timestamp()
    session[SECOND_FACTOR_AT] = now
    session[SECOND_FACTOR_USER] = current_user.get_id()
    session[LAST_SEEN] = now


def sign_in_details_guarded(view: Callable[..., Any]) -> Callable[..., Any]:
    """For a form that changes how an account signs in (its email, its password). On a staff
    account it is taken only from a session that passed the second factor: whoever has only
    the password could otherwise move the login to their own inbox, or lock its owner out.
    Anyone else is sent to the second step, and back to their account's details after it.
    Time away from the back office doesn't count here: its idle limit would sign out, at the
    second step, a member of staff who only changes their password."""

    @wraps(view)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        staff = current_user.is_authenticated and current_user.is_staff
        if staff and not second_factor_passed_lately():
            flash(SIGN_IN_DETAILS_NEED_SECOND_FACTOR)
            location = url_for("staff.security.second_factor", next=url_for("account.profile"))
            return htmx_redirect(location) if is_htmx() else redirect(location, 303)
        return view(*args, **kwargs)

    return guarded
