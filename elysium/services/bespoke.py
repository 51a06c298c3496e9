"""A shopper's request for a bespoke piece: the rules of the form, and saving it as a lead.

Every field is checked here, one at a time (the page checks each as the shopper leaves it) and
all together on submit, with the same messages. Text is kept exactly as typed, outer
whitespace aside; pages and emails escape it. :func:`submit_request` saves the lead, its first
timeline line and both emails in the caller's one unit of work, so with the email provider
down the lead is still saved and the emails leave later from the outbox.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass
from datetime import date
from typing import Any
from urllib.parse import parse_qs, urlencode

from email_validator import EmailNotValidError, validate_email
from flask import current_app
from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from elysium.countries import typed_as_ascii
from elysium.house_time import today
from elysium.models.catalog import Product
from elysium.models.engagement import BespokeLead, LeadStatus
from elysium.models.users import User
from elysium.services import catalog, leads
from elysium.services.accounts import address_as_kept
from elysium.services.configuration import ConfigurationError, configure, summary
from elysium.services.errors import InvalidInputError
from elysium.services.outbox import queue_email
from elysium.services.profiles import (
    PHONE_PATTERN,
    PREFERRED_METALS,
    printable_problem,
    shows_nothing,
)
from elysium.services.sql import AnySession

PIECE_TYPES: dict[str, str] = {
    "ring": "A ring",
    "necklace": "A necklace or pendant",
    "earrings": "Earrings",
    "bracelet": "A bracelet",
    "other": "Something else",
}
NOT_SURE = "not-sure"
METAL_PREFERENCES: dict[str, str] = {**PREFERRED_METALS, NOT_SURE: "Not sure yet"}
BUDGETS: dict[str, str] = {
    "under-2500": "Under £2,500",
    "2500-5000": "£2,500 to £5,000",
    "5000-10000": "£5,000 to £10,000",
    "10000-25000": "£10,000 to £25,000",
    "over-25000": "Over £25,000",
    NOT_SURE: "I'd rather talk it through",
}

NAME_MAX_LENGTH = 200
EMAIL_MAX_LENGTH = 254
PHONE_MAX_LENGTH = 40
MESSAGE_MAX_LENGTH = 4000
WANTED_BY_MAX_YEARS = 2
FIELDS = (
    "name",
    "email",
    "phone",
    "piece_type",
    "metal",
    "budget",
    "wanted_by",
    "message",
    "consent",
)
FILL_SALT = "elysium.bespoke.started"
RECEIVED = "Request received"


class BespokeError(InvalidInputError):
    """The request can't be saved: a message per field."""


@dataclass(frozen=True)
class StartingPiece:
    """ "Start from this piece": a published product in a configuration it offers."""

    product: Product
    choices: dict[str, str]

    @property
    def summary(self) -> str:
        return summary(self.product, configure(self.product, self.choices))

    @property
    def token(self) -> str:
        """What the form's hidden field carries; read back with :func:`starting_piece_from`."""
        return urlencode({"from": self.product.slug, **self.choices})


@dataclass
class BespokeRequest:
    """The form as sent: every value a string as typed (the consent a flag)."""

    name: str = ""
    email: str = ""
    phone: str = ""
    piece_type: str = ""
    metal: str = ""
    budget: str = ""
    wanted_by: str = ""
    message: str = ""
    consent: bool = False
    piece: StartingPiece | None = None


def latest_wanted_by(on: date) -> date:
    try:
        return on.replace(year=on.year + WANTED_BY_MAX_YEARS)
    except ValueError:  # 29 February
        return on.replace(year=on.year + WANTED_BY_MAX_YEARS, day=28)


def _one_line(value: str, what: str) -> str | None:
    if "\r" in value or "\n" in value:
        return f"Please keep your {what} on one line."
    if printable_problem(value) or any(char in value for char in "\t\x85\u2028\u2029"):
        return f"Your {what} has a character we can't use."
    return None


def _message(value: str) -> str:
    """The message as typed: a browser sends each line break of a text area as CRLF, which is
    one character to the shopper, so it is counted and kept as one."""
    return value.replace("\r\n", "\n").strip()


