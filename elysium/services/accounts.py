"""Accounts: registration, signing in, email confirmation, email changes and passwords.

Nothing here says whether an email address has an account: registering an address that is
taken and asking to reset an unknown one look exactly like the ordinary cases to the person
asking, and the owner of the address is told by email instead.
"""

from __future__ import annotations

import hmac
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from flask import current_app
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import object_session

from elysium.models.engagement import BespokeLead
from elysium.models.orders import Order
from elysium.models.outbox import OutboxEmail
from elysium.models.types import utcnow
from elysium.models.users import CustomerProfile, User
from elysium.services import passwords, profiles
from elysium.services.outbox import queue_email
from elysium.services.sql import AnySession
from elysium.urls import absolute_url

VERIFY_MAX_AGE = 3 * 24 * 3600
# At most one email of a kind (a confirmation link, "someone tried ...") to an address in this
# long: signing in to an unconfirmed account, or registering it again, sends no flood.
RESEND_SECONDS = 10 * 60
WELCOME_MAX_AGE = 24 * 3600


class AccountError(Exception):
    """A request about an account that cannot be carried out; ``field`` says where to show it."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field


# A wrong password and an account not confirmed yet get one answer: a stranger who opened
# an account with someone's address, then signed in with their own password, would tell
# from a different one whether the address already had an account.
NOT_SIGNED_IN = (
    "Email or password is incorrect. A new account opens once its email is confirmed: "
    "look for the link we've emailed."
)


RESET_LINK_USED = "This reset link has expired or has already been used."


class LinkUsedError(AccountError):
    """A single-use link another request used first (two tabs, two servers)."""


class UnverifiedEmailError(AccountError):
    """The password was right, but the address has not been confirmed yet."""


def normalise_email(email: str) -> str:
    """An address as accounts keep and look it up: trimmed, lower case, and in Unicode's
    composed form (NFC), so "é" typed as one character or as "e" and an accent is one
    address, not two accounts."""
    return unicodedata.normalize("NFC", email.strip().lower())


def address_as_kept(session: AnySession, email: str) -> str:
    """An address typed on a form, as the shop keeps it (:func:`normalise_email`); or, where
    an account was opened with it in another Unicode form that migration 0029 left (one
    person's second account: :func:`user_by_email`), in that form, so what is sent to it
    (an order, a commission) stays that account's."""
    composed = normalise_email(email)
    as_typed = email.strip().lower()
    if as_typed != composed and session.scalar(select(User.id).where(User.email == as_typed)):
        return as_typed
    return composed


def same_address(kept: str, named: object) -> bool:
    """Whether an address a link names is the account's: as accounts compare addresses, so
    a link emailed before the account's address was composed (migration 0029) still
    opens."""
    return isinstance(named, str) and normalise_email(kept) == normalise_email(named)


def user_by_email(session: AnySession, email: str) -> User | None:
    """The account of this address, in whichever form it was typed: one kept in another
    Unicode form than its composed one (migration 0029 left it so where another account
    already held the composed form: one person's two accounts) is found by the form it was
    opened with, as before (:func:`address_as_kept`)."""
    return session.scalar(select(User).where(User.email == address_as_kept(session, email)))


def _serializer(purpose: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=f"elysium.{purpose}")


def _load_token(purpose: str, token: str, max_age: int) -> dict[str, Any] | None:
    try:
        data = _serializer(purpose).loads(token, max_age=max_age)
    except (BadSignature, SignatureExpired):
        return None
    return data if isinstance(data, dict) else None


def end_all_sessions(user: User) -> None:
    """Every session and remember cookie that names the old version stops working.

    The version is raised in the database (``session_version + 1``), not written as the
    number this request read: "sign out everywhere" and a password change sent at once each
    raise it, so neither leaves a session the other meant to end. It is read back after."""
    user.session_version = User.session_version + 1
    session = object_session(user)
    assert session is not None
    session.flush()


@dataclass(frozen=True)
class Registration:
    email: str
    password: str
    first_name: str = ""
    last_name: str = ""


def _once_in_a_while(session: AnySession, key: str) -> str:
    """The outbox key for an email sent under ``key`` once in :data:`RESEND_SECONDS` at most.

    Time is cut in windows of that length and the key names the window, so concurrent
    requests share one row; an email sent at the end of the previous window still counts,
    or two would go seconds apart across the boundary (its key is returned: nothing new).
    """
    window = int(utcnow().timestamp()) // RESEND_SECONDS
    previous = session.scalar(
        select(OutboxEmail).where(OutboxEmail.dedupe_key == f"{key}:{window - 1}")
    )
    if previous is not None and utcnow() - previous.created_at < timedelta(seconds=RESEND_SECONDS):
        return f"{key}:{window - 1}"
    return f"{key}:{window}"


def register(session: AnySession, form: Registration) -> None:
    """Create an unconfirmed account and email a confirmation link.

    If the address already has an account, nothing is created and its owner is emailed
    instead; the person registering sees the same "check your inbox", as slowly (the password
    is hashed either way), whichever it is. An account not confirmed yet takes the password
    of its newest registration: it opens only with the password typed on the confirmation
    page, so whoever registered someone else's address first can't keep a password of
    theirs on it once its owner confirms.
    """
    email = normalise_email(form.email)
    names = (profiles.clean_text(form.first_name), profiles.clean_text(form.last_name))
    for field, name in zip(("first_name", "last_name"), names, strict=True):
        if problem := profiles.name_problem(name):
            raise AccountError(problem, field=field)
    if problem := passwords.password_problem(form.password, email=email, names=names):
        raise AccountError(problem, field="password")
    password_hash = passwords.hash_password(form.password)
    existing = user_by_email(session, email)
    if existing is not None:
        if existing.is_verified or not existing.password_hash:
            queue_email(
                session,
                to=existing.email,
                subject="Someone tried to open an ELYSIUM account with your email",
                template="account_exists",
                context={
                    "user": existing,
                    "login_url": absolute_url("auth.login"),
                    "forgot_url": absolute_url("auth.forgot_password"),
                },
                user_id=existing.id,
                dedupe_key=_once_in_a_while(session, f"user:{existing.id}:account-exists"),
            )
        else:
            existing.password_hash = password_hash
            existing.first_name, existing.last_name = names
            send_confirmation(session, existing)
        return
    user = User(
        email=email,
        password_hash=password_hash,
        first_name=names[0],
        last_name=names[1],
    )
    user.profile = CustomerProfile()
    session.add(user)
    session.flush()
    send_confirmation(session, user)


def send_confirmation(session: AnySession, user: User) -> None:
    """The confirmation link, once in :data:`RESEND_SECONDS` at most (any link sent works)."""
    token = _serializer("verify").dumps({"uid": user.id, "email": user.email})
    queue_email(
        session,
        to=user.email,
        subject="Confirm your email to open your ELYSIUM account",
        template="confirm_email",
        context={"user": user, "confirm_url": absolute_url("auth.confirm_email", token=token)},
        user_id=user.id,
        dedupe_key=_once_in_a_while(session, f"user:{user.id}:confirm"),
    )


def user_for_confirm_token(session: AnySession, token: str) -> User:
    """The account a confirmation link is for, not confirmed yet (nothing is changed: the
    page asks first). A link of an account already confirmed opens nothing: it is not a way
    to sign in."""
    data = _load_token("verify", token, VERIFY_MAX_AGE)
    user = session.get(User, data.get("uid")) if data else None
    if user is None or not same_address(user.email, data.get("email")) or not user.is_active:
        raise AccountError("This confirmation link is not valid any more.")
    if user.is_verified:
        raise AccountError("Your email is confirmed already: sign in with your password.")
    return user


def confirm_email(session: AnySession, token: str, password: str) -> User:
    """Confirm the address, with the password the account was (last) registered with: the
    inbox's owner proves the address, and the password proves the registration is theirs."""
    user = user_for_confirm_token(session, token)
    if not passwords.verify_password(user.password_hash, password):
        raise AccountError(
            "That isn't the password this account was opened with. If you chose another, "
            "register again with it: the link we send then opens it.",
            field="password",
        )
    user.email_verified_at = utcnow()
    user.last_login_at = utcnow()
    return user


def authenticate(session: AnySession, email: str, password: str) -> User | None:
    """The active user with this email and password, or None; equally slow either way."""
    user = user_by_email(session, email)
    if not passwords.verify_password(user.password_hash if user else None, password):
        return None
    assert user is not None
    if not user.is_active:
        return None
    if passwords.needs_rehash(user.password_hash or ""):
        user.password_hash = passwords.hash_password(password)
    if not user.is_verified:
        send_confirmation(session, user)
        raise UnverifiedEmailError(NOT_SIGNED_IN, field="email")
    user.last_login_at = utcnow()
    return user


def request_password_reset(session: AnySession, email: str) -> None:
    """Email a single-use reset link if the address has an active account; never say which."""
    user = user_by_email(session, email)
    if user is None or not user.is_active:
        return
    token = _password_link_token(user, "reset")
    queue_email(
        session,
        to=user.email,
        subject="Reset your ELYSIUM password",
        template="password_reset",
        context={
            "user": user,
            "reset_url": absolute_url("auth.reset_password", token=token),
            "minutes": current_app.config["PASSWORD_RESET_MAX_AGE"] // 60,
        },
        user_id=user.id,
    )


def _password_link_token(user: User, purpose: str) -> str:
    """A link to choose a password that works once: it names a new nonce, so only the newest
    link of either kind (a reset, a welcome) works, and setting the password clears it. Each
    purpose signs with its own salt, so one kind of link never opens the other's page."""
    user.password_reset_nonce = secrets.token_urlsafe(24)
    return _serializer(purpose).dumps({"uid": user.id, "nonce": user.password_reset_nonce})


def _user_for_password_link(
    session: AnySession, purpose: str, token: str, max_age: int
) -> User | None:
    data = _load_token(purpose, token, max_age)
    user = session.get(User, data.get("uid")) if data else None
    if user is None or not user.is_active or not user.password_reset_nonce:
        return None
    if not hmac.compare_digest(str(data.get("nonce")), user.password_reset_nonce):
        return None
    return user


def user_for_reset_token(session: AnySession, token: str) -> User | None:
    """The user a reset link is for, if it is the newest, unused and unexpired one."""
    return _user_for_password_link(
        session, "reset", token, current_app.config["PASSWORD_RESET_MAX_AGE"]
    )


def welcome_token(user: User) -> str:
    """The token of a new member of staff's link to choose a password (``flask create-staff``
    prints it): it works once, within 24 hours, and only while the account is staff."""
    return _password_link_token(user, "welcome")


def user_for_welcome_token(session: AnySession, token: str) -> User | None:
    """The member of staff a welcome link is for, if it is the newest, unused, unexpired one."""
    user = _user_for_password_link(session, "welcome", token, WELCOME_MAX_AGE)
    return user if user is not None and user.is_staff else None


def welcome_password(session: AnySession, token: str, password: str) -> User:
    """Set the password through a welcome link (the usual rules apply); every earlier session
    of the account ends. The address counts as confirmed: an administrator vouched for it."""
    user = user_for_welcome_token(session, token)
    if user is None:
        raise AccountError("This link has expired or has already been used.")
    # A first password is no change to warn of (the warning reads as a break-in on someone's
    # first day); a promoted shopper's password replaced is.
    _set_password(session, user, password, tell=user.password_hash is not None)
    if user.email_verified_at is None:
        user.email_verified_at = utcnow()
    return user


def _set_password(session: AnySession, user: User, password: str, *, tell: bool = True) -> None:
    names = (user.first_name, user.last_name)
    if problem := passwords.password_problem(password, email=user.email, names=names):
        raise AccountError(problem, field="password")
    user.password_hash = passwords.hash_password(password)
    user.password_reset_nonce = None
    # A new password ends whatever the old one started: every session, and a change of email
    # still waiting for its link (asked for by whoever knew the old password).
    user.email_change_nonce = None
    end_all_sessions(user)
    if not tell:
        return
    queue_email(
        session,
        to=user.email,
        subject="Your ELYSIUM password was changed",
        template="password_changed",
        context={"user": user, "forgot_url": absolute_url("auth.forgot_password")},
        user_id=user.id,
    )


def reset_password(session: AnySession, token: str, password: str) -> User:
    user = user_for_reset_token(session, token)
    if user is None or not _claimed(session, user, User.password_reset_nonce):
        raise LinkUsedError(RESET_LINK_USED)
    _set_password(session, user, password)
    if user.email_verified_at is None:
        user.email_verified_at = utcnow()
    return user


def _claimed(session: AnySession, user: User, nonce: Any) -> bool:
    """Whether this request took the account's single-use link (``nonce``: the column of its
    nonce, as this request read it): one request only, when two tabs or two servers send the
    same link at once; the other finds it used. (Taken in the request's transaction: a
    request that fails after, a password refused by the rules say, leaves the link as it
    was.)"""
    taken = session.execute(
        update(User)
        .where(User.id == user.id, nonce == getattr(user, nonce.key))
        .values({nonce.key: None})
        .execution_options(synchronize_session=False)
    )
    return taken.rowcount == 1


def change_password(session: AnySession, user: User, current: str, new: str) -> None:
    if not passwords.verify_password(user.password_hash, current):
        raise AccountError("Your current password is not correct.", field="current_password")
    _set_password(session, user, new)


@dataclass(frozen=True)
class EmailChange:
    """What an email-change link asks for: this account, now at ``user.email``, to move."""

    user: User
    new_email: str


def request_email_change(
    session: AnySession, user: User, current_password: str, new_email: str
) -> str | None:
    """Email a link to the new address; the account keeps its address until the link is used.

    Returns the address written to, or None when it is the account's own already; an
    address of another account gets a note that someone tried, and the answer is the same
    (the route is rate-limited). The password alone is not enough: whoever holds it could
    otherwise move the account onto an address they don't own, and keep it (a linked Google
    identity, say) once the address's real owner resets the password and starts using the
    account.
    """
    if not passwords.verify_password(user.password_hash, current_password):
        raise AccountError("Your current password is not correct.", field="current_password")
    new_email = normalise_email(new_email)
    if new_email == user.email:
        return None
    # Only the newest link works: one sent to a mistyped address dies when the right one is
    # asked for (and so when the address asked for has an account: answered as for a free
    # address, the account's own inbox hearing the same, nobody learns which have one).
    user.email_change_nonce = secrets.token_urlsafe(24)
    if (owner := user_by_email(session, new_email)) is not None:
        # That address's owner hears someone tried; no link is sent to it.
        queue_email(
            session,
            to=new_email,
            subject="Someone tried to move an ELYSIUM account to your email",
            template="email_change_refused",
            context={"new_email": new_email, "forgot_url": absolute_url("auth.forgot_password")},
            dedupe_key=_once_in_a_while(session, f"user:{user.id}:email-to:{owner.id}"),
        )
    else:
        token = _serializer("change-email").dumps(
            {"uid": user.id, "from": user.email, "to": new_email, "nonce": user.email_change_nonce}
        )
        queue_email(
            session,
            to=new_email,
            subject="Confirm your new email for ELYSIUM",
            template="confirm_new_email",
            context={
                "user": user,
                "new_email": new_email,
                "confirm_url": absolute_url("account.confirm_new_email", token=token),
            },
            user_id=user.id,
        )
    # The account's owner hears of it at once, while a new password still ends the request.
    queue_email(
        session,
        to=user.email,
        subject="A change of email was asked for your ELYSIUM account",
        template="email_change_requested",
        context={
            "user": user,
            "new_email": new_email,
            "profile_url": absolute_url("account.profile"),
            "forgot_url": absolute_url("auth.forgot_password"),
        },
        user_id=user.id,
    )
    return new_email


def email_change_for_token(session: AnySession, token: str) -> EmailChange:
    """The change an email-change link asks for (nothing is changed: the page asks first).

    The link names the address it was made from, so once the account's email changes (by
    this link, another one, or any later change) every older link stops working.
    """
    data = _load_token("change-email", token, VERIFY_MAX_AGE)
    user = session.get(User, data.get("uid")) if data else None
    if (
        user is None
        or not same_address(user.email, data.get("from"))
        or not user.is_active
        or not user.email_change_nonce
        or not hmac.compare_digest(str(data.get("nonce")), user.email_change_nonce)
    ):
        raise AccountError("This link to change your email is not valid any more.")
    new_email = normalise_email(str(data.get("to")))
    if user_by_email(session, new_email) is not None:
        raise _taken_meanwhile(new_email)
    return EmailChange(user=user, new_email=new_email)


def _taken_meanwhile(new_email: str) -> AccountError:
    return AccountError(
        f"{new_email} now belongs to another ELYSIUM account, so this account keeps its "
        "email. Please choose another address."
    )


def _keep_what_was_asked_as_a_guest(session: AnySession, user: User, old_email: str) -> None:
    """The orders, commissions and emails of no account under the address the account is
    leaving are the account's (``account_data``: its export and its erasure count them by
    the address): they become the account's own, so they stay hers, not the next holder's of
    the address, who may open an account with it later."""
    old = old_email.lower()
    for model, address in (
        (Order, Order.email),
        (BespokeLead, BespokeLead.email),
        (OutboxEmail, OutboxEmail.to_address),
    ):
        session.execute(
            update(model)
            .where(model.user_id.is_(None), func.lower(address) == old)
            .values(user_id=user.id)
            .execution_options(synchronize_session=False)
        )


def confirm_email_change(session: AnySession, token: str) -> EmailChange:
    """Move the account to the address the link was sent to, which it has now proven.

    The old address is told, and every session of the account ends, as after a new password:
    the email is how the account is recovered, so no session opened before it changed hands
    should outlive the change. The account's orders placed with the old address move with it.
    """
    change = email_change_for_token(session, token)
    user = change.user
    if not _claimed(session, user, User.email_change_nonce):
        raise AccountError("This link has already been used.")
    old_email = user.email
    user.email = change.new_email
    try:
        # Now, so an account opened with the address a moment ago is a message, not an error.
        session.flush()
    except IntegrityError as error:
        raise _taken_meanwhile(change.new_email) from error
    user.email_verified_at = utcnow()
    user.email_change_nonce = None
    # A reset link sent to the old address must not open the account any more.
    user.password_reset_nonce = None
    end_all_sessions(user)
    _keep_what_was_asked_as_a_guest(session, user, old_email)
    # Nor the links to its orders' pages (they name the address: ``orders.guest_link_token``);
    # and what is said of those orders from now on goes to the new one. An order placed with
    # another address, typed at checkout, keeps it.
    # So do its commissions' (a quote, a deposit's receipt): the account's own, asked under
    # the old address.
    for model in (Order, BespokeLead):
        session.execute(
            update(model)
            .where(model.user_id == user.id, func.lower(model.email) == old_email.lower())
            .values(email=user.email)
            .execution_options(synchronize_session=False)
        )
    queue_email(
        session,
        to=old_email,
        subject="Your ELYSIUM account email was changed",
        template="email_changed",
        context={"user": user, "old_email": old_email, "new_email": user.email},
        user_id=user.id,
    )
    return change
