"""The staff second factor: TOTP codes (RFC 6238: SHA-1, 6 digits, 30 s) and recovery codes.

The key lives on the user row only, never in a cookie: a key being enrolled is
``totp_secret`` without ``totp_enrolled_at``, made by a command or a POST, so the enrolment
page only reads it (a GET never writes) and the key never travels outside the page that shows
it. A code is accepted at most once: the time step it belongs to is recorded by a conditional
UPDATE that needs it to be later than the last accepted one, so two requests with one code
can't both pass, on any number of workers. Five wrong codes in a row lock the second step for
15 minutes, counted by one UPDATE each. Services never commit: the caller does, and must
commit a refusal too (the failure count is the lock).
"""

from __future__ import annotations

import hmac
import math
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import pyotp
from sqlalchemy import ColumnElement, case, func, or_, select, update

from elysium.models.types import utcnow
from elysium.models.users import RecoveryCode, User
from elysium.services import passwords
from elysium.services.sql import AnySession, hold_row

ISSUER = "ELYSIUM"
MAX_FAILURES = 5
LOCK = timedelta(minutes=15)
# A code from the previous or the next 30 s step is also accepted (clocks drift).
VALID_WINDOW = 1
RECOVERY_CODES = 10
RECOVERY_CODE_LENGTH = 10
RECOVERY_ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"


class SecondFactorError(Exception):
    """The code was refused; ``message`` is for the staff member. ``retry_after`` (seconds)
    is set when the second step is locked."""

    def __init__(self, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


@dataclass(frozen=True)
class Passed:
    """The second step succeeded; ``recovery_codes_left`` is set when a recovery code was used."""

    recovery_codes_left: int | None = None


def is_enrolled(user: User) -> bool:
    return user.totp_secret is not None and user.totp_enrolled_at is not None


def key_being_enrolled(user: User) -> str | None:
    """The key a staff member who has no authenticator yet is shown, if one was made."""
    return None if is_enrolled(user) else user.totp_secret


def start_enrolment(session: AnySession, user: User) -> str:
    """A new key for a staff member without an authenticator (any earlier one stops working)."""
    if is_enrolled(user):
        raise SecondFactorError("An authenticator is already set up for this account.")
    user.totp_secret = pyotp.random_base32()
    user.totp_last_step = None
    session.flush()
    return user.totp_secret


def provisioning_uri(user: User, key: str) -> str:
    """The ``otpauth://`` URI an authenticator app reads from the QR code."""
    return pyotp.TOTP(key).provisioning_uri(name=user.email, issuer_name=ISSUER)


def locked_for(user: User) -> timedelta | None:
    """How much longer the second step is locked for this user, or None."""
    until = user.second_factor_locked_until
    now = utcnow()
    if until is None or until <= now:
        return None
    return until - now


def lock_message(remaining: timedelta) -> str:
    minutes = max(math.ceil(remaining.total_seconds() / 60), 1)
    unit = "minute" if minutes == 1 else "minutes"
    return f"Too many wrong codes: the second step is locked for {minutes} more {unit}."


def verify(session: AnySession, user: User, code: str) -> Passed:
    """Accept a code from the user's authenticator, or one of their recovery codes, once."""
    if not is_enrolled(user):
        raise SecondFactorError("Set up your authenticator first.")
    _refuse_when_locked(session, user)
    typed = _normalised(code)
    if _looks_like_totp(typed):
        _accept_totp(session, user, user.totp_secret or "", typed)
        return Passed()
    if _use_recovery_code(session, user, typed):
        return Passed(recovery_codes_left=recovery_codes_left(session, user))
    raise _failure(session, user, "That code is not right. Check your authenticator and try again.")


def enrol(session: AnySession, user: User, code: str) -> list[str]:
    """Make the key being enrolled the user's own once a code from it is accepted; returns
    ten new recovery codes (shown once: only their hashes are kept)."""
    key = key_being_enrolled(user)
    if key is None:
        raise SecondFactorError("There is no key to set up: ask for a new one.")
    _refuse_when_locked(session, user)
    typed = _normalised(code)
    if not _looks_like_totp(typed):
        raise _failure(session, user, "Enter the six-digit code your authenticator shows.")
    _accept_totp(session, user, key, typed)
    user.totp_enrolled_at = utcnow()
    return replace_recovery_codes(session, user)


def replace_recovery_codes(session: AnySession, user: User) -> list[str]:
    """Ten new recovery codes; the old ones stop working. Returned formatted ``abcde-fghij``.

    The codes are hashed (Argon2: a second or two for ten) before the old ones are retired, so
    the transaction writes only once the slow part is done: on SQLite its write lock held
    every other writer (a shopper's add to bag) waiting meanwhile, up to the 503 page."""
    codes = [
        "".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(RECOVERY_CODE_LENGTH))
        for _ in range(RECOVERY_CODES)
    ]
    hashes = [passwords.hash_password(code) for code in codes]
    # Two made at once (a double click) take turns: the second retires the first's, so ten
    # are ever valid, the ten its page shows last.
    hold_row(session, User, user.id)
    _retire_recovery_codes(session, user)
    session.add_all(RecoveryCode(user_id=user.id, code_hash=hashed) for hashed in hashes)
    session.flush()
    half = RECOVERY_CODE_LENGTH // 2
    return [f"{code[:half]}-{code[half:]}" for code in codes]


