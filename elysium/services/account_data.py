"""The shopper's own data: a copy to take away (export) and closing the account (erasure).

Closing an account deletes the user row and everything that only describes the person (profile,
addresses, sign-in identities, wishlist, bag, pieces viewed, queued and sent emails). Orders
are the shop's accounting records, so they stay, cut loose from the person: no user, no email,
no addresses, no gift message; lines, totals and status are kept (and nobody is emailed about
them again). An order that is still being paid for or on its way needs its address, so closing
waits until it has arrived; a commission's paid deposit has nothing to deliver. Closing also
waits for an order whose money the shop holds and may owe back (a payment that came after the
order ended, a refund that failed): until staff have dealt with it, the order keeps the address
to reach its shopper. Orders placed as a guest under the account's address are the person's too
(the owner proved the address is theirs), in the export and the erasure, and an engraving goes
like a gift message. Commissions are kept the same way, those asked as a guest under the
account's email too, without the person's words (the idea, and what each quote describes: a
dedication, a ring size); one still in talks is lost with its client, so its quote can't be paid.
The Stripe customer made for the account is deleted at Stripe too, once the closing is
committed (:func:`forget_at_stripe`).
"""

from __future__ import annotations

import hmac
import logging
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, func, not_, or_, select, update
from sqlalchemy.orm import selectinload

from elysium.integrations import stripe_gateway
from elysium.models.cart import Cart, CartLine, WishlistItem
from elysium.models.engagement import BespokeLead, BespokeQuote, LeadStatus, ProductView
from elysium.models.inventory import StockMovement
from elysium.models.orders import Order, OrderLine, OrderStatus
from elysium.models.outbox import OutboxEmail, OutboxStatus
from elysium.models.types import utcnow
from elysium.models.users import User
from elysium.services import fulfilment, leads, outbox, passwords, payments, quotes, views
from elysium.services.accounts import AccountError, normalise_email
from elysium.services.addresses import addresses_of, as_snapshot
from elysium.services.cart import detach_orders, hold_account_bag
from elysium.services.configuration import engraved
from elysium.services.outbox import queue_email
from elysium.services.sql import AnySession, hold_row

IN_PROGRESS = frozenset(
    {OrderStatus.PROCESSING, OrderStatus.PAID, OrderStatus.FULFILLED, OrderStatus.SHIPPED}
)
ERASED_EMAIL = ""
# The warnings on an order that say the shop holds money that may be owed back to its shopper,
# or is giving it back: they come off once staff have dealt with it.
MONEY_HELD_FLAGS = (
    *fulfilment.HELD_AFTER_IT_ENDED,
    payments.AMOUNT_MISMATCH_FLAG,
    payments.REFUND_AWAITED_FLAG,
    payments.CANCEL_TO_FINISH_FLAG,
    fulfilment.REFUND_REFUSED,
    quotes.DEPOSIT_WITHDRAWN_FLAG,
    quotes.DEPOSIT_WON_ANOTHER_WAY_FLAG,
    quotes.DEPOSIT_LEAD_CLOSED_FLAG,
    quotes.SECOND_DEPOSIT_FLAG,
)

