"""Orders as the back office reads them: the list with its tabs, the CSV, one order in full,
and the staff's internal notes.

Every read here costs a fixed number of queries, whatever the number of orders, lines or
events: the tab counts are one query of conditional aggregates, a page of the list is one
query (its pieces are counted in SQL, not by loading the lines), the CSV is one query read in
batches, and one order is a handful of queries with its collections loaded up front.
"""

from __future__ import annotations

import csv
import enum
import io
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, func, or_, select, true
from sqlalchemy.orm import selectinload

from elysium.models.orders import Order, OrderEvent, OrderLine, OrderStatus, Refund
from elysium.models.outbox import OutboxEmail, OutboxStatus
from elysium.models.users import User
from elysium.money import decimal_string
from elysium.services import checkout, fulfilment, orders, payments
from elysium.services.errors import InvalidInputError
from elysium.services.paging import Paged
from elysium.services.sql import AnySession

S = OrderStatus
PER_PAGE = 50
CSV_BATCH = 500
SEARCH_MAX_TERMS = 6
NOTE_MAX_LENGTH = 2000
SYSTEM = "system"

STATUS_LABELS: dict[OrderStatus, str] = {
    S.PENDING: "Awaiting payment",
    S.PROCESSING: "Awaiting bank transfer",
    S.PAYMENT_FAILED: "Payment failed",
    S.PAID: "Paid",
    S.FULFILLED: "Fulfilled",
    S.SHIPPED: "Shipped",
    S.DELIVERED: "Delivered",
    S.CANCELLED: "Cancelled",
    S.REFUNDED: "Refunded",
}


def status_label(status: OrderStatus) -> str:
    """A status in the back office's words (the shopper's are in ``services.orders``)."""
    return STATUS_LABELS[status]


class Tab(enum.StrEnum):
    """The list's tabs, in the order a jeweller works through them."""

    TO_FULFIL = "to-fulfil"
    TO_SHIP = "to-ship"
    SHIPPED = "shipped"
    ATTENTION = "attention"
    AWAITING_PAYMENT = "awaiting-payment"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"
    REFUNDED = "refunded"
    ALL = "all"

    @property
    def label(self) -> str:
        return TAB_LABELS[self]


TAB_LABELS: dict[Tab, str] = {
    Tab.TO_FULFIL: "To fulfil",
    Tab.TO_SHIP: "To ship",
    Tab.SHIPPED: "Shipped",
    Tab.ATTENTION: "Needs attention",
    Tab.AWAITING_PAYMENT: "Awaiting payment",
    Tab.DELIVERED: "Delivered",
    Tab.CANCELLED: "Cancelled or failed",
    Tab.REFUNDED: "Refunded",
    Tab.ALL: "All",
}

TAB_STATUSES: dict[Tab, frozenset[OrderStatus]] = {
    Tab.TO_FULFIL: frozenset({S.PAID}),
    Tab.TO_SHIP: frozenset({S.FULFILLED}),
    Tab.SHIPPED: frozenset({S.SHIPPED}),
    # On Stripe's page, or a completed checkout whose bank transfer is still on its way.
    Tab.AWAITING_PAYMENT: frozenset({S.PENDING, S.PROCESSING}),
    Tab.DELIVERED: frozenset({S.DELIVERED}),
    Tab.CANCELLED: frozenset({S.CANCELLED, S.PAYMENT_FAILED}),
    Tab.REFUNDED: frozenset({S.REFUNDED}),
}


# A deposit on a bespoke commission is money, not a piece: it is never made, packed or shipped.
NOT_TO_MAKE = frozenset({Tab.TO_FULFIL, Tab.TO_SHIP, Tab.SHIPPED})


def _in_tab(tab: Tab) -> ColumnElement[bool]:
    if tab is Tab.ALL:
        return true()
    if tab is Tab.ATTENTION:
        return Order.needs_attention.is_(True)
    in_status = Order.status.in_(sorted(TAB_STATUSES[tab]))
    if tab in NOT_TO_MAKE:
        return and_(in_status, Order.bespoke_quote_id.is_(None))
    return in_status


class Sort(enum.StrEnum):
    NEWEST = "newest"
    OLDEST = "oldest"
    TOTAL_DESC = "total-desc"
    TOTAL_ASC = "total-asc"

    @property
    def label(self) -> str:
        return {
            "newest": "Newest first",
            "oldest": "Oldest first",
            "total-desc": "Highest total",
            "total-asc": "Lowest total",
        }[self.value]


