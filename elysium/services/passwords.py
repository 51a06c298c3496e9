"""Password policy and hashing: argon2id, at least 10 characters, no common passwords.

The hashing cost is a setting (``PASSWORD_HASH_TIME_COST``, ``PASSWORD_HASH_MEMORY_KIB``,
``PASSWORD_HASH_PARALLELISM``). A hash carries the parameters it was made with, so hashes made
at another cost still verify, and are made again at the configured cost on the next sign-in.
"""

from __future__ import annotations

import functools
import unicodedata
from importlib import resources

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app

MIN_LENGTH = 10
MAX_LENGTH = 128


def hasher() -> PasswordHasher:
    """The hasher at the app's configured cost."""
    config = current_app.config
    return _hasher(
        config["PASSWORD_HASH_TIME_COST"],
        config["PASSWORD_HASH_MEMORY_KIB"],
        config["PASSWORD_HASH_PARALLELISM"],
    )


@functools.cache
def _hasher(time_cost: int, memory_kib: int, parallelism: int) -> PasswordHasher:
    return PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism)


# Verifying reads the cost from the hash itself, so any hasher checks any hash.
_verifier = PasswordHasher()


def _dummy_hash() -> str:
    """Checked instead when there is no hash (an unknown email): made at the configured cost,
    so a miss costs what a hit costs."""
    return _dummy_hash_for(hasher())


@functools.cache
def _dummy_hash_for(password_hasher: PasswordHasher) -> str:
    return password_hasher.hash("elysium-timing-equaliser")


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
    return hasher().hash(normalise(password))


def verify_password(password_hash: str | None, password: str) -> bool:
    """Check a password; takes the same time whether or not there is a hash to check."""
    try:
        return _verifier.verify(password_hash or _dummy_hash(), normalise(password)) and bool(
            password_hash
        )
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """Whether the hash was made at another cost than the configured one."""
    return hasher().check_needs_rehash(password_hash)