logger = logging.getLogger(__name__)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def export(session: AnySession, user: User) -> dict[str, Any]:
    """Everything the shop keeps about the shopper, as plain JSON-ready data: the account,
    addresses, orders (with where they went and the gift message), the wishlist, the bag
    (an engraving is the shopper's words), commissions with their quotes
    (those asked as a guest under the account's address too), pieces viewed, and the emails
    sent, by subject and date (not their text: a file kept must hold no live link)."""
    profile = user.profile
    orders = session.scalars(
        select(Order).where(_orders_of(user.id, user.email)).order_by(Order.created_at, Order.id)
    )
    wishlist = session.scalars(
        select(WishlistItem).where(WishlistItem.user_id == user.id).order_by(WishlistItem.id)
    )
    bag = session.scalars(
        select(CartLine).join(Cart).where(Cart.user_id == user.id).order_by(CartLine.id)
    )
    return {
        "exported_at": _iso(utcnow()),
        "account": {
            "email": user.email,
            "first_name": user.first_name,
            "last_name": user.last_name,
            "phone": user.phone,
            "email_verified_at": _iso(user.email_verified_at),
            "created_at": _iso(user.created_at),
            "last_login_at": _iso(user.last_login_at),
            "has_password": bool(user.password_hash),
            "sign_in_with": [
                {"provider": link.provider, "email": link.email, "linked_at": _iso(link.created_at)}
                for link in user.oauth_accounts
            ],
        },
        "preferences": {
            "preferred_metal": profile.preferred_metal if profile else None,
            "ring_size": profile.ring_size if profile else None,
            "marketing_consent": bool(profile and profile.marketing_consent),
            "marketing_consent_at": _iso(profile.marketing_consent_at if profile else None),
        },
        "addresses": [
            {
                **as_snapshot(address),
                "default_shipping": address.is_default_shipping,
                "default_billing": address.is_default_billing,
            }
            for address in addresses_of(session, user)
        ],
        "orders": [
            {
                "number": order.number,
                "status": order.status.value,
                "placed_at": _iso(order.created_at),
                "currency": order.currency,
                "subtotal": order.subtotal,
                "shipping": order.shipping,
                "total": order.total,
                "refunded": order.refunded_amount,
                "email": order.email,
                "shipping_address": order.shipping_address,
                "billing_address": order.billing_address,
                "gift_message": order.gift_message,
                "lines": [
                    {
                        "product": line.product_name,
                        "configuration": line.configuration_summary,
                        "quantity": line.quantity,
                        "unit_price": line.unit_price,
                    }
                    for line in order.lines
                ],
            }
            for order in orders
        ],
        "wishlist": [
            {
                "product": item.product.name,
                "slug": item.product.slug,
                "configuration": item.configuration,
                "added_at": _iso(item.created_at),
            }
            for item in wishlist
        ],
        "bag": [
            {
                "product": line.product.name,
                "slug": line.product.slug,
                "configuration": line.configuration,
                "quantity": line.quantity,
                "added_at": _iso(line.created_at),
            }
            for line in bag
        ],
        "commissions": [
            {
                "reference": lead.reference,
                "status": lead.status.value,
                "requested_at": _iso(lead.created_at),
                "name": lead.name,
                "email": lead.email,
                "phone": lead.phone,
                "piece_type": lead.category,
                "preferred_metal": lead.preferred_metal,
                "budget": lead.budget,
                "wanted_by": lead.wanted_by.isoformat() if lead.wanted_by else None,
                "message": lead.message,
                "starting_from": lead.product.slug if lead.product else None,
                "configuration": lead.configuration,
                "contact_consent": lead.contact_consent,
                "quotes": _quotes_of(session, lead),
            }
            for lead in session.scalars(
                select(BespokeLead)
                .where(_leads_of(user.id, user.email))
                .options(selectinload(BespokeLead.quotes))
                .order_by(BespokeLead.created_at, BespokeLead.id)
            )
        ],
        "viewed": [
            {"product": slug, "viewed_at": _iso(viewed_at)}
            for slug, viewed_at in views.views_of(session, user.id)
        ],
        "emails": [
            {
                "to": email.to_address,
                "subject": email.subject,
                "queued_at": _iso(email.created_at),
                "sent_at": _iso(email.sent_at),
            }
            for email in session.scalars(
                select(OutboxEmail)
                .where(_emails_of(user.id, user.email))
                .order_by(OutboxEmail.created_at, OutboxEmail.id)
            )
        ],
    }


def _quotes_of(session: AnySession, lead: BespokeLead) -> list[dict[str, Any]]:
    """The commission's quotes, oldest first, as her commissions page and each quote's page
    show them: what the piece is, its terms (amounts in minor units, as the orders'), whether
    it was replaced and whether its deposit is paid, by which order. Not its link: a file kept
    must hold no live link."""
    deposits = quotes.deposit_orders(session, lead)
    return [
        {
            "sent_at": _iso(quote.created_at),
            "description": quote.description,
            "currency": quote.currency,
            "price": quote.price,
            "deposit_percent": quote.deposit_percent,
            "deposit": quote.deposit_amount,
            "valid_until": quote.valid_until.isoformat(),
            "withdrawn_at": _iso(quote.withdrawn_at),
            "paid_at": _iso(quote.paid_at),
            "deposit_order": (
                deposits[quote.id].number
                if quote.paid_at is not None and quote.id in deposits
                else None
            ),
        }
        for quote in lead.quotes
    ]


