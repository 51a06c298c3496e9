"""Quotes on bespoke commissions, and the deposit that secures one.

Staff write a quote on a lead (:func:`send_quote`): the server works out the deposit, a newer
quote withdraws the older ones, the lead moves to QUOTED (through ``services.leads``) and the
shopper is emailed a signed link to the quote's page (:func:`quote_token`).

The deposit is paid with the bag's own machinery (``services.checkout``): an order of one
line, "Deposit — commission #B00042", made by ``checkout.create_pending_order`` with its
expiry, sent to Stripe by ``checkout.begin_payment`` (idempotency key from the order number)
and resumed by ``checkout.resume_order``; the webhook (``services.payments``) marks it paid
through the order state machine and then calls :func:`deposit_paid`, in its transaction.
Services never commit: the caller does.
"""

from __future__ import annotations

import enum
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta

from flask import current_app
from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import ColumnElement, and_, exists, or_, select

from elysium.integrations import stripe_gateway
from elysium.models.engagement import BespokeLead, BespokeQuote, LeadStatus
from elysium.models.orders import Order, OrderLine, OrderStatus
from elysium.models.types import utcnow
from elysium.money import format_money, parse_amount
from elysium.services import checkout, leads, orders
from elysium.services.accounts import normalise_email
from elysium.services.errors import InvalidInputError
from elysium.services.outbox import queue_email
from elysium.services.sql import AnySession
from elysium.urls import absolute_url

TOKEN_SALT = "elysium.bespoke-quote"  # noqa: S105 (a salt, not a secret)
DEFAULT_DEPOSIT_PERCENT = 30
MIN_PRICE = 100  # £1
# £999,999.99: a typing slip beyond, not a commission, and Stripe takes no larger payment.
MAX_PRICE = stripe_gateway.MAX_AMOUNT
MIN_DEPOSIT = 50  # Stripe takes no less than 50p
MAX_VALID_DAYS = 365
DESCRIPTION_MAX = 4000
DEPOSIT_LINE = "Deposit — commission #{reference}"
# Why a deposit order is flagged for staff (the money is recorded, never lost silently).
DEPOSIT_WITHDRAWN_FLAG = "Deposit paid for a quote that had been replaced: check it with the client"
DEPOSIT_WON_ANOTHER_WAY_FLAG = (
    "Deposit paid for a commission already marked won, its deposit paid another way: "
    "check the client hasn't paid twice"
)
DEPOSIT_LEAD_CLOSED_FLAG = (
    "Deposit paid for a commission that is {status}: check it with the client"
)
# Two payment pages open at once (a quote's, and its revision's): both paid.
SECOND_DEPOSIT_FLAG = (
    "Another deposit for this commission was paid too: give one back to the client"
)
# Orders that hold (or held) the deposit's money or its payment page: one at a time.
LIVE = frozenset(
    {
        OrderStatus.PENDING,
        OrderStatus.PROCESSING,
        OrderStatus.PAID,
        OrderStatus.FULFILLED,
        OrderStatus.SHIPPED,
        OrderStatus.DELIVERED,
    }
)
# Of those, the ones whose deposit is paid (not given back) or on its way from the bank: one
# of them holds the commission's other quotes (``QuoteState.HELD``).
HOLDING = LIVE - {OrderStatus.PENDING}


def holds_deposit(order: Order) -> bool:
    """Whether the order holds a deposit for its commission: paid (not given back) or on its
    way from the bank, or paid after the order had ended unpaid (cancelled, its page expired)
    and not given back yet: that money is the studio's to settle, and takes no second one."""
    return order.status in HOLDING or _kept_late(order)


def _kept_late(order: Order) -> bool:
    return order.late_payment_at is not None and order.refunded_amount < order.total


def _kept_late_sql() -> ColumnElement[bool]:
    return and_(Order.late_payment_at.is_not(None), Order.refunded_amount < Order.total)


def _holds_deposit_sql() -> ColumnElement[bool]:
    """:func:`holds_deposit`, in SQL."""
    return or_(Order.status.in_(sorted(HOLDING)), _kept_late_sql())


def _live_sql() -> ColumnElement[bool]:
    """A deposit order being paid, or holding its deposit (:func:`holds_deposit`)."""
    return or_(Order.status.in_(sorted(LIVE)), _kept_late_sql())


class QuoteError(InvalidInputError):
    """A quote that can't be written as typed; ``errors`` by field (a 422)."""


