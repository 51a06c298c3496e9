"""The house's calendar. Moments are kept in UTC (``models.types.utcnow``), but a date a person
reads, and the "today" of a rule they read (a quote valid until, a wanted-by date, a piece that
ships by), is London's, GMT or BST: at 23:30 UTC on a summer evening it is already tomorrow in
the workshop."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

from elysium.models.types import utcnow

HOUSE_TIME = ZoneInfo("Europe/London")


def date_of(moment: datetime) -> date:
    """The date in London at ``moment`` (aware, as every stored moment is)."""
    return moment.astimezone(HOUSE_TIME).date()


def today() -> date:
    return date_of(utcnow())


def in_house_time(moment: datetime) -> datetime:
    """``moment`` on London's clock: the ``house_time`` filter, for a date or time a page
    shows a person."""
    return moment.astimezone(HOUSE_TIME)
