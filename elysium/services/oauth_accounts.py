"""Signing in with an OpenID provider: users are keyed on the provider's ``sub``.

An address the provider has not verified is never linked to anything, and an address that
already belongs to a password account is linked only once that account's password is given.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from elysium.models.types import utcnow
from elysium.models.users import CustomerProfile, OAuthAccount, User
from elysium.services import passwords, profiles
from elysium.services.accounts import AccountError, normalise_email, user_by_email
from elysium.services.sql import AnySession


class Outcome(enum.Enum):
    SIGNED_IN = "signed_in"
    NEEDS_PASSWORD = "needs_password"  # noqa: S105 (a state, not a password)


@dataclass(frozen=True)
class OAuthResult:
    outcome: Outcome
    user: User


def _verified_email(claims: dict[str, Any]) -> str | None:
    email = claims.get("email")
    if not isinstance(email, str) or claims.get("email_verified") not in (True, "true"):
        return None
    return normalise_email(email)


def sign_in_with(session: AnySession, provider: str, claims: dict[str, Any]) -> OAuthResult:
    """Find or make the user for these ID-token claims. Two sign-ins of one new person at
    once (a phone and a laptop) both make the account: the caller commits with a retry
    (``web.commits.committed_with_retry``), and the second finds what the first made.

    Raises :class:`AccountError` when the identity cannot be used.
    """
    subject = str(claims["sub"])
    linked = _linked(session, provider, subject)
    if linked is not None:
        if not linked.user.is_active:
            raise AccountError("This account is closed. Please contact us if that's a mistake.")
        linked.user.last_login_at = utcnow()
        return OAuthResult(Outcome.SIGNED_IN, linked.user)

    email = _verified_email(claims)
    if email is None:
        raise AccountError(
            "Google hasn't verified the email on that account, so we can't use it to sign you "
            "in. Please create an account with your email and a password instead."
        )
    existing = user_by_email(session, email)
    if existing is not None:
        if not existing.is_active:
            raise AccountError("This account is closed. Please contact us if that's a mistake.")
        return OAuthResult(Outcome.NEEDS_PASSWORD, existing)

    user = User(
        email=email,
        password_hash=None,
        first_name=profiles.printable_name(str(claims.get("given_name") or "")),
        last_name=profiles.printable_name(str(claims.get("family_name") or "")),
        email_verified_at=utcnow(),
        last_login_at=utcnow(),
    )
    user.profile = CustomerProfile()
    user.oauth_accounts.append(OAuthAccount(provider=provider, subject=subject, email=email))
    session.add(user)
    session.flush()
    return OAuthResult(Outcome.SIGNED_IN, user)


def _linked(session: AnySession, provider: str, subject: str) -> OAuthAccount | None:
    return session.scalar(
        select(OAuthAccount).where(
            OAuthAccount.provider == provider, OAuthAccount.subject == subject
        )
    )


def link_with_password(
    session: AnySession, provider: str, claims: dict[str, Any], password: str
) -> User:
    """Link the provider identity to the existing account that owns its email."""
    email = _verified_email(claims)
    user = user_by_email(session, email) if email else None
    if user is None or not user.is_active or not user.password_hash:
        raise AccountError("We couldn't link these accounts. Please sign in with your password.")
    if not passwords.verify_password(user.password_hash, password):
        raise AccountError("That password is not correct.", field="password")
    subject = str(claims["sub"])
    linked = _linked(session, provider, subject)
    if linked is None:
        user.oauth_accounts.append(OAuthAccount(provider=provider, subject=subject, email=email))
    elif linked.user_id != user.id:
        raise AccountError("We couldn't link these accounts. Please sign in with your password.")
    # Else linked already: the same form sent twice (a double click), or another window's.
    if user.email_verified_at is None:
        user.email_verified_at = utcnow()
    user.last_login_at = utcnow()
    session.flush()
    return user