@dataclass(frozen=True)
class OrderFilters:
    """What the list shows: a tab, a search, a range of days (UTC, both ends included), an
    order and a page. The CSV takes the same filters and ignores the page."""

    tab: Tab = Tab.TO_FULFIL
    q: str = ""
    placed_from: date | None = None
    placed_to: date | None = None
    sort: Sort = Sort.NEWEST
    page: int = 1

    @property
    def narrowed(self) -> bool:
        """Whether a search or a date range leaves some of the tab's orders out."""
        return bool(self.q or self.placed_from or self.placed_to)


def _customer_name() -> ColumnElement[str]:
    return Order.shipping_address["full_name"].as_string()


def _matching(filters: OrderFilters) -> list[ColumnElement[bool]]:
    """The search and the date range (not the tab: the counts need every tab)."""
    conditions: list[ColumnElement[bool]] = []
    for term in filters.q.split()[:SEARCH_MAX_TERMS]:
        conditions.append(
            or_(
                Order.number.icontains(term, autoescape=True),
                Order.email.icontains(term, autoescape=True),
                _customer_name().icontains(term, autoescape=True),
                # Kept with the spaces couriers print; typed or pasted often without them.
                func.replace(Order.tracking_number, " ", "").icontains(term, autoescape=True),
            )
        )
    if filters.placed_from is not None:
        conditions.append(Order.created_at >= _start_of(filters.placed_from))
    if filters.placed_to is not None:
        conditions.append(Order.created_at < _start_of(filters.placed_to + timedelta(days=1)))
    return conditions