def _refuse_while_open(session: AnySession, user_id: int, email: str) -> None:
    if pending := _open_orders(session, user_id, email):
        waiting = "; ".join(_what_it_waits_for(order) for order in pending)
        raise AccountError(
            f"Your account can be closed once nothing is in progress: {waiting}. Contact us "
            "and we'll help."
        )


def _what_it_waits_for(order: Order) -> str:
    """Why an open order keeps the account open, and until when, as its owner would say it:
    a deposit is never delivered, and a payment page ends when it is paid or left."""
    if order.status is OrderStatus.PENDING and order.bespoke_quote_id is not None:
        # A deposit's page is left, not cancelled: the quote's page only offers to pay it.
        return (
            f"the deposit of order {order.number} is still waiting for its payment (pay it, "
            "or it ends when its payment page closes)"
        )
    if order.status is OrderStatus.PENDING:
        return (
            f"order {order.number} is still waiting for its payment (pay or cancel it; "
            "otherwise it ends when its payment page closes)"
        )
    if _holds_money(order):
        return (
            f"we hold money of order {order.number} that may be yours to have back, and will "
            "be in touch about it"
        )
    if order.bespoke_quote_id is not None:
        return f"the deposit of order {order.number} is still on its way to us"
    return f"order {order.number} is still in progress until it has been delivered"


def _refuse_while_one_changes(session: AnySession, their_orders: ColumnElement[bool]) -> None:
    """An order over that the erasure could not take (another held it, or it ended after the
    erasure's last look): the closing is refused, to be asked again in a moment."""
    if number := session.scalar(select(Order.number).where(their_orders).limit(1)):
        raise AccountError(
            f"Order {number} was changing as your account was closing, so nothing was closed. "
            "Please try again in a moment."
        )


def _holds_money(order: Order) -> bool:
    reasons = order.attention_reason if order.needs_attention else ""
    given_back = order.refunded_amount >= order.total
    return not given_back and any(flag in reasons for flag in MONEY_HELD_FLAGS)


def _still_open() -> ColumnElement[bool]:
    """Orders still being paid for or delivered: their addresses are needed until they arrive.
    A PENDING order counts whatever its payment page's expiry: a payment made in its last
    minute may be reported late, and one Stripe says is paid may wait for its event; the
    sweeper ends the ones truly abandoned within minutes. A commission's deposit, once paid,
    has nothing to deliver. Whatever its status, an order whose money the shop holds and may
    owe back (``MONEY_HELD_FLAGS``, and not all given back) keeps the address to reach its
    shopper: erased, it would leave the money with nobody to give it back to."""
    money_held = and_(
        Order.needs_attention,
        Order.refunded_amount < Order.total,
        or_(*(Order.attention_reason.contains(flag, autoescape=True) for flag in MONEY_HELD_FLAGS)),
    )
    return or_(
        and_(
            Order.status.in_([*IN_PROGRESS, OrderStatus.PENDING]),
            not_(and_(Order.bespoke_quote_id.is_not(None), Order.status == OrderStatus.PAID)),
        ),
        money_held,
    )


def _open_orders(session: AnySession, user_id: int, email: str) -> list[Order]:
    return list(session.scalars(select(Order).where(_orders_of(user_id, email), _still_open())))


def confirm_identity(user: User, *, password: str = "", typed_email: str = "") -> None:
    """A password account confirms with its password; an OAuth-only one by typing its email."""
    if user.password_hash:
        if not passwords.verify_password(user.password_hash, password):
            raise AccountError("Your password is not correct.", field="password")
    elif not hmac.compare_digest(
        normalise_email(typed_email).encode(), normalise_email(user.email).encode()
    ):
        raise AccountError("Type the email address of this account.", field="confirm_email")


def close_account(
    session: AnySession, user: User, *, password: str = "", typed_email: str = ""
) -> int:
    """Erase the shopper (see the module docstring); returns how many orders were anonymised."""
    confirm_identity(user, password=password, typed_email=typed_email)
    if user.is_staff:
        raise AccountError("A staff account is closed by an administrator.")
    # The bag's row first: a checkout starting in another tab waits for the closing (and
    # finds no bag), one started before is among the orders read next.
    hold_account_bag(session, user.id)
    # Then the account's row, as the address book takes it (so the closing never deletes
    # the addresses a window is changing, each waiting on the other).
    hold_row(session, User, user.id)
    _refuse_while_open(session, user.id, user.email)
    first_name, email = user.first_name, user.email
    anonymised = _erase(session, user)
    queue_email(
        session,
        to=email,
        subject="Your ELYSIUM account is closed",
        template="account_closed",
        context={"first_name": first_name},
    )
    return anonymised