class QuoteRefusedError(Exception):
    """Not possible for this quote or lead now; ``message`` says why (a 409)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class QuoteInput:
    """What the staff member typed: the price as text ("4,800.00"), the percentage too."""

    description: str
    price: str
    deposit_percent: str
    valid_until: date | None


def deposit_for(price: int, percent: int) -> int:
    """The deposit, in minor units, rounded half up to the penny."""
    return (price * percent + 50) // 100


def _clean(data: QuoteInput, currency: str, today: date) -> tuple[str, int, int, date]:
    errors: dict[str, str] = {}
    description = orders.readable((data.description or "").replace("\r\n", "\n")).strip()
    if not description:
        errors["description"] = "Describe the piece the price is for."
    elif len(description) > DESCRIPTION_MAX:
        errors["description"] = f"Keep the description to {DESCRIPTION_MAX} characters."
    price = parse_amount(data.price, currency)
    if price is None:
        errors["price"] = "Enter the price in pounds, for example 4,800.00."
    elif not MIN_PRICE <= price <= MAX_PRICE:
        errors["price"] = (
            f"Enter a price between {format_money(MIN_PRICE, currency)} and "
            f"{format_money(MAX_PRICE, currency)}."
        )
    text = (data.deposit_percent or "").strip().rstrip("%").strip()
    percent = int(text) if text.isascii() and text.isdigit() and len(text) <= 3 else None
    if percent is None or not 1 <= percent <= 100:
        errors["deposit_percent"] = "Enter a whole percentage from 1 to 100."
    elif price is not None and "price" not in errors and deposit_for(price, percent) < MIN_DEPOSIT:
        errors["deposit_percent"] = (
            f"The deposit must be at least {format_money(MIN_DEPOSIT, currency)}."
        )
    valid_until = data.valid_until
    if valid_until is None:
        errors["valid_until"] = "Choose the date the quote is valid until."
    elif valid_until <= today:
        errors["valid_until"] = "Choose a date after today."
    elif valid_until > today + timedelta(days=MAX_VALID_DAYS):
        errors["valid_until"] = "A quote can be valid for a year at most."
    if errors:
        raise QuoteError(errors)
    assert price is not None
    assert percent is not None
    assert valid_until is not None
    return description, price, percent, valid_until


def current_quote(lead: BespokeLead) -> BespokeQuote | None:
    """The lead's newest quote not withdrawn (paid or not)."""
    live = [quote for quote in lead.quotes if quote.withdrawn_at is None]
    return live[-1] if live else None


def newest_quote_mark(lead: BespokeLead) -> str:
    """The id of the lead's newest quote as a page's forms carry it ("" for none): a form says
    which quote was newest when its page was drawn (``newest_seen``), so a quote sent since
    refuses it."""
    newest = max((quote.id for quote in lead.quotes), default=None)
    return "" if newest is None else str(newest)


def send_quote(
    session: AnySession,
    lead_id: int,
    data: QuoteInput,
    *,
    staff_name: str,
    staff_user_id: int,
    today: date,
    newest_seen: str | None,
) -> BespokeQuote:
    """Write a quote on the lead and send it: the deposit worked out here, any earlier quote
    withdrawn, the lead QUOTED (or "Revised quote sent" on its timeline when it already is)
    and the email with the quote's link queued, all in the caller's transaction.

    ``newest_seen``: the id of the newest quote the form's page showed ("" for none). Another
    sent since (the same form sent twice, two of the staff quoting at once) refuses this one:
    the client would be emailed two quotes, the first withdrawn as they read it. A form that
    doesn't say (``None``: not the page's form) is refused too: it could not be checked.

    Raises :class:`QuoteError` (the input) or :class:`QuoteRefusedError` (won, lost, gone).
    """
    currency = current_app.config["SHOP_CURRENCY"]
    description, price, percent, valid_until = _clean(data, currency, today)
    # The deposit orders this quote may end, before the commission: every path takes an
    # order's lock before its commission's (see :func:`_end_deposits_without_a_page`).
    held = _hold_deposits_without_a_page(session, lead_id)
    lead = leads.lock_lead(session, lead_id)
    if lead is None:
        raise QuoteRefusedError("This commission no longer exists.")
    if not lead.email:
        raise QuoteRefusedError(
            "This client closed their account: there is no address to send a quote to."
        )
    if lead.status is not LeadStatus.QUOTED and not leads.can_move(lead.status, LeadStatus.QUOTED):
        raise QuoteRefusedError(
            f"A {leads.LABELS[lead.status].lower()} commission can't be quoted"
            + (": reopen it first." if lead.status is LeadStatus.LOST else ".")
        )
    if newest_seen is None:
        raise QuoteRefusedError(
            "This form doesn't say which quotes its page showed: send it again from the "
            "commission's page."
        )
    if newest_seen != newest_quote_mark(lead):
        raise QuoteRefusedError(
            "Another quote was sent on this commission since this page was drawn: read it "
            "below, then send yours if it is still needed."
        )
    now = utcnow()
    withdrawn = []
    for earlier in lead.quotes:
        if earlier.withdrawn_at is None and earlier.paid_at is None:
            earlier.withdrawn_at = now
            withdrawn.append(earlier.id)
    _end_deposits_without_a_page(
        session, withdrawn, held, actor=staff_name, actor_user_id=staff_user_id
    )
    quote = BespokeQuote(
        lead=lead,
        description=description,
        price=price,
        currency=currency,
        deposit_percent=percent,
        deposit_amount=deposit_for(price, percent),
        valid_until=valid_until,
        created_by_id=staff_user_id,
        created_at=now,
    )
    session.add(quote)
    session.flush()
    summary = (
        f"{format_money(price, currency)}, deposit {percent}% "
        f"({format_money(quote.deposit_amount, currency)}), valid until "
        f"{valid_until.strftime('%-d %B %Y')}"
    )
    if lead.status is LeadStatus.QUOTED:
        leads.record(
            session,
            lead,
            actor=staff_name,
            actor_user_id=staff_user_id,
            note=f"Revised quote sent: {summary}",
        )
    else:
        leads.move(
            session,
            lead,
            LeadStatus.QUOTED,
            actor=staff_name,
            actor_user_id=staff_user_id,
            note=f"Quote sent: {summary}",
        )
    queue_email(
        session,
        to=lead.email,
        subject=f"Your quote from ELYSIUM, commission {lead.reference}",
        template="quote_sent",
        context={"lead": lead, "quote": quote, **amounts(quote), "quote_url": quote_url(quote)},
        user_id=lead.user_id,
        dedupe_key=f"quote:{quote.id}:sent",
    )
    session.flush()
    return quote


