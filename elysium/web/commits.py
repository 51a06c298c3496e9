"""Committing a request's change when another request may be making the same row."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import IntegrityError

from elysium.extensions import db

T = TypeVar("T")


def committed_with_retry(change: Callable[[], T], tries: int = 3) -> T:
    """Run a change and commit. Two requests racing to make the same row (an account's two
    windows making its bag or the same line, a double click making one account) collide on a
    unique constraint, and the loser tries again, into what the winner made. A third try is
    for a guest whose session's bag was taken to payment: the first collides with that bag,
    the second may with the next one the other tab is making (``web.cart.current_cart``)."""
    for _ in range(tries - 1):
        try:
            result = change()
            db.session.commit()
        except IntegrityError:
            db.session.rollback()
        else:
            return result
    result = change()
    db.session.commit()
    return result
