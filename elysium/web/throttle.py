"""Sign-in throttling: guessing passwords stays slow, and a stranger can't lock the owner out.

The login view asks a :class:`SignInAttempt` before it checks a password and tells it how the
check went. The rules:

1. **5 wrong passwords a minute per account and client.** The client is the browser when it
   is a known device of the account (:mod:`elysium.web.devices`), else the address the
   request comes from: a stranger's wrong passwords use up their own address's budget, never
   the owner's. An attempt is counted *before* the password is checked, so twenty sent at
   once to twenty workers still let only five through, and is given back when the password
   was right: only wrong passwords use the budget.
2. **Beyond 50 wrong passwords an hour for an account, a pace.** That many come from many
   addresses at once. Browsers that are not known devices of the account then get one
   attempt every 5 seconds between them, and the others are told to wait a few seconds (429
   with Retry-After). Guessing is held to 12 a minute per account however many addresses join
   in, yet nobody is refused for longer than a few seconds, so the owner on a new browser gets
   in after a short wait. Nothing waits inside a request: a worker sleeping on a throttle
   would be a denial of service of its own.
3. **A known device is never paced**: the owner's own browser signs in whatever strangers do
   (its own wrong passwords count against it, rule 1). A password reset link signs in and
   makes the browser known, so it is the way in for an owner on a new browser.

Besides these, the login route allows each address 20 attempts a minute, right or wrong (a
route limit in ``auth/routes.py``), except a known device signing in to its own account.

Everything is counted in Flask-Limiter's store, which every server shares (Redis), and
follows it to the process's own memory when Redis does not answer (see
``config.rate_limit_settings``); a failure in the middle of a request is logged and the rest
of the request counts in memory too.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from flask import Flask, current_app, g, request
from limits import RateLimitItem, parse
from limits.errors import StorageError
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter, RateLimiter

from elysium.client_address import client_address
from elysium.extensions import limiter
from elysium.services import accounts
from elysium.web.devices import Device, known_device_for

WRONG_PASSWORDS_PER_CLIENT = parse("5/minute")
WRONG_PASSWORDS_BEFORE_PACING = parse("50/hour")
PACE = parse("1 per 5 seconds")

PACED = (
    "Many wrong passwords have been tried for this account, so sign-in is slowed down. "
    "Please wait a few seconds and try again."
)

FALLBACK = "elysium.sign_in_throttle.fallback"

T = TypeVar("T")


@dataclass(frozen=True)
class Refusal:
    """Why an attempt may not check a password now, and in how many seconds it may."""

    message: str
    retry_after: int


def init_app(app: Flask) -> None:
    """Where this process counts when the shared store fails in the middle of a request."""
    app.extensions[FALLBACK] = FixedWindowRateLimiter(MemoryStorage())


def _counted(operation: Callable[[RateLimiter], T]) -> T:
    if not g.get("rate_limit_store_failed"):
        try:
            return operation(limiter.limiter)
        except StorageError:
            current_app.logger.warning(
                "The rate-limit store did not answer: this request counts sign-in attempts in "
                "this process's memory",
                exc_info=True,
            )
            g.rate_limit_store_failed = True
    return operation(current_app.extensions[FALLBACK])


def _seconds_until_reset(store: RateLimiter, item: RateLimitItem, key: tuple[str, ...]) -> int:
    return max(math.ceil(store.get_window_stats(item, *key).reset_time - time.time()), 1)


def _give_back(store: RateLimiter, item: RateLimitItem, key: tuple[str, ...]) -> None:
    counter, expiry = item.key_for(*key), item.get_expiry()
    if store.storage.incr(counter, expiry, amount=-1) < 0:
        store.storage.incr(counter, expiry, amount=1)  # the window ended meanwhile


def from_a_known_device() -> bool:
    """A browser signing in to an account it is a known device of. The address's limit of
    attempts doesn't apply to it (its own wrong passwords still count, per device): a stranger
    sharing the owner's address (an office, a mobile carrier) can't keep the owner out."""
    return known_device_for(accounts.normalise_email(request.form.get("email", ""))) is not None


def digest(address: str) -> str:
    """What the limits' store keeps for an email address: a digest, never the address."""
    return hashlib.sha256(address.encode()).hexdigest()[:32]


class SignInAttempt:
    """One password attempt for the account with ``email``, from this browser."""

    def __init__(self, email: str) -> None:
        normalised = accounts.normalise_email(email)
        self.account = digest(normalised)
        self.device: Device | None = known_device_for(normalised)
        if self.device is not None:
            self.client = ("device", self.device.device_id)
        else:
            self.client = ("address", client_address())

    def _key(self, *parts: str) -> tuple[str, ...]:
        return (current_app.config["RATELIMIT_KEY_PREFIX"], "sign-in", self.account, *parts)

    def refusal(self) -> Refusal | None:
        """Count this attempt, or say why it may not check a password now.

        On ``None`` the caller checks the password and then calls :meth:`password_was_wrong`
        or :meth:`password_was_right`.
        """
        budget = self._key(*self.client)

        def take_from_budget(store: RateLimiter) -> Refusal | None:
            if store.hit(WRONG_PASSWORDS_PER_CLIENT, *budget):
                return None
            seconds = _seconds_until_reset(store, WRONG_PASSWORDS_PER_CLIENT, budget)
            return Refusal(f"Too many attempts. Please try again in {seconds} seconds.", seconds)

        if (refused := _counted(take_from_budget)) is not None:
            return refused
        if self.device is None and (refused := _counted(self._pace)) is not None:
            _counted(lambda store: _give_back(store, WRONG_PASSWORDS_PER_CLIENT, budget))
            return refused
        return None

    def _pace(self, store: RateLimiter) -> Refusal | None:
        if store.test(WRONG_PASSWORDS_BEFORE_PACING, *self._key("wrong")):
            return None
        if store.hit(PACE, *self._key("pace")):
            return None
        return Refusal(PACED, _seconds_until_reset(store, PACE, self._key("pace")))

    def password_was_wrong(self) -> None:
        """The attempt keeps its place in the client's budget and counts for the account."""
        _counted(lambda store: store.hit(WRONG_PASSWORDS_BEFORE_PACING, *self._key("wrong")))

    def password_was_right(self) -> None:
        """A right password (even for an unconfirmed account) gives its attempt back."""
        budget = self._key(*self.client)
        _counted(lambda store: _give_back(store, WRONG_PASSWORDS_PER_CLIENT, budget))


class Budget:
    """So many of something an hour (``limit``) from each address, counted in the shared
    store *before* it is done, so requests sent at once can't all pass a check made before
    any of them counted (Flask-Limiter's ``deduct_when`` counts after the answer: twelve
    requests sent together let seven through a limit of five); given back when it turned out
    not to count (a form sent back to correct)."""

    def __init__(self, name: str, limit: str) -> None:
        self.name = name
        self.limit = parse(limit)

    def _key(self) -> tuple[str, ...]:
        return (current_app.config["RATELIMIT_KEY_PREFIX"], self.name, client_address())

    def take(self) -> int | None:
        """Count one; ``None``, or when none is left the seconds until one is."""
        key = self._key()

        def take_one(store: RateLimiter) -> int | None:
            if store.hit(self.limit, *key):
                return None
            return _seconds_until_reset(store, self.limit, key)

        return _counted(take_one)

    def give_back(self) -> None:
        key = self._key()
        _counted(lambda store: _give_back(store, self.limit, key))