def _deposits_without_a_page(session: AnySession, *where: ColumnElement[bool]) -> list[int]:
    """The deposit orders of the quotes ``where`` says whose payment page is being made (or
    never was): PENDING, no page stored. In id order."""
    return list(
        session.scalars(
            select(Order.id)
            .join(BespokeQuote, Order.bespoke_quote_id == BespokeQuote.id)
            .where(
                *where,
                Order.status == OrderStatus.PENDING,
                Order.stripe_checkout_session_id.is_(None),
            )
            .order_by(Order.id)
        )
    )


def _hold_deposits_without_a_page(session: AnySession, lead_id: int) -> set[int]:
    """Before the commission's lock: the orders a quote sent now may end (those of its quotes
    still payable, :func:`_end_deposits_without_a_page`), locked in id order. Which they are
    is read again under the commission's lock, which settles it: a deposit order is made
    only under that lock (``start_deposit``)."""
    order_ids = _deposits_without_a_page(
        session,
        BespokeQuote.lead_id == lead_id,
        BespokeQuote.withdrawn_at.is_(None),
        BespokeQuote.paid_at.is_(None),
    )
    return {order_id for order_id in order_ids if checkout.lock_order(session, order_id)}


def _end_deposits_without_a_page(
    session: AnySession, quote_ids: list[int], held: set[int], *, actor: str, actor_user_id: int
) -> None:
    """The withdrawn quotes' deposit orders whose payment page is being made (or never was)
    are cancelled, as any order with no page is (``checkout.settle``): the page Stripe is
    making for one is then not stored (``begin_payment`` keeps an order ended meanwhile
    ended, closes the new page, and the client is told her quote was replaced), so she is
    never sent to pay a quote withdrawn as her payment page was made. An order whose page
    was stored first is left open, the client already on it: paid, it is flagged
    (:data:`DEPOSIT_WITHDRAWN_FLAG`).

    Read under the commission's lock; their locks were taken before it (``held``, by
    :func:`_hold_deposits_without_a_page`), as every path takes an order's before its
    commission's: one holding such an order and then asking for the commission (as a payment's
    event or a refund does) would otherwise wait on the quote being sent, which waits on it. One
    made between that read and the commission's lock (the client pressed "Pay deposit" just
    then) is taken only if no one holds it, never waited for; held, the quote is refused, to
    be sent again in a moment (nothing is written), rather than leave the client a page to
    pay the quote it withdraws."""
    if not quote_ids:
        return
    being_made = _deposits_without_a_page(session, BespokeQuote.id.in_(quote_ids))
    for order_id in being_made:
        if (
            order_id not in held
            and checkout.lock_order(session, order_id, unless_held=True) is None
        ):
            raise QuoteRefusedError(
                "The client began paying this commission's deposit as you sent this quote: "
                "nothing was sent. Send it again in a moment."
            )
    for order_id in being_made:
        checkout.settle(
            session,
            order_id,
            checkout.PaymentPage(checkout.PageState.NONE),
            reason="Its quote was replaced by a newer one before its payment page opened",
            actor=actor,
            actor_user_id=actor_user_id,
        )


