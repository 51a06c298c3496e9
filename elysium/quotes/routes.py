"""The shopper's quote page, ``/bespoke/quote/<token>``, and its "Pay deposit" button.

The token is signed and names one quote of one lead and the address it was sent to
(``services.quotes.quote_token``); a tampered one, or one sent to an address the commission
has since left, is a 404, and one from before links named their address, to an account's
commission, a 410 that sends the client to her account's commissions. Paying goes through
the bag's own machinery (``services.checkout``): the deposit order is committed with its
expiry before Stripe is asked for a page, a second click goes back to the same page, and
only the webhook marks it paid. Stripe's page is made with the account's Stripe customer
only for the commission's own account, signed in here.
"""

from __future__ import annotations

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    make_response,
    redirect,
    render_template,
    url_for,
)
from flask_login import current_user

from elysium import house_time
from elysium.extensions import db
from elysium.htmx import htmx_redirect, is_htmx, personal_pages
from elysium.integrations import stripe_gateway
from elysium.models.engagement import BespokeQuote
from elysium.models.orders import Order, OrderStatus
from elysium.security import keep_the_address_here
from elysium.services import checkout as checkouts
from elysium.services import quotes
from elysium.services.quotes import QuoteRefusedError
from elysium.urls import absolute_url
from elysium.web.quotes import remember_deposit

bp = Blueprint("quotes", __name__, url_prefix="/bespoke/quote")

SESSION_ID_QUERY = "?session_id={CHECKOUT_SESSION_ID}"
UNREACHABLE = "We couldn't reach our payment provider — nothing was taken, please try again."
NOT_CONFIGURED = "Payments are not configured."
DEPOSIT_ENDED = (
    "This payment was cancelled before its page opened, so nothing was charged. Please try again."
)

personal_pages(bp)


def _quote(token: str) -> BespokeQuote:
    # The longest an address can make it (320 characters, none of them ASCII) is well within.
    if len(token) > 2000:
        abort(404)
    try:
        quote = quotes.quote_for_token(db.session, token)
    except quotes.OldQuoteLinkError:
        abort(_old_link())
    return quote or abort(404)


def _old_link() -> Response:
    """An old link to an account's commission: where its quotes are now."""
    response = make_response(render_template("quotes/old_link.html"), 410)
    keep_the_address_here(response)
    return response


def _page(quote: BespokeQuote, status: int = 200, *, problem: str | None = None) -> Response:
    shown = quotes.view(db.session, quote, house_time.today())
    newest_url = (
        url_for("quotes.show", token=quotes.quote_token(shown.newest)) if shown.newest else None
    )
    html = render_template(
        "quotes/show.html",
        shown=shown,
        S=quotes.QuoteState,
        token=quotes.quote_token(quote),
        newest_url=newest_url,
        problem=problem,
        payments_configured=stripe_gateway.payments_configured(),
    )
    response = make_response(html, status)
    # Its address is the quote's secret: no request made from the page sends it on.
    keep_the_address_here(response)
    return response


@bp.get("/<token>")
def show(token: str) -> Response:
    return _page(_quote(token))


def _leave_for(url: str) -> Response:
    return htmx_redirect(url) if is_htmx() else redirect(url, 303)


def _return_urls(token: str) -> checkouts.ReturnUrls:
    return checkouts.ReturnUrls(
        success=absolute_url("checkout.success") + SESSION_ID_QUERY,
        cancel=absolute_url("quotes.show", token=token),
    )


def _to_order(order: Order, token: str) -> Response:
    if order.stripe_checkout_session_id:
        return _leave_for(url_for("checkout.success", session_id=order.stripe_checkout_session_id))
    return _leave_for(url_for("quotes.show", token=token))


def _signed_in_as_its_client(quote: BespokeQuote) -> bool:
    """Whether the commission's own account is signed in here: only then is Stripe's page
    made with the account's Stripe customer (her details, her address as it is now); anyone
    else holding the link pays with the commission's address alone."""
    return current_user.is_authenticated and current_user.id == quote.lead.user_id


@bp.post("/<token>/deposit")
def pay(token: str) -> Response:
    """Off to Stripe's page for the deposit: a new deposit order, or the one in progress."""
    quote = _quote(token)
    if not stripe_gateway.payments_configured():
        return _page(quote, 503, problem=NOT_CONFIGURED)
    urls = _return_urls(token)
    quote_id = quote.id
    as_account = _signed_in_as_its_client(quote)
    for _ in range(2):  # a second round only when the order in progress had expired
        try:
            order, new = quotes.start_deposit(
                db.session,
                quote_id,
                expiry_minutes=current_app.config["CHECKOUT_EXPIRY_MINUTES"],
                today=house_time.today(),
            )
            db.session.commit()
        except QuoteRefusedError as error:
            db.session.rollback()
            return _page(_quote(token), 409, problem=error.message)
        # Only a browser sent to pay is remembered as paying: the order's page after Stripe
        # (with the client's address) is not for whoever holds the link once it is paid.
        if new:
            try:
                url = checkouts.begin_payment(db.session, order, urls, as_account=as_account)
            except checkouts.PaymentEndedError as error:
                db.session.commit()
                # Its quote replaced (or its commission closed) as the page was made, say.
                why = quotes.not_payable_because(db.session, _quote(token), house_time.today())
                return _page(_quote(token), error.status, problem=why or DEPOSIT_ENDED)
            except checkouts.PaymentUnavailableError:
                db.session.commit()
                return _page(_quote(token), 503, problem=UNREACHABLE)
            db.session.commit()
            remember_deposit(order)
            return _leave_for(url)
        if order.status is not OrderStatus.PENDING:
            return _to_order(order, token)
        resumed = checkouts.resume_order(db.session, order, urls, as_account=as_account)
        db.session.commit()
        if resumed.outcome is checkouts.Resumed.TO_PAYMENT and resumed.url:
            remember_deposit(order)
            return _leave_for(resumed.url)
        if resumed.outcome is checkouts.Resumed.FINISHED:
            return _to_order(order, token)
        if resumed.outcome is checkouts.Resumed.UNREACHABLE:
            return _page(_quote(token), 503, problem=UNREACHABLE)
        # RELEASED: the page in progress had expired and its order ended; start afresh.
    return _page(_quote(token), 503, problem=UNREACHABLE)
