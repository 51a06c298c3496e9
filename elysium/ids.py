"""Row ids as visitors send them, in a URL or a form field."""

from __future__ import annotations

# The largest id a table of the shop's holds (PostgreSQL's ``integer``).
MAX_ID = 2**31 - 1


def as_id(text: str) -> int | None:
    """``text`` as a row id: ASCII digits naming a number an id column can hold; None for
    anything else (it names no row). Given to the database, a larger number is an error,
    and ``int()`` reads other scripts' digits ("²", "٣")."""
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(MAX_ID)):
        return None
    number = int(text)
    return number if number <= MAX_ID else None