def amounts(quote: BespokeQuote, deposit: Order | None = None) -> dict[str, str]:
    """The quote's sums, formatted: price, deposit and the balance due after it. Given its
    deposit order, paid, of which staff gave part back (a smaller stone, say): what was given
    back (``given_back``), and the balance grown by it, as the commission now stands."""
    kept = quote.deposit_amount
    sums = {
        "price": format_money(quote.price, quote.currency),
        "deposit": format_money(quote.deposit_amount, quote.currency),
    }
    if deposit is not None and holds_deposit(deposit) and deposit.refunded_amount > 0:
        kept = max(quote.deposit_amount - deposit.refunded_amount, 0)
        sums["given_back"] = format_money(quote.deposit_amount - kept, quote.currency)
    sums["balance"] = format_money(quote.price - kept, quote.currency)
    return sums


def _serializer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt=TOKEN_SALT)


def quote_token(quote: BespokeQuote) -> str:
    """The signed token of a quote's page: it names the lead, the quote, and the address the
    link goes to (the commission's), as an order's link does (``orders.guest_link_token``):
    once the commission moves to another address (its account's email changed,
    ``accounts.confirm_email_change``), a link in the inbox it left no longer opens it."""
    return _serializer().dumps({"l": quote.lead_id, "q": quote.id, "e": quote.lead.email})


def quote_url(quote: BespokeQuote) -> str:
    return absolute_url("quotes.show", token=quote_token(quote))


class OldQuoteLinkError(Exception):
    """A link sent before quote links named their address (:func:`quote_token`), to a
    commission of an account: its address may have changed since, and the inbox the link went
    to be someone else's now, so it no longer opens the quote. The client sees her quotes in
    her account (Account → Commissions), whose links are new."""


def quote_for_token(session: AnySession, token: str) -> BespokeQuote | None:
    """The quote a link names, if its signature holds, the quote is still that lead's, and
    the commission still has the address the link was sent to (compared as accounts compare
    addresses, as ``orders.order_for_guest_token`` does). A link from before links named
    their address opens a guest's commission, whose address never changes (but for closing
    an account, which leaves it none); an account's raises :class:`OldQuoteLinkError`."""
    try:
        data = _serializer().loads(token)
    except BadSignature:
        return None
    if not isinstance(data, dict):
        return None
    lead_id, quote_id, sent_to = data.get("l"), data.get("q"), data.get("e")
    if not (isinstance(lead_id, int) and isinstance(quote_id, int)):
        return None
    if sent_to is not None and not (isinstance(sent_to, str) and sent_to):
        return None
    quote = session.get(BespokeQuote, quote_id)
    # A commission whose client closed her account keeps no address: no link is hers now.
    if quote is None or quote.lead_id != lead_id or not quote.lead.email:
        return None
    if sent_to is None:
        if quote.lead.user_id is not None:
            raise OldQuoteLinkError()
        return quote
    # As bytes: compare_digest refuses text outside ASCII, and an address may hold some.
    kept = normalise_email(quote.lead.email).encode()
    if not hmac.compare_digest(kept, normalise_email(sent_to).encode()):
        return None
    return quote


class QuoteState(enum.StrEnum):
    PAYABLE = "payable"
    PAYING = "paying"  # a deposit order is waiting on Stripe (or the bank)
    PAID = "paid"
    EXPIRED = "expired"
    WITHDRAWN = "withdrawn"
    CLOSED = "closed"  # the commission is lost
    WON = "won"  # the commission is won another way (its deposit paid otherwise)
    ON_HOLD = "on_hold"  # the commission went back to talks: a new quote is to come
    # Its deposit was paid but secured nothing: the quote had been replaced, or the commission
    # was closed meanwhile. The money is recorded (the order flagged); the studio gets in touch.
    RECEIVED = "received"
    # Another quote's deposit for the commission is paid or on its way: this one waits until
    # the studio has been in touch (a second deposit for one commission is never taken).
    HELD = "held"


@dataclass(frozen=True)
class QuoteView:
    """A quote as its page shows it."""

    quote: BespokeQuote
    lead: BespokeLead
    state: QuoteState
    order: Order | None  # the deposit order, paid or in progress
    newest: BespokeQuote | None  # for a withdrawn quote: the one that replaced it

    @property
    def sums(self) -> dict[str, str]:
        return amounts(self.quote, self.order)


