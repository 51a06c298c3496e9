"""Signatures each process has checked or made once, and what they carried.

Every request brings the same signed cookies back (the session, the guest's bag) until they
change, and checking a signature (and, for the session, decoding its tagged JSON) cost more
than anything else a light page does before its view runs. A value whose signature checked out
is remembered under everything that decided it (the key that signed it, its salt, the exact
text), so the same text is not checked again; any other text (tampered, or signed with another
key) is checked in full as before. What a cookie carried is handed out as a copy, so no request
can change what the next one gets. At most ``size`` values are kept: when full it starts again
empty.

The same goes the other way for the CSRF token a page carries (:func:`reuse_csrf_token`).
"""

from __future__ import annotations

import pickle
from collections.abc import Hashable
from typing import Any

from flask import current_app, g, request, session
from flask_wtf.csrf import generate_csrf

from elysium.db_routing import READ_METHODS

# About the sessions one worker serves at once; past that it starts again (a check each).
VERIFIED_ENTRIES = 2_000


class VerifiedValues:
    """Values under keys that name everything that decided them, ``size`` at most."""

    def __init__(self, size: int = VERIFIED_ENTRIES) -> None:
        self.size = size
        self._entries: dict[Hashable, bytes] = {}

    def get(self, key: Hashable) -> Any | None:
        """What the value under ``key`` carried (a fresh copy), or None if not verified here."""
        found = self._entries.get(key)
        return None if found is None else pickle.loads(found)  # noqa: S301 (our own pickle)

    def put(self, key: Hashable, carried: Any) -> None:
        if len(self._entries) >= self.size:
            self._entries.clear()
        self._entries[key] = pickle.dumps(carried, protocol=pickle.HIGHEST_PROTOCOL)


_signed_csrf_tokens = VerifiedValues()


def reuse_csrf_token() -> None:
    """Before each request: the CSRF token this process last signed for the session's secret,
    instead of a new signature on every page (Flask-WTF signs the secret with the time, and
    ``generate_csrf`` then answers from ``g``). With ``WTF_CSRF_TIME_LIMIT = None`` a token
    signed for the same secret with the same key is valid at any age, so the page's forms
    post as before; with a time limit, every request signs afresh.

    Only for pages read (GET, HEAD): a change may end the session (signing in or out clears
    it), and a token put in ``g`` before that would be drawn for a secret the session no
    longer holds."""
    config = current_app.config
    field = config.get("WTF_CSRF_FIELD_NAME") or "csrf_token"
    if request.method not in READ_METHODS or field in g:
        return
    if config.get("WTF_CSRF_TIME_LIMIT") is not None:
        return
    secret = session.get(field)
    if not isinstance(secret, str):
        return
    key = (config.get("WTF_CSRF_SECRET_KEY") or current_app.secret_key, secret)
    signed = _signed_csrf_tokens.get(key)
    if signed is None:
        _signed_csrf_tokens.put(key, generate_csrf())
    else:
        setattr(g, field, signed)
