"""Bespoke commissions (leads) as the back office works them: the list with its status tabs,
search, assignee filter and pages; one lead in full with its timeline; and what staff do to a
lead (move its status, assign it, write a note), each a line on its timeline naming who.

The rules of the moves themselves live in :mod:`elysium.services.leads`; this module decides
which of them a person may make from the back office (a quote is sent, not clicked to
QUOTED), and guards against two people acting on the same lead at once: the lead's row is
locked and the status the person saw must still be the lead's status.

Every read costs a fixed number of queries, whatever the number of leads or events: the tab
counts are one query of conditional aggregates, a page of the list one query (with its
assignees joined), the staff members one query, one lead a handful.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, case, func, or_, select, true
from sqlalchemy.orm import joinedload, selectinload

from elysium.ids import as_id
from elysium.models.engagement import BespokeLead, LeadEvent, LeadStatus
from elysium.models.users import Role, User
from elysium.services import leads, quotes
from elysium.services.errors import InvalidInputError
from elysium.services.paging import Paged
from elysium.services.sql import AnySession
from elysium.services.staff_orders import NOTE_SENT_ALREADY, clean_note

L = LeadStatus
PER_PAGE = 25
SEARCH_MAX_TERMS = 6
NOTE_MAX_LENGTH = 2000
NEWEST_ON_DASHBOARD = 5

# Staff never click a lead to QUOTED: sending a quote does that (services.quotes). WON is
# reached by a paid deposit, or by staff from QUOTED when it was paid another way, with a note.
NOT_BY_HAND = frozenset({L.QUOTED})
NOTE_REQUIRED = frozenset({L.WON})

# The shop's words for a move, on its button.
MOVE_LABELS: dict[LeadStatus, str] = {
    L.NEW: "Mark new",
    L.CONTACTED: "Mark contacted",
    L.CONSULTATION: "Consultation booked",
    L.QUOTED: "Mark quoted",
    L.WON: "Won: deposit paid another way",
    L.LOST: "Mark lost",
}


def status_label(status: LeadStatus) -> str:
    return leads.LABELS[status]


class Tab(enum.StrEnum):
    """The list's tabs, in the order a commission goes through them."""

    NEW = "new"
    CONTACTED = "contacted"
    CONSULTATION = "consultation"
    QUOTED = "quoted"
    WON = "won"
    LOST = "lost"
    ALL = "all"

    @property
    def label(self) -> str:
        return "All" if self is Tab.ALL else leads.LABELS[LeadStatus(self.value)]


def _in_tab(tab: Tab) -> ColumnElement[bool]:
    if tab is Tab.ALL:
        return true()
    return BespokeLead.status == LeadStatus(tab.value)


class Sort(enum.StrEnum):
    NEWEST = "newest"
    OLDEST = "oldest"

    @property
    def label(self) -> str:
        return {"newest": "Newest first", "oldest": "Oldest first"}[self.value]


# The assignee filter: anyone, nobody, the person looking, or a member of staff by id.
ANYONE = ""
UNASSIGNED = "none"
ME = "me"


@dataclass(frozen=True)
class LeadFilters:
    tab: Tab = Tab.NEW
    q: str = ""
    assignee: str = ANYONE
    sort: Sort = Sort.NEWEST
    page: int = 1

    @property
    def narrowed(self) -> bool:
        """Whether a search or an assignee leaves some of the tab's leads out."""
        return bool(self.q or self.assignee)


REFERENCE = re.compile(r"^#?B?0*(\d{1,9})$", re.IGNORECASE | re.ASCII)


def _term(term: str) -> ColumnElement[bool]:
    found = [
        BespokeLead.name.icontains(term, autoescape=True),
        BespokeLead.email.icontains(term, autoescape=True),
        BespokeLead.message.icontains(term, autoescape=True),
    ]
    if (reference := REFERENCE.match(term)) and term[:1].upper() in "B#":
        found.append(BespokeLead.id == int(reference.group(1)))
    return or_(*found)


