"""What a form just sent, kept in the session for the page its answer leads to ("Thank
you", "Check your inbox"), and shown there for a short while only.

The page reads it from the signed session, never from the address bar (history, logs,
referrers). It is not shown for ever: on a shared computer, the next person to open that
page would read what the last one typed (a name, an address, an idea for a ring).
"""

from __future__ import annotations

import time
from typing import Any

from flask import session

from elysium.security import CLOCKS_APART_SECONDS

SHOWN_FOR_SECONDS = 15 * 60


def keep(name: str, value: dict[str, Any]) -> None:
    """Keep ``value`` for the next page, stamped with when it was sent."""
    session[name] = {**value, "sent_at": int(time.time())}


def shown(name: str) -> dict[str, Any] | None:
    """What was kept under ``name``, while it is recent; None when nothing was sent, or once
    it is older, when it leaves the session too (the session's cookie is signed, not
    secret)."""
    value = session.get(name)
    if value is None:
        return None
    sent_at = value.get("sent_at") if isinstance(value, dict) else None
    age = time.time() - sent_at if isinstance(sent_at, int) else None
    if age is None or not -CLOCKS_APART_SECONDS <= age <= SHOWN_FOR_SECONDS:
        session.pop(name, None)
        return None
    return value
