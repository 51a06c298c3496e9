"""Bespoke commissions (leads): the moves a lead's status may make, and its timeline.

Every change to a lead that a person (or Stripe) makes goes through :func:`move` or
:func:`record`, so the lead's page can always say who did what and when. The shopper's request
(``services.bespoke``), the back office (``services.staff_leads``) and quotes and deposits
(``services.quotes``) all build on these two.
"""

from __future__ import annotations

from sqlalchemy import select

from elysium.models.engagement import BespokeLead, LeadEvent, LeadStatus
from elysium.models.types import utcnow
from elysium.services.sql import AnySession, take_turns_on_sqlite

L = LeadStatus

# QUOTED is reached by sending a quote, WON by a paid deposit (or staff recording one paid
# another way); LOST can be reopened. A won commission is an order now: it does not move, unless
# the deposit that won it is given back (``deposit_given_back``).
ALLOWED_MOVES: dict[LeadStatus, frozenset[LeadStatus]] = {
    L.NEW: frozenset({L.CONTACTED, L.CONSULTATION, L.QUOTED, L.LOST}),
    L.CONTACTED: frozenset({L.CONSULTATION, L.QUOTED, L.LOST}),
    L.CONSULTATION: frozenset({L.CONTACTED, L.QUOTED, L.LOST}),
    L.QUOTED: frozenset({L.CONSULTATION, L.WON, L.LOST}),
    L.WON: frozenset(),
    L.LOST: frozenset({L.CONTACTED}),
}

LABELS: dict[LeadStatus, str] = {
    L.NEW: "New",
    L.CONTACTED: "Contacted",
    L.CONSULTATION: "Consultation",
    L.QUOTED: "Quoted",
    L.WON: "Won",
    L.LOST: "Lost",
}

SHOPPER_ACTOR = "shopper"
STRIPE_ACTOR = "stripe"


class IllegalMoveError(Exception):
    """A status change the lead's rules do not allow; nothing was changed."""

    def __init__(self, lead: BespokeLead, to_status: LeadStatus):
        super().__init__(f"lead {lead.reference}: {lead.status.value} -> {to_status.value}")
        self.from_status = lead.status
        self.to_status = to_status
        self.message = (
            f"A {LABELS[lead.status].lower()} commission can't be marked "
            f"{LABELS[to_status].lower()}."
        )


def can_move(from_status: LeadStatus, to_status: LeadStatus) -> bool:
    return to_status in ALLOWED_MOVES[from_status]


def record(
    session: AnySession,
    lead: BespokeLead,
    *,
    actor: str,
    actor_user_id: int | None = None,
    note: str = "",
) -> LeadEvent:
    """A line on the lead's timeline that changes no status (a note, an assignment, a quote)."""
    event = LeadEvent(lead=lead, actor=actor, actor_user_id=actor_user_id, note=note)
    event.created_at = utcnow()
    session.add(event)
    lead.updated_at = event.created_at
    return event


def move(
    session: AnySession,
    lead: BespokeLead,
    to_status: LeadStatus,
    *,
    actor: str,
    actor_user_id: int | None = None,
    note: str = "",
) -> LeadEvent:
    """Change the lead's status along an allowed move, on the timeline with who and why.

    The caller holds the lead's row (``lock_lead``) when two people could move it at once.
    """
    if not can_move(lead.status, to_status):
        raise IllegalMoveError(lead, to_status)
    event = record(session, lead, actor=actor, actor_user_id=actor_user_id, note=note)
    event.from_status = lead.status
    event.to_status = to_status
    lead.status = to_status
    return event


def won_by_deposit(session: AnySession, lead: BespokeLead) -> bool:
    """Whether the lead is WON because Stripe reported its deposit paid (not because staff
    recorded one paid another way)."""
    if lead.status is not L.WON:
        return False
    actor = session.scalar(
        select(LeadEvent.actor)
        .where(LeadEvent.lead_id == lead.id, LeadEvent.to_status == L.WON)
        .order_by(LeadEvent.id.desc())
        .limit(1)
    )
    return actor == STRIPE_ACTOR


def deposit_given_back(
    session: AnySession,
    lead: BespokeLead,
    *,
    actor: str,
    actor_user_id: int | None = None,
    note: str,
) -> LeadEvent:
    """A commission won by its deposit, the deposit given back (cancelled or refunded in full):
    LOST, the one move out of WON, which staff can't make by hand (the money decides). Like any
    lost commission it can be reopened and quoted again."""
    assert lead.status is L.WON  # and won_by_deposit, which the caller asked
    event = record(session, lead, actor=actor, actor_user_id=actor_user_id, note=note)
    event.from_status, event.to_status = lead.status, L.LOST
    lead.status = L.LOST
    return event


def lock_lead(session: AnySession, lead_id: int) -> BespokeLead | None:
    """The lead, its row locked until the transaction ends (on SQLite too:
    :func:`take_turns_on_sqlite`), read fresh so a status decided on is the one in the
    database."""
    take_turns_on_sqlite(session, BespokeLead, lead_id)
    return session.get(BespokeLead, lead_id, with_for_update=True, populate_existing=True)