def deposit_order(session: AnySession, quote_id: int) -> Order | None:
    """The quote's deposit order that is paid or being paid, if any (newest first); one that
    ended unpaid counts while it holds money that came after all (:func:`holds_deposit`)."""
    return session.scalar(
        select(Order)
        .where(Order.bespoke_quote_id == quote_id, _live_sql())
        .order_by(Order.id.desc())
        .limit(1)
    )


def state_of(
    quote: BespokeQuote, order: Order | None, today: date, *, held_elsewhere: bool = False
) -> QuoteState:
    """Where a quote stands, given its deposit order paid or in progress (if any), and whether
    another quote of the commission has its deposit paid or on its way. A payment page left
    open is not offered again once the quote is withdrawn, expired or closed. A quote is paid
    only while its commission is QUOTED: one that staff moved back to talks (or that was lost
    and reopened) waits for a new quote. A deposit paid secures the commission only if its
    quote was still the current one and the commission is won."""
    paid = quote.paid_at is not None or (
        order is not None and order.status not in (OrderStatus.PENDING, OrderStatus.PROCESSING)
    )
    if paid:
        secured = quote.withdrawn_at is None and quote.lead.status is LeadStatus.WON
        return QuoteState.PAID if secured else QuoteState.RECEIVED
    if order is not None and order.status is OrderStatus.PROCESSING:
        return QuoteState.PAYING
    if quote.withdrawn_at is not None:
        return QuoteState.WITHDRAWN
    if quote.lead.status is LeadStatus.WON:
        return QuoteState.WON
    if quote.lead.status is LeadStatus.LOST:
        return QuoteState.CLOSED
    if held_elsewhere:
        return QuoteState.HELD
    if quote.lead.status is not LeadStatus.QUOTED:
        return QuoteState.ON_HOLD
    if quote.valid_until < today:
        return QuoteState.EXPIRED
    return QuoteState.PAYING if order is not None else QuoteState.PAYABLE


def deposit_held_elsewhere(
    session: AnySession, quote: BespokeQuote, *, besides: Order | None = None
) -> bool:
    """Whether another order than ``besides`` holds a deposit for the quote's commission
    (:func:`holds_deposit`): one of another quote's, or one of this quote's that ended unpaid
    before its money came (this quote's own order in progress holds nothing against it)."""
    others = select(BespokeQuote.id).where(BespokeQuote.lead_id == quote.lead_id)
    condition = and_(
        Order.bespoke_quote_id.in_(others.scalar_subquery()),
        _holds_deposit_sql(),
        or_(Order.bespoke_quote_id != quote.id, _kept_late_sql()),
    )
    if besides is not None:
        condition = and_(condition, Order.id != besides.id)
    return bool(session.scalar(select(exists().where(condition))))


def quotes_holding_deposits(
    session: AnySession, lead_ids: Iterable[int]
) -> dict[int, dict[int, bool]]:
    """For each of these commissions (by id), its quotes whose deposit is paid (and not given
    back) or on its way from the bank, in one query, each with whether that deposit came
    after its order had ended (:func:`holds_deposit`, for many): a quote is held when another
    of its commission's quotes is among them, and received when it is itself, come late."""
    holding: dict[int, dict[int, bool]] = {lead_id: {} for lead_id in lead_ids}
    if not holding:
        return holding
    rows = session.execute(
        select(BespokeQuote.lead_id, BespokeQuote.id, Order.status, Order.late_payment_at)
        .join(Order, Order.bespoke_quote_id == BespokeQuote.id)
        .where(BespokeQuote.lead_id.in_(sorted(holding)), _holds_deposit_sql())
    )
    for lead_id, quote_id, status, late in rows:
        came_late = status not in HOLDING and late is not None
        holding[lead_id][quote_id] = holding[lead_id].get(quote_id, False) or came_late
    return holding


def view(session: AnySession, quote: BespokeQuote, today: date) -> QuoteView:
    order = deposit_order(session, quote.id)
    newest = current_quote(quote.lead) if quote.withdrawn_at is not None else None
    held = deposit_held_elsewhere(session, quote)
    state = state_of(quote, order, today, held_elsewhere=held)
    return QuoteView(quote, quote.lead, state, order, newest)


REFUSALS: dict[QuoteState, str] = {
    QuoteState.EXPIRED: "This quote has expired, so its deposit can't be paid. "
    "Please get in touch and we'll renew it.",
    QuoteState.WITHDRAWN: "This quote was replaced by a newer one, so its deposit can't be paid.",
    QuoteState.CLOSED: "This commission is closed, so this deposit can't be paid. "
    "Please get in touch with us.",
    QuoteState.WON: "Your commission is under way and its deposit is settled, so this one "
    "can't be paid.",
    QuoteState.ON_HOLD: "This quote is on hold while we talk the commission over, so its "
    "deposit can't be paid. We'll send you a new quote.",
    QuoteState.HELD: "A deposit for this commission has already been paid (or is on its way "
    "to us), so this one can't be paid: we'll be in touch about it.",
    QuoteState.RECEIVED: "Your payment of this deposit has already reached us, so it can't be "
    "paid again: we'll be in touch about it.",
}


