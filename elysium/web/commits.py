"""Committing a request's change when another request may be making the same row."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import IntegrityError

from elysium.extensions import db

T = TypeVar("T")


def committed_with_retry(change: Callable[[], T]) -> T:
    """Run a change and commit. Two requests racing to make the same row (an account's two
    windows making its bag or the same line, a double click making one account) collide on a
    unique constraint, and the loser tries once more, into what the winner made."""
    try:
        result = change()
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        result = change()
        db.session.commit()
    return result