def forget_at_stripe(customer_id: str | None) -> None:
    """After the account is closed (and committed): Stripe forgets the customer we made for
    it. If Stripe can't be reached, the id is logged for staff to delete by hand."""
    if not customer_id or not stripe_gateway.payments_configured():
        return
    try:
        stripe_gateway.delete_customer(customer_id)
    except stripe_gateway.PaymentProviderError as error:
        logger.error(
            "A closed account's Stripe customer %s could not be deleted (%s): delete it in "
            "Stripe's dashboard",
            customer_id,
            error,
        )


ERASED_LEAD_TEXT = "(removed when the account was closed)"


def _leads_of(user_id: int, email: str) -> ColumnElement[bool]:
    """The person's commissions: those asked signed in, and those asked as a guest under the
    account's address (however its letters were cased). Not another account's commission
    whose contact address is this one (typed on the form, or an address that account left):
    it is that account's."""
    return or_(
        BespokeLead.user_id == user_id,
        and_(BespokeLead.user_id.is_(None), func.lower(BespokeLead.email) == email.lower()),
    )


def _orders_of(user_id: int, email: str) -> ColumnElement[bool]:
    """The person's orders: those placed signed in, and those placed as a guest under the
    account's address (however its letters were cased: a guest types it as they like), which
    its owner proved is theirs. Not another account's order to this address."""
    return or_(
        Order.user_id == user_id,
        and_(Order.user_id.is_(None), func.lower(Order.email) == email.lower()),
    )


def _emails_of(user_id: int, email: str) -> ColumnElement[bool]:
    """The emails to the person: those for the account, and those to its address (however
    cased) for no account. Not those for another account, though sent to this address."""
    return or_(
        OutboxEmail.user_id == user_id,
        and_(OutboxEmail.user_id.is_(None), func.lower(OutboxEmail.to_address) == email.lower()),
    )


ERASED_ENGRAVING = "(removed when the account was closed)"


def _erase_engravings(session: AnySession, orders: ColumnElement[bool]) -> None:
    """An engraving is the person's own words (names, dates), like a gift message: the
    orders keep that a piece was engraved, not what with."""
    lines = session.scalars(select(OrderLine).join(Order).where(orders))
    for line in lines:
        engraving = (line.configuration or {}).get("engraving")
        if not engraving:
            continue
        line.configuration = {**line.configuration, "engraving": ERASED_ENGRAVING}
        line.configuration_summary = line.configuration_summary.replace(
            engraved(engraving), f"engraved {ERASED_ENGRAVING}"
        )
    session.flush()


# What is left of an email being sent as its person's account closes: nothing of them, and
# never tried again (``outbox._fail_withdrawn``).
WITHDRAWN = {
    "user_id": None,
    "to_address": outbox.WITHDRAWN_ADDRESS,
    "subject": "",
    "body_text": "",
    "body_html": "",
    "last_error": outbox.WITHDRAWN_REASON,
}


def _hold_orders(
    session: AnySession, where: ColumnElement[bool], *, waiting: bool = True
) -> set[int]:
    """The ids of the orders ``where`` says, their rows locked until the transaction ends, in
    id order (PostgreSQL sorts the rows, then locks them as it reads them). A row that
    changed while it was waited for is read again, and left out if ``where`` no longer says
    it. ``waiting=False``: one another transaction holds is left out, never waited for
    (``SKIP LOCKED``)."""
    return set(
        session.scalars(
            select(Order.id)
            .where(where)
            .order_by(Order.id)
            .with_for_update(skip_locked=not waiting)
        )
    )


