"""Password policy and hashing: argon2id, at least 10 characters, no common passwords, and
nothing built on the shop's name or the user's own names.

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
# The most code points a password of MAX_LENGTH characters is typed as: no character composes
# from more than four (a letter and its accents, a syllable from its three jamo).
TYPED_MAX = 4 * MAX_LENGTH
SHOP_NAME = "elysium"


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
    """NFKC, so the same password typed on two keyboards is the same password. Composing
    takes time growing with the square of a run of accents, so what is longer than any
    password could be typed as (``TYPED_MAX``) is cut just past that first: it composes to
    more than ``MAX_LENGTH`` characters all the same, too long to set and matching none."""
    return unicodedata.normalize("NFKC", password[: TYPED_MAX + 1])


def password_problem(password: str, *, email: str = "", names: tuple[str, ...] = ()) -> str | None:
    """Why this password can't be used, or None. Length counts characters, not bytes.

    Besides length and the common-password list, a password may not contain the words an
    attacker tries first for this account: the shop's name, the user's email name and names.
    """
    password = normalise(password)
    if len(password) < MIN_LENGTH:
        return f"Use at least {MIN_LENGTH} characters."
    if len(password) > MAX_LENGTH:
        return f"Use at most {MAX_LENGTH} characters."
    lowered = password.casefold()
    if lowered in common_passwords() or lowered.strip() in common_passwords():
        return "That password is too common. Try a few unrelated words together."
    if email and lowered == email.casefold():
        return "Your password can't be your email address."
    return _context_problem(lowered, email=email, names=names)


CONTEXT_MIN_LENGTH = 3  # shorter names ("Al", "Jo") are part of too many good passwords


def _context_problem(lowered: str, *, email: str, names: tuple[str, ...]) -> str | None:
    if SHOP_NAME in lowered:
        return f"Your password can't contain “{SHOP_NAME}”. Try a few unrelated words together."
    email_name = normalise(email.partition("@")[0]).casefold()
    if len(email_name) >= CONTEXT_MIN_LENGTH and email_name in lowered:
        return "Your password can't contain the name in your email address."
    for name in names:
        for word in normalise(name).casefold().split():
            if len(word) >= CONTEXT_MIN_LENGTH and word in lowered:
                return "Your password can't contain your name."
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