def _assigned(assignee: str, me: int) -> ColumnElement[bool] | None:
    if assignee == UNASSIGNED:
        return BespokeLead.assigned_to_id.is_(None)
    if assignee == ME:
        return BespokeLead.assigned_to_id == me
    if (assignee_id := as_id(assignee)) is not None:
        return BespokeLead.assigned_to_id == assignee_id
    return None


def _matching(filters: LeadFilters, me: int) -> list[ColumnElement[bool]]:
    """The search and the assignee (not the tab: the counts need every tab)."""
    conditions = [_term(term) for term in filters.q.split()[:SEARCH_MAX_TERMS]]
    if (assigned := _assigned(filters.assignee, me)) is not None:
        conditions.append(assigned)
    return conditions


def _ordered(statement: Select[Any], sort: Sort) -> Select[Any]:
    if sort is Sort.OLDEST:
        return statement.order_by(BespokeLead.created_at.asc(), BespokeLead.id.asc())
    return statement.order_by(BespokeLead.created_at.desc(), BespokeLead.id.desc())


def tab_counts(session: AnySession, filters: LeadFilters, me: int) -> dict[Tab, int]:
    """How many leads each tab holds under the search and assignee: one query."""
    columns = [func.count(case((_in_tab(tab), BespokeLead.id))).label(tab.name) for tab in Tab]
    row = session.execute(
        select(*columns).select_from(BespokeLead).where(*_matching(filters, me))
    ).one()
    return {tab: int(row._mapping[tab.name] or 0) for tab in Tab}


@dataclass
class LeadList(Paged):
    filters: LeadFilters
    counts: dict[Tab, int]
    rows: list[BespokeLead]
    page: int
    per_page: int
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.counts[self.filters.tab]


