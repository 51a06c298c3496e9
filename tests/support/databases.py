"""Which database the suite runs on (``TEST_DATABASE_URL`` for PostgreSQL, else SQLite)."""

from __future__ import annotations

import os

import pytest

ON_POSTGRESQL = bool(os.environ.get("TEST_DATABASE_URL"))

# A browser test of what the page itself does (its layout, its focus, its drawings, its
# markup's accessibility): the same on either database, so the SQLite run covers it and the
# PostgreSQL run, which CI runs beside it, leaves it out.
SAME_ON_EITHER_DATABASE = pytest.mark.skipif(
    ON_POSTGRESQL,
    reason="what the page does in the browser is the same on either database; the SQLite run "
    "covers it",
)
