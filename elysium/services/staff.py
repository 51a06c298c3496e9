"""Who is staff: making a member of staff (a new account, or a shopper promoted) with a link to
choose a password, and revoking one.

There is no default password: a new staff account has none until its owner opens the link
(``accounts.welcome_token``: once, within 24 hours). A promoted shopper keeps their account,
orders and password; their open sessions stay shopper sessions until they pass the second
factor. Revoking demotes the account, forgets its authenticator and recovery codes, kills an
unused link, and ends every session at once.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from email_validator import EmailNotValidError, validate_email

from elysium.models.users import CustomerProfile, Role, User
from elysium.services import accounts, second_factor
from elysium.services.sql import AnySession
from elysium.urls import absolute_url


class StaffError(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class Change(enum.Enum):
    CREATED = "created"
    PROMOTED = "promoted"
    ALREADY_STAFF = "already staff"


@dataclass(frozen=True)
class Invitation:
    """A member of staff and the link (valid 24 hours, once) to choose their password."""

    user: User
    change: Change
    link: str


def create_staff(
    session: AnySession, email: str, *, first_name: str = "", last_name: str = ""
) -> Invitation:
    """Make ``email`` a member of staff: a new account without a password, or an existing
    account promoted (names only fill a new account; its sessions end). Anyone without an
    authenticator gets a key to enrol, read by the second factor page."""
    try:
        address = validate_email(email.strip(), check_deliverability=False).normalized
    except EmailNotValidError as error:
        raise StaffError(f"{email!r} is not an email address: {error}") from error
    # By the address as typed: the validator's form is composed, and of one person's two
    # accounts in two forms (``accounts.user_by_email``) the one typed is the one meant.
    user = accounts.user_by_email(session, email)
    if user is None:
        user = User(
            email=accounts.normalise_email(address),
            password_hash=None,
            first_name=first_name.strip(),
            last_name=last_name.strip(),
            role=Role.STAFF,
        )
        user.profile = CustomerProfile()
        session.add(user)
        session.flush()
        change = Change.CREATED
    elif not user.is_active:
        raise StaffError(f"The account {user.email} is deactivated: it can't be made staff.")
    else:
        change = Change.ALREADY_STAFF if user.is_staff else Change.PROMOTED
        if change is Change.PROMOTED:
            # A shopper's session from before (a shared computer, a stolen cookie) would
            # reach the authenticator's enrolment, which asks for nothing more: it ends, and
            # the back office starts from a sign-in with the password.
            accounts.end_all_sessions(user)
        user.role = Role.STAFF
    if not second_factor.is_enrolled(user) and second_factor.key_being_enrolled(user) is None:
        second_factor.start_enrolment(session, user)
    token = accounts.welcome_token(user)
    session.flush()
    return Invitation(user=user, change=change, link=absolute_url("auth.welcome", token=token))


def revoke_staff(session: AnySession, email: str) -> User | None:
    """Demote ``email`` and end every session of it; None when it wasn't staff (nothing is
    changed). Raises when there is no such account."""
    user = accounts.user_by_email(session, email)
    if user is None:
        raise StaffError(f"There is no account with the email {accounts.normalise_email(email)}.")
    if not user.is_staff:
        return None
    user.role = Role.CUSTOMER
    second_factor.reset(session, user)
    user.password_reset_nonce = None  # an unused welcome (or reset) link stops working
    accounts.end_all_sessions(user)
    session.flush()
    return user
