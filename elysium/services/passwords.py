"""Password policy and hashing: argon2id, at least 10 characters, no common passwords."""

from __future__ import annotations

import functools
import unicodedata
from importlib import resources

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

MIN_LENGTH = 10
MAX_LENGTH = 128

_hasher = PasswordHasher()
# Verified against when the email is unknown, so a miss costs what a hit costs.
_DUMMY_HASH = _hasher.hash("elysium-timing-equaliser")


@functools.cache
def common_passwords() -> frozenset[str]:
    text = resources.files("elysium").joinpath("data/common_passwords.txt").read_text("utf-8")
    return frozenset(
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    )


def normalise(password: str) -> str:
    """NFKC, so the same password typed on two keyboards is the same password."""
    return unicodedata.normalize("NFKC", password)


def password_problem(password: str, *, email: str = "") -> str | None:
    """Why this password can't be used, or None. Length counts characters, not bytes."""
    password = normalise(password)
    if len(password) < MIN_LENGTH:
        return f"Use at least {MIN_LENGTH} characters."
    if len(password) > MAX_LENGTH:
        return f"Use at most {MAX_LENGTH} characters."
    lowered = password.lower()
    if lowered in common_passwords() or lowered.strip() in common_passwords():
        return "That password is too common. Try a few unrelated words together."
    if email and lowered == email.lower():
        return "Your password can't be your email address."
    return None


def hash_password(password: str) -> str:
    return _hasher.hash(normalise(password))


def verify_password(password_hash: str | None, password: str) -> bool:
    """Check a password; takes the same time whether or not there is a hash to check."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, normalise(password)) and bool(
            password_hash
        )
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)
