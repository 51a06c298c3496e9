"""What the pages show of a commission's quotes: the staff's quote panel
(``staff/leads/_quote.html``, included in the lead's page, with the quote form; the factory
makes it a template global, given only the lead) and the shopper's line for each commission
on their commissions page (``quotes/_account_quote.html``, from :func:`account_quotes`). The
form reads the input as typed; the rules live in ``services.quotes``."""

from __future__ import annotations

from dataclasses import dataclass, field

from flask import session, url_for
from flask_wtf import FlaskForm
from wtforms import DateField, HiddenField, StringField, TextAreaField
from wtforms.validators import Optional

from elysium import house_time
from elysium.extensions import db
from elysium.models.engagement import BespokeLead, BespokeQuote, LeadStatus
from elysium.models.orders import Order
from elysium.services import quotes
from elysium.services.quotes import DEFAULT_DEPOSIT_PERCENT, DESCRIPTION_MAX


class QuoteForm(FlaskForm):
    description = TextAreaField(
        "What the price is for",
        description="The piece as agreed: metal, stones, size, finish. The client reads this.",
        render_kw={"rows": 4, "maxlength": DESCRIPTION_MAX},
    )
    price = StringField(
        "Price (£)",
        description="The whole price, for example 4,800.00",
        render_kw={"inputmode": "decimal", "autocomplete": "off"},
    )
    deposit_percent = StringField(
        "Deposit (%)",
        default=str(DEFAULT_DEPOSIT_PERCENT),
        description="From 1 to 100; the deposit is worked out from the price",
        render_kw={"inputmode": "numeric", "autocomplete": "off"},
    )
    # Optional here: the service says what is missing, with the other fields' messages.
    valid_until = DateField("Valid until", validators=[Optional()])
    # The newest quote the page showed (its id, or empty for none): ``send_quote``'s ``seen``.
    newest_seen = HiddenField()


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

    @property
    def newest_seen(self) -> str:
        """The newest quote this panel shows, as its form says it (``quotes.newest_quote_mark``)."""
        return quotes.newest_quote_mark(self.lead)


STATE_WORDS = {
    quotes.QuoteState.PAYABLE: "Current",
    quotes.QuoteState.PAYING: "Deposit being paid",
    quotes.QuoteState.PAID: "Deposit paid",
    quotes.QuoteState.EXPIRED: "Expired",
    quotes.QuoteState.WITHDRAWN: "Withdrawn",
    quotes.QuoteState.CLOSED: "Closed",
    quotes.QuoteState.WON: "Won another way",
    quotes.QuoteState.ON_HOLD: "On hold",
    quotes.QuoteState.RECEIVED: "Deposit paid, securing nothing",
    quotes.QuoteState.HELD: "Waiting: another deposit received",
}


def _rows(lead: BespokeLead) -> list[QuoteRow]:
    orders = quotes.deposit_orders(db.session, lead)
    today = house_time.today()
    rows = []
    for quote in quotes.quotes_of(lead):
        order = orders.get(quote.id)
        held = any(
            quotes.holds_deposit(other)
            for quote_id, other in orders.items()
            if quote_id != quote.id
        )
        state = quotes.state_of(quote, order, today, held_elsewhere=held)
        rows.append(
            QuoteRow(
                quote,
                STATE_WORDS[state],
                order,
                quotes.amounts(quote, order),
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
    state: quotes.QuoteState
    sums: dict[str, str]
    url: str


def account_quotes(leads: list[BespokeLead]) -> dict[int, AccountQuote | None]:
    """The shopper's view of each commission's quote (by the commission's id): the paid one,
    else the current one, and where it stands as far as the quote itself says (its page says
    whether a payment is in progress). One query for all of them: whether another quote's
    deposit is on its way from the bank, holding the one shown."""
    holding = quotes.quotes_holding_deposits(db.session, [lead.id for lead in leads])
    today = house_time.today()
    shown: dict[int, AccountQuote | None] = {}
    for lead in leads:
        paid = [quote for quote in lead.quotes if quote.paid_at is not None]
        quote = paid[-1] if paid else quotes.current_quote(lead)
        if quote is None:
            shown[lead.id] = None
            continue
        held = not paid and bool(holding[lead.id].keys() - {quote.id})
        if not paid and holding[lead.id].get(quote.id):
            # Its deposit came after its payment was cancelled, and is kept: received.
            state = quotes.QuoteState.RECEIVED
        else:
            state = quotes.state_of(quote, None, today, held_elsewhere=held)
        shown[lead.id] = AccountQuote(
            quote,
            state,
            quotes.amounts(quote),
            url_for("quotes.show", token=quotes.quote_token(quote)),
        )
    return shown


# The deposit orders this browser went to pay (their ids, newest last): a client with no
# account comes back from Stripe to the order's page (``checkout.success``) in this browser.
DEPOSITS_KEY = "deposits_paying"
DEPOSITS_KEPT = 5


def remember_deposit(order: Order) -> None:
    """This browser is paying ``order`` (a deposit): its page after Stripe is theirs to see."""
    kept = [each for each in session.get(DEPOSITS_KEY, []) if each != order.id]
    session[DEPOSITS_KEY] = [*kept, order.id][-DEPOSITS_KEPT:]


def paying_deposit(order: Order) -> bool:
    """Whether this browser went to pay the deposit ``order``."""
    return order.bespoke_quote_id is not None and order.id in session.get(DEPOSITS_KEY, [])