def recovery_codes_left(session: AnySession, user: User) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(RecoveryCode)
            .where(RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None))
        )
        or 0
    )


def reset(session: AnySession, user: User) -> None:
    """Forget the user's authenticator and recovery codes (revoked staff, a lost phone)."""
    user.totp_secret = None
    user.totp_enrolled_at = None
    user.totp_last_step = None
    user.second_factor_failures = 0
    user.second_factor_locked_until = None
    _retire_recovery_codes(session, user)
    session.flush()


def _normalised(code: str) -> str:
    return "".join((code or "").split()).lower()


def _looks_like_totp(typed: str) -> bool:
    return len(typed) == 6 and typed.isascii() and typed.isdigit()


def _reload(session: AnySession, user: User) -> None:
    """The row as the database has it now (another request may have just changed it)."""
    session.flush()
    session.refresh(user)


def _refuse_when_locked(session: AnySession, user: User) -> None:
    _reload(session, user)
    if (remaining := locked_for(user)) is not None:
        raise SecondFactorError(lock_message(remaining), math.ceil(remaining.total_seconds()))


def _matching_step(key: str, typed: str) -> int | None:
    """The time step a TOTP code belongs to (within the drift window), or None."""
    totp = pyotp.TOTP(key)
    now = utcnow()
    step_now = totp.timecode(now)
    for offset in range(-VALID_WINDOW, VALID_WINDOW + 1):
        moment = now + timedelta(seconds=offset * totp.interval)
        if hmac.compare_digest(totp.at(moment), typed):
            return step_now + offset
    return None


def _not_locked(now: datetime) -> ColumnElement[bool]:
    return or_(User.second_factor_locked_until.is_(None), User.second_factor_locked_until <= now)


def _accept_totp(session: AnySession, user: User, key: str, typed: str) -> None:
    """Record the code's step if it is later than the last one accepted, or raise."""
    step = _matching_step(key, typed)
    if step is None:
        raise _failure(
            session, user, "That code is not right. Check your authenticator and try again."
        )
    now = utcnow()
    accepted = session.execute(
        update(User)
        .where(
            User.id == user.id,
            or_(User.totp_last_step.is_(None), User.totp_last_step < step),
            _not_locked(now),
        )
        .values(totp_last_step=step, second_factor_failures=0)
        .execution_options(synchronize_session=False)
    ).rowcount
    _reload(session, user)
    if not accepted:
        if (remaining := locked_for(user)) is not None:
            raise SecondFactorError(lock_message(remaining), math.ceil(remaining.total_seconds()))
        raise _failure(session, user, "That code has already been used: wait for the next one.")


def _failure(session: AnySession, user: User, message: str) -> SecondFactorError:
    """Count a wrong code (one UPDATE, so parallel guesses all count); the fifth locks."""
    failures = User.second_factor_failures + 1
    locks = failures >= MAX_FAILURES
    session.execute(
        update(User)
        .where(User.id == user.id)
        .values(
            second_factor_failures=case((locks, 0), else_=failures),
            second_factor_locked_until=case(
                (locks, utcnow() + LOCK), else_=User.second_factor_locked_until
            ),
        )
        .execution_options(synchronize_session=False)
    )
    _reload(session, user)
    if (remaining := locked_for(user)) is not None:
        return SecondFactorError(lock_message(remaining), math.ceil(remaining.total_seconds()))
    return SecondFactorError(message)


def _use_recovery_code(session: AnySession, user: User, typed: str) -> bool:
    typed = typed.replace("-", "")
    if len(typed) != RECOVERY_CODE_LENGTH or not set(typed) <= set(RECOVERY_ALPHABET):
        return False
    unused = session.scalars(
        select(RecoveryCode).where(RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None))
    ).all()
    now = utcnow()
    for recovery in unused:
        if passwords.verify_password(recovery.code_hash, typed):
            used = session.execute(
                update(RecoveryCode)
                .where(RecoveryCode.id == recovery.id, RecoveryCode.used_at.is_(None))
                .values(used_at=now)
                .execution_options(synchronize_session=False)
            ).rowcount
            if not used:
                return False
            session.execute(
                update(User)
                .where(User.id == user.id)
                .values(second_factor_failures=0)
                .execution_options(synchronize_session=False)
            )
            _reload(session, user)
            return True
    return False


def _retire_recovery_codes(session: AnySession, user: User) -> None:
    session.execute(
        update(RecoveryCode)
        .where(RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None))
        .values(used_at=utcnow())
        .execution_options(synchronize_session=False)
    )