def lead_list(
    session: AnySession, filters: LeadFilters, *, me: int, per_page: int = PER_PAGE
) -> LeadList:
    """The tab counts and one page of the chosen tab, assignees included: two queries. A page
    past the end shows the last page, with a note."""
    counts = tab_counts(session, filters, me)
    pages = max((counts[filters.tab] + per_page - 1) // per_page, 1)
    notes = []
    page = filters.page
    if page > pages:
        notes.append(f"There is no page {page}; here is page {pages}.")
        page = pages
    statement = _ordered(
        select(BespokeLead)
        .options(joinedload(BespokeLead.assigned_to))
        .where(*_matching(filters, me), _in_tab(filters.tab)),
        filters.sort,
    )
    rows = list(session.scalars(statement.limit(per_page).offset((page - 1) * per_page)))
    return LeadList(
        filters=filters, counts=counts, rows=rows, page=page, per_page=per_page, notes=notes
    )


def staff_members(session: AnySession) -> list[User]:
    """Everyone a lead can be assigned to, by name: one query."""
    return list(
        session.scalars(
            select(User)
            .where(User.role == Role.STAFF)
            .order_by(User.first_name, User.last_name, User.email)
        )
    )


# One lead


class EntryKind(enum.StrEnum):
    STATUS = "status"  # the lead moved
    NOTE = "note"  # anything else written down: a note, an assignment, a quote


@dataclass(frozen=True)
class TimelineEntry:
    at: datetime
    kind: EntryKind
    who: str
    title: str
    text: str
    staff: bool


def _entry(event: LeadEvent) -> TimelineEntry:
    if event.to_status is not None:
        moved = status_label(event.to_status)
        if event.from_status is not None:
            moved = f"{status_label(event.from_status)} → {moved}"
        kind, title = EntryKind.STATUS, moved
    else:
        kind, title = EntryKind.NOTE, ""
    return TimelineEntry(
        at=event.created_at,
        kind=kind,
        who=event.actor,
        title=title,
        text=event.note,
        staff=event.actor_user_id is not None,
    )


@dataclass
class LeadDetail:
    lead: BespokeLead
    timeline: list[TimelineEntry]
    moves: list[LeadStatus]
    staff: list[User]


def staff_moves(status: LeadStatus) -> list[LeadStatus]:
    """The moves the back office offers from ``status``, in the order of the statuses."""
    allowed = leads.ALLOWED_MOVES[status] - NOT_BY_HAND
    return [to for to in LeadStatus if to in allowed]


def lead_detail(session: AnySession, lead_id: int) -> LeadDetail | None:
    """One lead with everything the back office shows about it, in a fixed number of queries:
    the lead with its piece and assignee, its events, its quotes, and the staff members."""
    lead = session.scalar(
        select(BespokeLead)
        .where(BespokeLead.id == lead_id)
        .options(
            joinedload(BespokeLead.product),
            joinedload(BespokeLead.assigned_to),
            selectinload(BespokeLead.events),
            selectinload(BespokeLead.quotes),
        )
        .execution_options(populate_existing=True)
    )
    if lead is None:
        return None
    return LeadDetail(
        lead=lead,
        timeline=[_entry(event) for event in lead.events],
        moves=staff_moves(lead.status),
        staff=staff_members(session),
    )


# What staff do to a lead


class LeadActionError(Exception):
    """An action refused: ``status`` is 409 when the lead can't do it (or moved meanwhile),
    422 when the form needs fixing; ``field`` names the field a 422 is about."""

    def __init__(self, message: str, status: int = 409, field: str = ""):
        super().__init__(message)
        self.message = message
        self.status = status
        self.field = field


class NoteError(InvalidInputError):
    """A note that can't be kept (empty, or too long)."""


def _note(text: str, *, required: bool, message: str = "Write the note first.") -> str:
    note = clean_note(text)
    if required and not note:
        raise NoteError({"note": message})
    if len(note) > NOTE_MAX_LENGTH:
        raise NoteError({"note": f"Keep a note to {NOTE_MAX_LENGTH} characters."})
    return note


def _status(value: str) -> LeadStatus | None:
    try:
        return LeadStatus(value)
    except ValueError:
        return None


def _locked(session: AnySession, lead_id: int) -> BespokeLead:
    lead = leads.lock_lead(session, lead_id)
    if lead is None:
        raise LookupError(lead_id)
    return lead


def change_status(
    session: AnySession,
    lead_id: int,
    *,
    seen: str,
    newest_seen: str,
    to: str,
    note: str,
    actor: str,
    actor_user_id: int,
) -> LeadEvent:
    """Move the lead from the status the person saw (``seen``) to ``to``, on its timeline.

    ``newest_seen`` is the newest quote the page showed ("" for none,
    ``quotes.newest_quote_mark``): a revised quote sent meanwhile leaves the status QUOTED,
    but "won: deposit paid another way" (or lost, or back to talks) was decided on the quote
    the page showed, so it is refused too.

    Refused, changing nothing: a status that isn't one (422); a lead someone else moved first,
    or quoted again (409); a move the rules don't allow, or one that only a quote makes (409);
    WON without a note saying how it was paid (422). Raises ``LookupError`` for a lead that
    doesn't exist.
    """
    lead = _locked(session, lead_id)
    to_status, seen_status = _status(to), _status(seen)
    if to_status is None:
        raise LeadActionError("Choose what the commission becomes.", 422)
    if seen_status is not lead.status:
        raise LeadActionError(
            f"Someone else changed this commission first: it is now "
            f"{status_label(lead.status).lower()}. Nothing was changed; look again and retry."
        )
    if newest_seen != quotes.newest_quote_mark(lead):
        newest = max(lead.quotes, key=lambda quote: quote.id)
        sums = quotes.amounts(newest)
        raise LeadActionError(
            f"Another quote was sent on this commission since this page was drawn: the newest is "
            f"{sums['price']}, deposit {sums['deposit']}. Nothing was changed; look again and "
            "retry."
        )
    if to_status in NOT_BY_HAND:
        raise LeadActionError("A commission is marked quoted by sending it a quote.")
    if not leads.can_move(lead.status, to_status):
        raise LeadActionError(leads.IllegalMoveError(lead, to_status).message)
    kept = _note(
        note,
        required=to_status in NOTE_REQUIRED,
        message="Say how the deposit was paid (it wasn't paid through the quote page).",
    )
    event = leads.move(
        session, lead, to_status, actor=actor, actor_user_id=actor_user_id, note=kept
    )
    session.flush()
    return event


def assign(
    session: AnySession,
    lead_id: int,
    assignee: str,
    *,
    seen: str | None,
    actor: str,
    actor_user_id: int,
) -> LeadEvent | None:
    """Give the lead to a member of staff (``assignee`` their id) or to nobody (""), on the
    timeline as "Assigned to …" or "Unassigned". The same assignee again changes nothing
    (returns None). Anyone who isn't staff is refused (422). ``seen``: who had it on the page
    the form came from ("" for nobody); if that changed since (two of the staff assigning at
    once), the form is refused (409) rather than silently undo the other's choice."""
    lead = _locked(session, lead_id)
    if seen is None or seen != str(lead.assigned_to_id or ""):
        holder = lead.assigned_to.display_name if lead.assigned_to else "nobody"
        raise LeadActionError(
            f"Someone changed who has this commission since this page was drawn: it is now "
            f"{holder}. Choose again if it should still change.",
            409,
            "assignee",
        )
    person: User | None = None
    if assignee:
        assignee_id = as_id(assignee)
        person = session.get(User, assignee_id) if assignee_id is not None else None
        if person is None or person.role is not Role.STAFF:
            raise LeadActionError("Choose a member of staff.", 422, "assignee")
    if lead.assigned_to_id == (person.id if person else None):
        return None
    lead.assigned_to = person
    text = f"Assigned to {person.display_name} ({person.email})" if person else "Unassigned"
    event = leads.record(session, lead, actor=actor, actor_user_id=actor_user_id, note=text)
    session.flush()
    return event


def add_note(
    session: AnySession,
    lead_id: int,
    text: str,
    *,
    actor: str,
    actor_user_id: int,
    request_key: str = "",
) -> LeadEvent:
    """An internal note on the lead's timeline, as typed (line breaks made one kind); the
    same form sent again (its ``request_key``) is the note it added."""
    note = _note(text, required=True)
    lead = _locked(session, lead_id)
    if request_key:
        added = session.scalar(
            select(LeadEvent).where(
                LeadEvent.lead_id == lead.id, LeadEvent.request_key == request_key
            )
        )
        if added is not None:
            if added.note != note:  # sent again with other words: not taken for them
                raise NoteError({"note": NOTE_SENT_ALREADY})
            return added
    event = leads.record(session, lead, actor=actor, actor_user_id=actor_user_id, note=note)
    event.request_key = request_key or None
    session.flush()
    return event


def lead_by_id(session: AnySession, lead_id: int) -> BespokeLead | None:
    return session.get(BespokeLead, lead_id)


# The dashboard


@dataclass(frozen=True)
class NewLeads:
    count: int
    newest: list[Any]  # rows of (id, name, category, created_at)


def new_leads(session: AnySession, few: int = NEWEST_ON_DASHBOARD) -> NewLeads:
    """How many leads nobody has answered yet, and the newest few: one query (the count rides
    along each row; no rows means none)."""
    rows = session.execute(
        select(
            BespokeLead.id,
            BespokeLead.name,
            BespokeLead.category,
            BespokeLead.created_at,
            func.count().over().label("total"),
        )
        .where(BespokeLead.status == LeadStatus.NEW)
        .order_by(BespokeLead.created_at.desc(), BespokeLead.id.desc())
        .limit(few)
    ).all()
    return NewLeads(count=int(rows[0].total) if rows else 0, newest=list(rows))