def not_payable_because(session: AnySession, quote: BespokeQuote, today: date) -> str | None:
    """Why the quote's deposit can't be paid now, as its page says it (None: it can)."""
    return REFUSALS.get(view(session, quote, today).state)


def start_deposit(
    session: AnySession, quote_id: int, *, expiry_minutes: int, today: date
) -> tuple[Order, bool]:
    """The deposit order to pay: the one already in progress (or paid), else a new PENDING
    order of one line with its expiry, its amount the quote's deposit. Returns it and whether
    it is new. Holds the lead's row, so two clicks make one order; the caller commits before
    asking Stripe. Raises :class:`QuoteRefusedError` for a quote that can't be paid."""
    quote = session.get(BespokeQuote, quote_id)
    if quote is None or leads.lock_lead(session, quote.lead_id) is None:
        raise QuoteRefusedError("This quote no longer exists.")
    session.refresh(quote)
    existing = deposit_order(session, quote.id)
    held = deposit_held_elsewhere(session, quote)
    state = state_of(quote, existing, today, held_elsewhere=held)
    if state in REFUSALS:
        raise QuoteRefusedError(REFUSALS[state])
    if existing is not None:
        return existing, False
    if state in (QuoteState.PAID, QuoteState.RECEIVED):
        raise QuoteRefusedError("This deposit is already paid.")
    lead = quote.lead
    line = OrderLine(
        product_id=None,
        inventory_id=None,
        product_name=DEPOSIT_LINE.format(reference=lead.reference),
        product_slug="",
        variant_key="",
        configuration={},
        configuration_summary=(
            f"{quote.deposit_percent}% deposit on {format_money(quote.price, quote.currency)}"
        ),
        made_to_order=False,
        unit_price=quote.deposit_amount,
        quantity=1,
    )
    # No delivery for a deposit: the order keeps the client's name for the back office, and
    # no address (the piece's delivery is arranged when it is made).
    who = {"full_name": lead.name}
    details = checkout.CheckoutDetails(
        email=lead.email, shipping=who, billing=who, user_id=lead.user_id
    )
    order = checkout.create_pending_order(
        session,
        details,
        currency=quote.currency,
        lines=[line],
        shipping=0,
        expiry_minutes=expiry_minutes,
        note=f"Deposit for commission {lead.reference} started",
        bespoke_quote_id=quote.id,
    )
    return order, True


def deposit_paid(session: AnySession, order: Order, *, stripe_event_id: str) -> None:
    """The webhook marked a deposit order PAID (in its transaction): the quote is paid and the
    lead WON, on its timeline, and the shopper is emailed. A deposit for a quote replaced or a
    commission closed meanwhile is still recorded as paid, the order flagged for staff, and the
    shopper sent a receipt alone (:func:`_email_receipt`)."""
    quote, lead = _quote_and_locked_lead(session, order)
    if quote is None or lead is None:
        checkout.flag(
            order,
            "Deposit paid for a quote that no longer exists: check it",
            actor=leads.STRIPE_ACTOR,
            stripe_event_id=stripe_event_id,
        )
        _email_receipt(session, order)
        return
    if quote.paid_at is None:
        quote.paid_at = utcnow()
    note = f"Deposit of {format_money(order.total, order.currency)} paid (order {order.number})"
    problem = None
    if quote.withdrawn_at is not None or current_quote(lead) is not quote:
        problem = DEPOSIT_WITHDRAWN_FLAG
    elif lead.status is LeadStatus.WON and not leads.won_by_deposit(session, lead):
        problem = DEPOSIT_WON_ANOTHER_WAY_FLAG
    elif lead.status is LeadStatus.WON:
        leads.record(session, lead, actor=leads.STRIPE_ACTOR, note=note)
    elif leads.can_move(lead.status, LeadStatus.WON):
        leads.move(session, lead, LeadStatus.WON, actor=leads.STRIPE_ACTOR, note=note)
    else:
        problem = DEPOSIT_LEAD_CLOSED_FLAG.format(status=leads.LABELS[lead.status].lower())
    if problem is None and deposit_held_elsewhere(session, quote, besides=order):
        # The quote is the commission's and wins it; the other deposit (a replaced quote's,
        # paid on a page left open, or one that came after its order was cancelled) is flagged
        # on its own order already. Staff give one back.
        checkout.flag(
            order, SECOND_DEPOSIT_FLAG, actor=leads.STRIPE_ACTOR, stripe_event_id=stripe_event_id
        )
        leads.record(session, lead, actor=leads.STRIPE_ACTOR, note=f"{note}. {SECOND_DEPOSIT_FLAG}")
    if problem is not None:
        leads.record(session, lead, actor=leads.STRIPE_ACTOR, note=f"{note}. {problem}")
        checkout.flag(order, problem, actor=leads.STRIPE_ACTOR, stripe_event_id=stripe_event_id)
        _email_receipt(session, order)
    else:
        orders.email_shopper(
            session,
            order,
            "quote_deposit_paid",
            f"Your deposit for commission {lead.reference} is received",
            lead=lead,
            quote=quote,
            **amounts(quote),
        )
    session.flush()


