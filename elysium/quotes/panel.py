"""What the pages show of a commission's quotes, given only the lead: the staff's quote panel
(``staff/leads/_quote.html``, included in the lead's page) and the shopper's line on their
commissions page (``quotes/_account_quote.html``). The factory makes both template globals."""

from __future__ import annotations

from dataclasses import dataclass, field

from flask import url_for

from elysium.extensions import db
from elysium.models.engagement import BespokeLead, BespokeQuote, LeadStatus
from elysium.models.orders import Order
from elysium.models.types import utcnow
from elysium.quotes.forms import QuoteForm
from elysium.services import quotes


@dataclass(frozen=True)
class QuoteRow:
    quote: BespokeQuote
    state: str  # Current, Expired, Withdrawn, Paid, Being paid
    order: Order | None
    sums: dict[str, str]
    url: str


@dataclass
class QuotePanel:
    lead: BespokeLead
    rows: list[QuoteRow]
    form: QuoteForm
    can_quote: bool
    error: str = ""
    errors: dict[str, str] = field(default_factory=dict)


STATE_WORDS = {
    quotes.QuoteState.PAYABLE: "Current",
    quotes.QuoteState.PAYING: "Deposit being paid",
    quotes.QuoteState.PAID: "Deposit paid",
    quotes.QuoteState.EXPIRED: "Expired",
    quotes.QuoteState.WITHDRAWN: "Withdrawn",
    quotes.QuoteState.CLOSED: "Closed",
}


def _rows(lead: BespokeLead) -> list[QuoteRow]:
    orders = quotes.deposit_orders(db.session, lead)
    today = utcnow().date()
    rows = []
    for quote in quotes.quotes_of(lead):
        order = orders.get(quote.id)
        state = quotes.state_of(quote, order, today)
        rows.append(
            QuoteRow(
                quote,
                STATE_WORDS[state],
                order,
                quotes.amounts(quote),
                url_for("quotes.show", token=quotes.quote_token(quote)),
            )
        )
    return rows


def quote_panel(lead: BespokeLead, form: QuoteForm | None = None, error: str = "") -> QuotePanel:
    """The staff's panel: the lead's quotes, newest first, and the form for a new one (as
    typed, after a refusal)."""
    return QuotePanel(
        lead=lead,
        rows=_rows(lead),
        form=form if form is not None else QuoteForm(formdata=None),
        can_quote=lead.status not in (LeadStatus.WON, LeadStatus.LOST),
        error=error,
    )


@dataclass(frozen=True)
class AccountQuote:
    quote: BespokeQuote
    paid: bool
    sums: dict[str, str]
    url: str


def account_quote(lead: BespokeLead) -> AccountQuote | None:
    """The shopper's view of a commission's quote: the paid one, else the current one."""
    paid = [quote for quote in lead.quotes if quote.paid_at is not None]
    quote = paid[-1] if paid else quotes.current_quote(lead)
    if quote is None:
        return None
    return AccountQuote(
        quote,
        quote.paid_at is not None,
        quotes.amounts(quote),
        url_for("quotes.show", token=quotes.quote_token(quote)),
    )