def check(name: str, value: Any, *, on: date | None = None) -> str | None:
    """What is wrong with one field as sent (``None``: nothing). Text is judged without its
    outer whitespace, which is all that is ever taken off it."""
    text = value.strip() if isinstance(value, str) else ""
    if name == "name":
        if problem := _one_line(value or "", "name"):
            return problem
        if shows_nothing(text):
            return "Please tell us your name."
        if len(text) > NAME_MAX_LENGTH:
            return f"Please keep your name under {NAME_MAX_LENGTH} characters."
    elif name == "email":
        if problem := _one_line(value or "", "email address"):
            return problem
        if not text:
            return "Please give us an email address, so we can write back."
        if len(text) > EMAIL_MAX_LENGTH:
            return "That email address is too long."
        try:
            validate_email(text, check_deliverability=False)
        except EmailNotValidError:
            return "Enter an email address like name@example.com."
    elif name == "phone":
        if problem := _one_line(value or "", "phone number"):
            return problem
        phone = typed_as_ascii(text)
        if phone and (len(phone) > PHONE_MAX_LENGTH or not PHONE_PATTERN.fullmatch(phone)):
            return "Enter a phone number with digits, spaces and + only, or leave it empty."
    elif name == "piece_type":
        if text not in PIECE_TYPES:
            return "Choose the kind of piece you have in mind."
    elif name == "metal":
        if text not in METAL_PREFERENCES:
            return "Choose a metal, or “Not sure yet”."
    elif name == "budget":
        if text not in BUDGETS:
            return "Choose a budget, or let us talk it through."
    elif name == "wanted_by":
        return _wanted_by_problem(text, on or today())
    elif name == "message":
        text = _message(value) if isinstance(value, str) else ""
        if shows_nothing(text):
            return "Please tell us about the piece you imagine."
        if len(text) > MESSAGE_MAX_LENGTH:
            return (
                f"Please keep this under {MESSAGE_MAX_LENGTH:,} characters "
                f"(it is {len(text):,}); we can talk through the rest."
            )
    elif name == "consent" and value is not True:
        return "Please let us contact you about your request, or we can't reply."
    return None


def _wanted_by_problem(text: str, on: date) -> str | None:
    if not text:
        return None
    wanted = parse_date(text)
    if wanted is None:
        return "Enter a date like 2027-06-21, or leave it empty."
    if wanted < on:
        return "That date has passed: choose a day from today on."
    if wanted > latest_wanted_by(on):
        return "We plan commissions up to two years ahead: choose an earlier date."
    return None


def parse_date(text: str) -> date | None:
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def problems(data: BespokeRequest, *, on: date | None = None) -> dict[str, str]:
    """Every field's message, in the form's order."""
    found = {}
    for name in FIELDS:
        if message := check(name, getattr(data, name), on=on):
            found[name] = message
    return found


def starting_piece(session: AnySession, slug: str, choices: dict[str, str]) -> StartingPiece | None:
    """The published piece and configuration a shopper came from; anything unknown or not
    offered is no piece at all (never an error: the form works without one)."""
    if not slug or not isinstance(slug, str):
        return None
    product = catalog.product_by_slug(session, slug)
    if product is None:
        return None
    wanted = {
        name: value
        for name in ("metal", "diamond")
        if isinstance(value := choices.get(name), str) and value
    }
    try:
        configuration = configure(product, wanted)
    except ConfigurationError:
        return None
    chosen = {"metal": configuration.metal}
    if configuration.diamond:
        chosen["diamond"] = configuration.diamond
    return StartingPiece(product, chosen)


def starting_piece_from(session: AnySession, token: str | None) -> StartingPiece | None:
    """The piece a form's hidden field names (see :attr:`StartingPiece.token`)."""
    if not token:
        return None
    try:
        parsed = parse_qs(token, max_num_fields=5)
    except ValueError:  # more fields than a piece has: not one of ours
        return None
    values = {name: items[0] for name, items in parsed.items()}
    return starting_piece(session, values.get("from", ""), values)


# The minimum fill time: the form carries the moment it was drawn, signed.


NONCE_MAX_LENGTH = 32  # BespokeLead.form_nonce


def _fill_serializer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt=FILL_SALT)


def fill_token(started: float | None = None) -> str:
    """The drawn form's signed token: when it was drawn, and a nonce of its own that the
    request sent from it keeps (``BespokeLead.form_nonce``)."""
    when = int(started if started is not None else time.time())
    return _fill_serializer().dumps([when, secrets.token_urlsafe(16)])


def _fill_values(token: str | None) -> tuple[int, str | None] | None:
    """A token's time and nonce (a token drawn before nonces were: its time alone)."""
    if not token:
        return None
    try:
        values = _fill_serializer().loads(token)
    except BadSignature:
        return None
    if isinstance(values, int) and not isinstance(values, bool):
        return values, None
    if (
        isinstance(values, list)
        and len(values) == 2
        and isinstance(values[0], int)
        and not isinstance(values[0], bool)
        and isinstance(values[1], str)
        and 0 < len(values[1]) <= NONCE_MAX_LENGTH
    ):
        return values[0], values[1]
    return None


def fill_started(token: str | None) -> float | None:
    """When the form carrying ``token`` was drawn; ``None`` when missing or tampered with."""
    values = _fill_values(token)
    return float(values[0]) if values is not None else None