def _email_receipt(session: AnySession, order: Order) -> None:
    """The shopper's receipt for a deposit the commission can't simply take (its quote
    replaced or gone, the commission won another way or closed, its order ended unpaid),
    read from the order alone, whatever became of the quote and the commission."""
    reference = order.lines[0].product_name.removeprefix(DEPOSIT_LINE.format(reference=""))
    orders.email_payment_received(session, order, commission=reference)


def _quote_and_locked_lead(
    session: AnySession, order: Order
) -> tuple[BespokeQuote | None, BespokeLead | None]:
    """A deposit order's quote, and its commission with the row locked (None for either gone).
    The quote is read again once the commission is held: a revised quote sent meanwhile
    (``send_quote``, under the same lock) withdrew it, and a copy read before the lock would
    still look current (PostgreSQL, read committed)."""
    quote = session.get(BespokeQuote, order.bespoke_quote_id) if order.bespoke_quote_id else None
    lead = leads.lock_lead(session, quote.lead_id) if quote is not None else None
    if quote is not None and lead is not None:
        session.refresh(quote)
    return quote, lead


def deposit_after_cancellation(session: AnySession, order: Order) -> None:
    """Money for a deposit order that was already cancelled (its page expired, then the
    payment landed): the order is flagged, and the commission's timeline says so too, so the
    people who follow the lead see money was taken and decide (refund, or take it); the
    shopper is sent a receipt of it."""
    _tell_the_commission(
        session,
        order,
        f"Deposit of {format_money(order.total, order.currency)} arrived after its order "
        f"{order.number} was cancelled: refund it, or take it as the deposit",
    )
    _email_receipt(session, order)


def deposit_never_came(session: AnySession, order: Order, *, actor: str) -> None:
    """A deposit order whose bank payment was on its way ended unpaid (its lock held). While
    it was on its way it held the commission's deposit, so another deposit paid meanwhile
    was flagged as the second (:data:`SECOND_DEPOSIT_FLAG`); that one is the only deposit
    now, and staff are not to give it back: its flag comes off, said on its timeline and the
    commission's.

    The orders wearing that flag are locked (in id order) before the commission, as every
    path locks an order before its commission (a refund of that other order at this moment
    takes its order, then the commission: the other way round the two could wait on each
    other). Only those: they are paid orders (:func:`deposit_paid` flags them), never a
    deposit whose payment never came, like this one. So two of these at once (two bank
    payments of one commission failing in the same instant), each holding its own order,
    never wait for each other's; before, each took the other's order for wearing any flag
    (both overdue, say), and PostgreSQL ended one of the two. A path holding a paid order
    waits for no other order, only for its commission, which this takes after them."""
    quote = session.get(BespokeQuote, order.bespoke_quote_id) if order.bespoke_quote_id else None
    if quote is None:
        return
    session.flush()
    flagged = _second_deposits(session, quote.lead_id, besides=order.id)
    others = [other for other_id in flagged if (other := checkout.lock_order(session, other_id))]
    _, lead = _quote_and_locked_lead(session, order)
    if lead is None:
        return
    # A deposit paid as this one failed may have been flagged after the read above, its
    # commission's lock taken first (this deposit still on its way as it committed). It is
    # taken now only if no one holds it: after the commission, a lock that never waits.
    taken = {other.id for other in others}
    for other_id in _second_deposits(session, quote.lead_id, besides=order.id):
        if other_id not in taken and (
            other := checkout.lock_order(session, other_id, unless_held=True)
        ):
            others.append(other)
    for other in others:
        if SECOND_DEPOSIT_FLAG not in orders.flagged_for(other):
            continue
        other_quote = session.get(BespokeQuote, other.bespoke_quote_id)
        if other_quote is None or deposit_held_elsewhere(session, other_quote, besides=other):
            continue
        checkout.clear_flag(
            other,
            SECOND_DEPOSIT_FLAG,
            actor=actor,
            note=f"The other deposit for this commission (order {order.number}) never "
            "arrived: this one is its only deposit, nothing to give back",
        )
        leads.record(
            session,
            lead,
            actor=actor,
            note=f"The deposit of order {order.number} never arrived: deposit order "
            f"{other.number} is the commission's only one, nothing to give back",
        )
    session.flush()