def _erase(session: AnySession, user: User) -> int:
    user_id, email = user.id, user.email
    # Only orders that are over: one begun meanwhile by a way that doesn't go through the bag
    # (a guest checkout under the address, a deposit for a quote) is left whole, and found
    # below, and the closing is refused and rolled back, as if it had been there first.
    their_orders = and_(_orders_of(user_id, email), not_(_still_open()))
    # Their locks before the commissions', in id order, as every path takes an order's lock
    # before its commission's: a deposit given back in Stripe's dashboard or taken back by
    # the bank holds its order and asks for its commission, and the closing, holding the
    # commission and asking for the order, waited on it as it waited on the closing
    # (PostgreSQL ended one of the two).
    held = _hold_orders(session, their_orders)
    theirs = _leads_of(user_id, email)
    their_leads = list(session.scalars(select(BespokeLead).where(theirs).with_for_update()))
    # The emails about them (the house's notification quotes the whole request) go too.
    about_them = [OutboxEmail.dedupe_key.like(f"bespoke:{lead.id}:%") for lead in their_leads]
    if about_them:
        session.execute(
            delete(OutboxEmail)
            .where(or_(*about_them), OutboxEmail.status != OutboxStatus.SENDING)
            .execution_options(synchronize_session=False)
        )
        # One being sent this moment: withdrawn, as the person's own (below).
        session.execute(
            update(OutboxEmail)
            .where(or_(*about_them))
            .values(**WITHDRAWN)
            .execution_options(synchronize_session=False)
        )
    # A commission still in talks is lost with its client: its quote can no longer be paid,
    # and nobody is left to send another to. One won stays won.
    for lead in their_leads:
        if leads.can_move(lead.status, LeadStatus.LOST):
            leads.move(
                session,
                lead,
                LeadStatus.LOST,
                actor=leads.SHOPPER_ACTOR,
                note="The client closed their account",
            )
    session.flush()
    # One over by now that was not when they were read (begun meanwhile without the bag, and
    # ended since) is taken only if nobody holds it, never waited for: its holder may be
    # waiting for a commission held here. Held, it is found below and the closing refused.
    held |= _hold_orders(session, and_(their_orders, Order.id.not_in(sorted(held))), waiting=False)
    erased = Order.id.in_(sorted(held))
    _erase_engravings(session, erased)
    # Explicit statements rather than ON DELETE rules: SQLite enforces foreign keys only
    # when asked to, and the result must be the same on both databases.
    anonymised = session.execute(
        update(Order)
        .where(erased)
        .values(
            user_id=None,
            email=ERASED_EMAIL,
            shipping_address={},
            billing_address={},
            gift_message="",
        )
        .execution_options(synchronize_session=False)
    ).rowcount
    _refuse_while_open(session, user_id, email)
    _refuse_while_one_changes(session, their_orders)
    carts = select(Cart.id).where(Cart.user_id == user_id).scalar_subquery()
    detach_orders(session, carts)
    for statement in (
        delete(CartLine).where(CartLine.cart_id.in_(carts)),
        delete(Cart).where(Cart.user_id == user_id),
        delete(WishlistItem).where(WishlistItem.user_id == user_id),
        delete(OutboxEmail).where(
            _emails_of(user_id, email), OutboxEmail.status != OutboxStatus.SENDING
        ),
        # Those being sent this moment: the try under way can't be stopped, but nothing of
        # them is kept, and they are never tried again (``outbox._fail_withdrawn``).
        update(OutboxEmail).where(_emails_of(user_id, email)).values(**WITHDRAWN),
        delete(ProductView).where(ProductView.user_id == user_id),
        # Their quotes keep the house's terms (price, deposit, dates), not what the piece was
        # to say or fit (a dedication, a ring size): the description is the person's words
        # too, and the old quote link still opens its page. Before the commissions lose the
        # address that says which are theirs.
        update(BespokeQuote)
        .where(BespokeQuote.lead_id.in_(select(BespokeLead.id).where(theirs)))
        .values(description=ERASED_LEAD_TEXT),
        # Commissions are kept for the house's records, like orders, without the person.
        update(BespokeLead)
        .where(theirs)
        .values(user_id=None, name="", email=ERASED_EMAIL, phone="", message=ERASED_LEAD_TEXT),
        update(BespokeLead)
        .where(BespokeLead.assigned_to_id == user_id)
        .values(assigned_to_id=None),
        update(StockMovement).where(StockMovement.actor_id == user_id).values(actor_id=None),
    ):
        session.execute(statement.execution_options(synchronize_session=False))
    # Profile, addresses and sign-in identities go with the user (ORM cascade).
    session.delete(user)
    session.flush()
    return anonymised