def _start_of(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def _ordered(statement: Select[Any], sort: Sort) -> Select[Any]:
    if sort is Sort.OLDEST:
        return statement.order_by(Order.created_at.asc(), Order.id.asc())
    if sort is Sort.TOTAL_DESC:
        return statement.order_by(Order.total.desc(), Order.created_at.desc(), Order.id.desc())
    if sort is Sort.TOTAL_ASC:
        return statement.order_by(Order.total.asc(), Order.created_at.desc(), Order.id.desc())
    return statement.order_by(Order.created_at.desc(), Order.id.desc())


def _pieces() -> ColumnElement[int]:
    """How many pieces an order holds, counted in SQL (the lines are not loaded)."""
    return (
        select(func.coalesce(func.sum(OrderLine.quantity), 0))
        .where(OrderLine.order_id == Order.id)
        .correlate(Order)
        .scalar_subquery()
    )


def tab_counts(session: AnySession, filters: OrderFilters) -> dict[Tab, int]:
    """How many orders each tab holds under the search and date range: one query."""
    columns = [func.count(case((_in_tab(tab), Order.id))).label(tab.name) for tab in Tab]
    row = session.execute(select(*columns).select_from(Order).where(*_matching(filters))).one()
    return {tab: int(row._mapping[tab.name] or 0) for tab in Tab}


class Flag(enum.StrEnum):
    DISPUTE = "dispute"
    AMOUNT_MISMATCH = "amount-mismatch"
    PAID_AFTER_CANCELLATION = "paid-after-cancellation"
    ATTENTION = "attention"
    DEPOSIT = "deposit"
    GIFT = "gift"

    @property
    def label(self) -> str:
        return FLAG_LABELS[self]


FLAG_LABELS: dict[Flag, str] = {
    Flag.DISPUTE: "Dispute",
    Flag.AMOUNT_MISMATCH: "Amount mismatch",
    Flag.PAID_AFTER_CANCELLATION: "Paid after cancellation",
    Flag.ATTENTION: "Needs attention",
    Flag.DEPOSIT: "Deposit",
    Flag.GIFT: "Gift",
}


def _reason_flag(reason: str) -> Flag:
    if reason.startswith(payments.DISPUTE_FLAG):
        return Flag.DISPUTE
    if reason.endswith(payments.AMOUNT_MISMATCH_FLAG):
        return Flag.AMOUNT_MISMATCH
    if reason.startswith(payments.PAID_AFTER_CANCELLATION_FLAG):
        return Flag.PAID_AFTER_CANCELLATION
    return Flag.ATTENTION


def flags_of(
    needs_attention: bool, attention_reason: str, gift_message: str, *, deposit: bool = False
) -> list[Flag]:
    """The badges an order wears. The payment flags are read from the reasons the webhook
    wrote (their wording is fixed in ``services.payments``); any other reason shows as
    "needs attention"; a gift is an order with a gift message; a deposit is an order that
    pays a bespoke quote."""
    reasons = orders.attention_reasons(needs_attention, attention_reason)
    found = {_reason_flag(reason) for reason in reasons}
    if (gift_message or "").strip():
        found.add(Flag.GIFT)
    if deposit:
        found.add(Flag.DEPOSIT)
    return [flag for flag in Flag if flag in found]


@dataclass(frozen=True)
class OrderRow:
    """One line of the list."""

    order: Order
    pieces: int
    flags: list[Flag]

    @property
    def customer_name(self) -> str:
        return customer_name(self.order.shipping_address)


def customer_name(address: dict[str, Any] | None) -> str:
    name = (address or {}).get("full_name")
    return name if isinstance(name, str) else ""


@dataclass
class OrderList(Paged):
    filters: OrderFilters
    counts: dict[Tab, int]
    rows: list[OrderRow]
    page: int
    per_page: int
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.counts[self.filters.tab]


def order_list(session: AnySession, filters: OrderFilters, per_page: int = PER_PAGE) -> OrderList:
    """The tab counts and one page of the chosen tab: two queries. A page past the end shows
    the last page, with a note."""
    counts = tab_counts(session, filters)
    pages = max((counts[filters.tab] + per_page - 1) // per_page, 1)
    notes = []
    page = filters.page
    if page > pages:
        notes.append(f"There is no page {page}; here is page {pages}.")
        page = pages
    statement = _ordered(
        select(Order, _pieces().label("pieces")).where(*_matching(filters), _in_tab(filters.tab)),
        filters.sort,
    )
    rows = [
        OrderRow(
            order=order,
            pieces=int(pieces or 0),
            flags=flags_of(
                order.needs_attention,
                order.attention_reason,
                order.gift_message,
                deposit=order.bespoke_quote_id is not None,
            ),
        )
        for order, pieces in session.execute(
            statement.limit(per_page).offset((page - 1) * per_page)
        )
    ]
    return OrderList(
        filters=filters, counts=counts, rows=rows, page=page, per_page=per_page, notes=notes
    )


CSV_HEADER = (
    "Order",
    "Placed (UTC)",
    "Status",
    "Customer",
    "Email",
    "Pieces",
    "Currency",
    "Subtotal",
    "Shipping",
    "Total",
    "Refunded",
    "Country",
    "Carrier",
    "Tracking number",
    "Flags",
    "Gift message",
)

# What a spreadsheet reads as the start of a formula (tab and CR too: some split or trim a
# cell on them and read what follows).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(cell: str) -> str:
    """A cell that a spreadsheet shows as text and never evaluates: one that starts with a
    formula character, or with whitespace and then one (spreadsheets skip leading spaces),
    gets a single quote in front."""
    if cell.startswith(FORMULA_STARTS) or cell.lstrip().startswith(FORMULA_STARTS):
        return "'" + cell
    return cell


def _csv_cells(row: Any) -> list[str]:
    flags = flags_of(
        row.needs_attention,
        row.attention_reason,
        row.gift_message,
        deposit=row.bespoke_quote_id is not None,
    )
    address = row.shipping_address or {}
    return [
        row.number,
        row.created_at.strftime("%Y-%m-%d %H:%M"),
        status_label(row.status),
        customer_name(address),
        row.email,
        str(int(row.pieces or 0)),
        row.currency,
        decimal_string(row.subtotal),
        decimal_string(row.shipping),
        decimal_string(row.total),
        decimal_string(row.refunded_amount),
        str(address.get("country") or ""),
        row.carrier or "",
        row.tracking_number or "",
        "; ".join(flag.label for flag in flags),
        row.gift_message or "",
    ]


def csv_chunks(session: AnySession, filters: OrderFilters, batch: int = CSV_BATCH) -> Iterator[str]:
    """The filtered list (every page) as CSV text, in pieces: the header first, then one piece
    per batch of rows read from the database, so the whole table is never held in memory.
    Starts with a byte-order mark so that spreadsheets read it as UTF-8.

    On SQLite the rows are read whole before the first piece goes: a cursor left open while
    a slow download waits holds the database's read lock, and no one could write meanwhile
    (every shopper's change waited, then got the 503 page). PostgreSQL's reads block nobody."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def taken() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(CSV_HEADER)
    yield "\ufeff" + taken()
    statement = _ordered(
        select(
            Order.number,
            Order.created_at,
            Order.status,
            Order.shipping_address,
            Order.email,
            Order.currency,
            Order.subtotal,
            Order.shipping,
            Order.total,
            Order.refunded_amount,
            Order.carrier,
            Order.tracking_number,
            Order.needs_attention,
            Order.attention_reason,
            Order.gift_message,
            Order.bespoke_quote_id,
            _pieces().label("pieces"),
        ).where(*_matching(filters), _in_tab(filters.tab)),
        filters.sort,
    ).execution_options(yield_per=batch)
    found = session.execute(statement)
    if session.get_bind().dialect.name == "sqlite":
        everything = found.all()
        batches: Iterable[Sequence[Any]] = (
            everything[at : at + batch] for at in range(0, len(everything), batch)
        )
    else:
        batches = found.partitions()
    for rows in batches:
        for row in rows:
            writer.writerow([spreadsheet_safe(cell) for cell in _csv_cells(row)])
        yield taken()


class EntryKind(enum.StrEnum):
    STATUS = "status"  # the order moved
    PAYMENT = "payment"  # a payment event that moved nothing
    NOTE = "note"  # a member of staff's internal note
    REMARK = "remark"  # anything else the shop wrote down
    EMAIL = "email"


@dataclass(frozen=True)
class TimelineEntry:
    """One line of the back office's timeline: what, who and when, whatever it is."""

    at: datetime
    kind: EntryKind
    who: str
    title: str
    text: str = ""
    stripe_event_id: str | None = None
    staff: bool = False
    email_status: OutboxStatus | None = None
    detail: str = ""


def _event_entry(event: OrderEvent) -> TimelineEntry:
    if event.to_status is not None:
        moved = status_label(event.to_status)
        if event.from_status is not None:
            moved = f"{status_label(event.from_status)} → {moved}"
        kind, title = EntryKind.STATUS, moved
    elif event.stripe_event_id:
        kind, title = EntryKind.PAYMENT, "Payment event"
    elif event.actor_user_id is not None:
        kind, title = EntryKind.NOTE, "Staff note"
    else:
        kind, title = EntryKind.REMARK, "Note"
    return TimelineEntry(
        at=event.created_at,
        kind=kind,
        who=event.actor,
        title=title,
        text=event.note,
        stripe_event_id=event.stripe_event_id,
        staff=event.actor_user_id is not None,
    )


EMAIL_STATES: dict[OutboxStatus, str] = {
    OutboxStatus.PENDING: "queued",
    OutboxStatus.SENDING: "sending",
    OutboxStatus.SENT: "sent",
    OutboxStatus.FAILED: "failed",
}


def _email_entry(email: Any) -> TimelineEntry:
    state = EMAIL_STATES[email.status]
    if email.status is OutboxStatus.SENT and email.sent_at is not None:
        state = f"sent {email.sent_at.strftime('%-d %b %Y, %H:%M')} UTC"
    attempts = f"{email.attempts} attempt{'s' if email.attempts != 1 else ''}"
    return TimelineEntry(
        at=email.created_at,
        kind=EntryKind.EMAIL,
        who=SYSTEM,
        title=f"Email ({email.template}) to {email.to_address}",
        text=email.subject,
        email_status=email.status,
        detail=f"{state}, {attempts}" + (f": {email.last_error}" if email.last_error else ""),
    )


@dataclass(frozen=True)
class RefundEntry:
    refund: Refund
    by: str


@dataclass
class OrderDetail:
    order: Order
    flags: list[Flag]
    reasons: list[str]
    timeline: list[TimelineEntry]
    refunds: list[RefundEntry]

    @property
    def customer_name(self) -> str:
        return customer_name(self.order.shipping_address)


def order_detail(session: AnySession, number: str) -> OrderDetail | None:
    """One order with everything the back office shows about it, in five queries: the order,
    its lines, events and refunds, who made the refunds, and the emails sent about it."""
    order = session.scalar(
        select(Order)
        .where(Order.number == number)
        .options(selectinload(Order.lines), selectinload(Order.events), selectinload(Order.refunds))
    )
    if order is None:
        return None
    refunders = {refund.actor_user_id for refund in order.refunds} - {None}
    # Always asked, even with no refunds, so the page costs the same number of queries.
    people = {
        user.id: user.display_name
        for user in session.scalars(select(User).where(User.id.in_(sorted(refunders))))
    }
    emails = session.execute(
        select(
            OutboxEmail.id,
            OutboxEmail.to_address,
            OutboxEmail.subject,
            OutboxEmail.template,
            OutboxEmail.status,
            OutboxEmail.attempts,
            OutboxEmail.last_error,
            OutboxEmail.sent_at,
            OutboxEmail.created_at,
        )
        .where(OutboxEmail.order_id == order.id)
        .order_by(OutboxEmail.created_at, OutboxEmail.id)
    ).all()
    timeline = sorted(
        [_event_entry(event) for event in order.events] + [_email_entry(row) for row in emails],
        key=lambda entry: entry.at,
    )
    return OrderDetail(
        order=order,
        flags=flags_of(
            order.needs_attention,
            order.attention_reason,
            order.gift_message,
            deposit=order.bespoke_quote_id is not None,
        ),
        reasons=orders.flagged_for(order),
        timeline=timeline,
        refunds=[
            RefundEntry(refund, people.get(refund.actor_user_id or 0, ""))
            for refund in order.refunds
        ],
    )


class NoteError(InvalidInputError):
    """A note that can't be kept (empty, or too long)."""


def clean_note(text: str) -> str:
    """A note as it will be kept: line breaks made one kind, no control characters, trimmed."""
    return orders.readable((text or "").replace("\r\n", "\n").replace("\r", "\n")).strip()


def settled_by_hand(order: Order) -> bool:
    """Whether staff may mark what the order's flag asks as settled, with a note. Not while
    its payment is still being decided (PENDING or PROCESSING: Stripe's events, the sweeper
    and Cancel settle those), nor a dispute's warning on an order still open (the dispute's
    outcome decides whether it can be refunded or shipped); any other warning is for people
    to act on, and says so once they have. A warning that a step was left half done (a
    refund awaiting Stripe's answer, a cancel to finish) is never settled by a note: only
    that step takes it off, and settling the others leaves it on."""
    if not order.needs_attention or order.status in (OrderStatus.PENDING, OrderStatus.PROCESSING):
        return False
    reasons = _settleable(order)
    if not reasons or order.status in (OrderStatus.CANCELLED, OrderStatus.REFUNDED):
        return bool(reasons)
    return not any(reason.startswith(payments.DISPUTE_FLAG) for reason in reasons)


def _settleable(order: Order) -> list[str]:
    reasons = orders.flagged_for(order)
    return [reason for reason in reasons if reason not in fulfilment.STEP_FLAGS]


SETTLED_PREFIX = "Settled what needed attention: "
NOTE_SENT_ALREADY = (
    "This form's note was added already, as it was first sent: reload the order to write "
    "another (what you typed is kept below)."
)


def add_staff_note(
    session: AnySession,
    order: Order,
    text: str,
    *,
    staff_name: str,
    staff_user_id: int,
    settles: bool = False,
    seen: str = "",
    request_key: str = "",
) -> OrderEvent:
    """An internal note on the order's timeline, signed by the member of staff. The shopper
    never sees it: their timeline shows status changes only (``orders.shopper_timeline``).
    ``settles``: the note says how what the order's flag asked was dealt with, and the
    reasons the page showed (``seen``, ``orders.attention_seen``) go, under the order's lock;
    a warning raised or changed since is refused, to be read first (see
    :func:`settled_by_hand`). The same form sent again (its ``request_key``) is the note it
    added."""
    note = clean_note(text)
    if not note:
        raise NoteError({"note": "Write the note first."})
    if len(note) > NOTE_MAX_LENGTH:
        raise NoteError({"note": f"Keep a note to {NOTE_MAX_LENGTH} characters."})
    if settles or request_key:
        locked = checkout.lock_order(session, order.id)
        assert locked is not None
        order = locked
    if request_key:
        # The same form sent again (its answer lost, a double click): the note it added; sent
        # again changed (other words, or now settling), it is not taken for what it says.
        added = session.scalar(
            select(OrderEvent).where(
                OrderEvent.order_id == order.id, OrderEvent.request_key == request_key
            )
        )
        if added is not None:
            if added.note != orders.readable(f"{SETTLED_PREFIX}{note}" if settles else note):
                raise NoteError({"note": NOTE_SENT_ALREADY})
            return added
    if settles and not settled_by_hand(order):
        raise NoteError(
            {
                "settles": "Nothing on this order can be marked settled by hand: its warning "
                "goes once its payment, its dispute or the step it waits for is done."
            }
        )
    if settles and seen != orders.attention_seen(order):
        raise NoteError(
            {
                "settles": "The warning changed while you wrote: read it again, then settle "
                "it. Your note is kept below."
            }
        )
    if settles:
        for reason in _settleable(order):
            checkout.clear_flag(order, reason, actor=staff_name, on_timeline=False)
        note = f"{SETTLED_PREFIX}{note}"
    event = orders.add_note(order, note, actor=staff_name, actor_user_id=staff_user_id)
    event.request_key = request_key or None
    session.flush()
    return event


def order_numbered(session: AnySession, number: str) -> Order | None:
    return session.scalar(select(Order).where(Order.number == number))