def _second_deposits(session: AnySession, lead_id: int, *, besides: int) -> list[int]:
    """The commission's deposit orders flagged as the second (:data:`SECOND_DEPOSIT_FLAG`),
    but ``besides``, in id order."""
    return list(
        session.scalars(
            select(Order.id)
            .join(BespokeQuote, Order.bespoke_quote_id == BespokeQuote.id)
            .where(
                BespokeQuote.lead_id == lead_id,
                Order.id != besides,
                Order.needs_attention.is_(True),
                Order.attention_reason.contains(SECOND_DEPOSIT_FLAG, autoescape=True),
            )
            .order_by(Order.id)
        )
    )


def deposit_refund_failed(session: AnySession, order: Order, money: str) -> None:
    """A refund of a deposit failed at Stripe (a closed card, say): the money is back with the
    shop. The commission's timeline says so, for the people who follow the lead; its state
    stays as the refund left it, and the order's flag asks staff to give the money back."""
    _tell_the_commission(
        session,
        order,
        f"A refund of {money} on deposit order {order.number} failed at Stripe: the money is "
        "back with the shop, to be given back again",
    )


def _tell_the_commission(session: AnySession, order: Order, note: str) -> None:
    """What Stripe reported of a deposit order, on its commission's timeline (if it has one
    still), under the commission's lock."""
    _, lead = _quote_and_locked_lead(session, order)
    if lead is not None:
        leads.record(session, lead, actor=leads.STRIPE_ACTOR, note=note)


def part_of_deposit_given_back(
    session: AnySession, order: Order, *, actor: str, actor_user_id: int | None = None, note: str
) -> None:
    """Part of a deposit order was given back (its lock held), by staff or in Stripe's
    dashboard: the commission keeps its status, the rest of the deposit still held, and its
    timeline says what went back, so the people who follow the lead see it."""
    _, lead = _quote_and_locked_lead(session, order)
    if lead is not None:
        leads.record(session, lead, actor=actor, actor_user_id=actor_user_id, note=note)


def deposit_given_back(
    session: AnySession, order: Order, *, actor: str, actor_user_id: int | None = None, note: str
) -> None:
    """A deposit order cancelled or refunded in full (its lock held, its new status set): the
    quote is no longer paid unless another of its orders still holds a deposit, and a
    commission that the deposit had won is lost; the commission's timeline says why, so the
    people who follow the lead see the money went back. A lead won another way stays won."""
    quote, lead = _quote_and_locked_lead(session, order)
    if quote is None or lead is None:
        return
    session.flush()
    still_paid = session.scalar(
        select(Order.id)
        .where(
            Order.bespoke_quote_id == quote.id,
            Order.id != order.id,
            or_(
                Order.status.in_(sorted(LIVE - {OrderStatus.PENDING, OrderStatus.PROCESSING})),
                _kept_late_sql(),  # its money came after it ended, and is kept: paid
            ),
        )
        .limit(1)
    )
    if still_paid is None:
        quote.paid_at = None
        if quote.withdrawn_at is None and any(other.id > quote.id for other in lead.quotes):
            # Replaced while it was paid (a quote sent withdraws only the unpaid): no longer
            # paid, it is withdrawn as they were, never offered to pay again.
            quote.withdrawn_at = utcnow()
    if leads.won_by_deposit(session, lead) and not any(q.paid_at for q in lead.quotes):
        leads.deposit_given_back(session, lead, actor=actor, actor_user_id=actor_user_id, note=note)
    else:
        leads.record(session, lead, actor=actor, actor_user_id=actor_user_id, note=note)


def quotes_of(lead: BespokeLead) -> list[BespokeQuote]:
    """The lead's quotes, newest first."""
    return sorted(lead.quotes, key=lambda quote: quote.id, reverse=True)


def deposit_orders(session: AnySession, lead: BespokeLead) -> dict[int, Order]:
    """For each of the lead's quotes, its deposit order paid or being paid (one query)."""
    ids = [quote.id for quote in lead.quotes]
    if not ids:
        return {}
    found: dict[int, Order] = {}
    for order in session.scalars(
        select(Order).where(Order.bespoke_quote_id.in_(ids), _live_sql()).order_by(Order.id)
    ):
        assert order.bespoke_quote_id is not None
        found[order.bespoke_quote_id] = order
    return found