def fill_nonce(token: str | None) -> str | None:
    """The nonce of the form carrying ``token``; ``None`` when it has none or is tampered with."""
    values = _fill_values(token)
    return values[1] if values is not None else None


def sent_from(session: AnySession, nonce: str | None) -> BespokeLead | None:
    """The request already sent from the form with this nonce, if any."""
    if nonce is None:
        return None
    return session.scalar(select(BespokeLead).where(BespokeLead.form_nonce == nonce))


def fill_token_to_keep(token: str | None) -> str:
    """The start time a refused form carries again: the shopper's own while it is true (their
    time so far counts), a new one when it is missing, forged or in the future."""
    started = fill_started(token)
    if started is None or started > time.time() + 60:
        return fill_token()
    return token or fill_token()


def filled_too_fast(token: str | None, now: float | None = None) -> bool:
    started = fill_started(token)
    now = now if now is not None else time.time()
    minimum = current_app.config["BESPOKE_MIN_FILL_SECONDS"]
    return started is None or now - started < minimum or started > now + 60


def submit_request(
    session: AnySession,
    data: BespokeRequest,
    *,
    user_id: int | None = None,
    form_nonce: str | None = None,
) -> BespokeLead:
    """Save the request as a NEW lead with its first timeline line, and queue the shopper's
    acknowledgement and the house's notification, all in the caller's unit of work (nothing
    is committed here). Raises :class:`BespokeError` when a field is wrong. The form's nonce
    is kept once: a second lead from the same form fails its unique constraint (the caller
    finds the first with :func:`sent_from`)."""
    on = today()
    if errors := problems(data, on=on):
        raise BespokeError(errors)
    piece = data.piece
    lead = BespokeLead(
        name=data.name.strip(),
        email=address_as_kept(session, data.email),
        phone=typed_as_ascii(data.phone).strip(),  # as the house can dial it
        category=data.piece_type.strip(),
        preferred_metal=data.metal.strip(),
        budget=data.budget.strip(),
        wanted_by=parse_date(data.wanted_by.strip()),
        message=_message(data.message),
        product_id=piece.product.id if piece else None,
        configuration=dict(piece.choices) if piece else {},
        contact_consent=True,
        status=LeadStatus.NEW,
        user_id=user_id,
        form_nonce=form_nonce,
    )
    session.add(lead)
    session.flush()
    leads.record(session, lead, actor=leads.SHOPPER_ACTOR, note=RECEIVED)
    context = {"lead": lead, "piece": piece, **labels(lead)}
    # Anyone may type any address in the form: the acknowledgement repeats what was typed
    # (the name, the message) only to the signed-in account's own address, so the form can't
    # send the house's email with a stranger's words to someone else's inbox.
    account = session.get(User, user_id) if user_id is not None else None
    queue_email(
        session,
        to=lead.email,
        subject=f"We have your request, {lead.reference}",
        template="bespoke_received",
        context={**context, "own_words": account is not None and account.email == lead.email},
        user_id=user_id,
        dedupe_key=f"bespoke:{lead.id}:received",
    )
    queue_email(
        session,
        to=current_app.config["BESPOKE_NOTIFY_EMAIL"],
        subject=f"New bespoke request {lead.reference}: {PIECE_TYPES[lead.category]}",
        template="bespoke_new_lead",
        context=context,
        dedupe_key=f"bespoke:{lead.id}:notify",
    )
    return lead


def submit_once(
    session: AnySession, data: BespokeRequest, *, user_id: int | None, form_nonce: str | None
) -> tuple[BespokeLead, bool]:
    """:func:`submit_request`, unless the form with this nonce was sent already (a double
    click, its answer lost): then the request it made, and False. Two sends at once collide
    on the nonce; the caller's retry (``committed_with_retry``) finds the first's."""
    sent = sent_from(session, form_nonce)
    if sent is not None:
        return sent, False
    return submit_request(session, data, user_id=user_id, form_nonce=form_nonce), True


def labels(lead: BespokeLead) -> dict[str, str]:
    """How the lead's choices read to a person."""
    return {
        "piece_type_label": PIECE_TYPES.get(lead.category, lead.category),
        "metal_label": METAL_PREFERENCES.get(lead.preferred_metal, lead.preferred_metal),
        "budget_label": BUDGETS.get(lead.budget, lead.budget),
        "status_label": leads.LABELS[lead.status],
    }


def leads_of(session: AnySession, user_id: int) -> list[BespokeLead]:
    """A shopper's own commissions, newest first, with their quotes."""
    return list(
        session.scalars(
            select(BespokeLead)
            .where(BespokeLead.user_id == user_id)
            .options(selectinload(BespokeLead.quotes))
            .order_by(BespokeLead.created_at.desc(), BespokeLead.id.desc())
        )
    )
