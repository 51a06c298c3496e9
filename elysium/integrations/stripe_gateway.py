"""Stripe, through the official library: typed, with short timeouts and no surprises.

``STRIPE_API_BASE`` points the library at the fake server in ``devtools/`` for tests and the
offline demo; it is accepted only for a loopback address and an ``sk_test_`` key, so a
production deployment can never be pointed anywhere but Stripe by a stray setting.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import stripe
from flask import Flask, current_app, g, has_request_context

from elysium.config import ConfigurationError
from elysium.urls import is_loopback_url

T = TypeVar("T")

# What Stripe Checkout takes in one payment: at most 100 line items, and no amount (a line's
# or the whole) of more than 8 digits in minor units (£999,999.99). A payment beyond either is
# refused every time it is asked, which is no outage: the shop refuses it first.
MAX_LINE_ITEMS = 100
MAX_AMOUNT = 99_999_999
# Nor less than its smallest charge in the currency (minor units, as Stripe lists them; 50
# in one not listed).
MIN_AMOUNTS = {
    "GBP": 30,
    "EUR": 50,
    "USD": 50,
    "CHF": 50,
    "CAD": 50,
    "AUD": 50,
    "NZD": 50,
    "SGD": 50,
    "INR": 50,
    "BRL": 50,
    "JPY": 50,
    "BGN": 100,
    "AED": 200,
    "MYR": 200,
    "PLN": 200,
    "RON": 200,
    "DKK": 250,
    "NOK": 300,
    "SEK": 300,
    "HKD": 400,
    "MXN": 1000,
    "THB": 1000,
    "CZK": 1500,
    "HUF": 17500,
}


def min_amount(currency: str) -> int:
    """The smallest payment Stripe takes in ``currency``, in its minor units."""
    return MIN_AMOUNTS.get(currency.upper(), 50)


class InvalidWebhookError(ValueError):
    """The body is not a correctly signed, recent, readable Stripe event."""


def check_settings(app: Flask) -> None:
    """Refuse to start with a Stripe setup that could send real payments astray."""
    api_base = app.config.get("STRIPE_API_BASE")
    if not api_base:
        return
    key = app.config.get("STRIPE_SECRET_KEY") or ""
    if not is_loopback_url(api_base):
        raise ConfigurationError("STRIPE_API_BASE may only point at a loopback address")
    if not key.startswith("sk_test_"):
        raise ConfigurationError("STRIPE_API_BASE is only accepted with an sk_test_ key")


def payments_configured() -> bool:
    return bool(current_app.config.get("STRIPE_SECRET_KEY"))


def demo_payments() -> bool:
    """True while payments go to the local fake (a banner says so)."""
    return bool(current_app.config.get("STRIPE_API_BASE"))


def verify_webhook(payload: bytes, signature: str | None) -> dict[str, Any]:
    """The event in a webhook body, if its ``Stripe-Signature`` is valid and recent."""
    secret = current_app.config.get("STRIPE_WEBHOOK_SECRET")
    if not secret:
        raise InvalidWebhookError("STRIPE_WEBHOOK_SECRET is not set")
    if not signature:
        raise InvalidWebhookError("no Stripe-Signature header")
    if not signature.isascii():  # Stripe's library compares it with compare_digest, which
        raise InvalidWebhookError("a Stripe-Signature outside ASCII")  # refuses such text
    try:
        stripe.WebhookSignature.verify_header(
            payload.decode("utf-8"),
            signature,
            secret,
            current_app.config["STRIPE_WEBHOOK_TOLERANCE_SECONDS"],
        )
        event = json.loads(payload)
    # RecursionError: JSON nested deeper than the parser goes (still a signed body).
    except (
        stripe.SignatureVerificationError,
        UnicodeDecodeError,
        ValueError,
        RecursionError,
    ) as error:
        raise InvalidWebhookError(str(error)) from error
    if not isinstance(event, dict):
        raise InvalidWebhookError("the event is not a JSON object")
    return event


class PaymentProviderError(RuntimeError):
    """Stripe could not be reached, timed out or refused the request; nothing was paid."""


# Where a request notes that Stripe could not be reached, and that the call under way is
# best effort (``OneWaitPerRequest``).
UNREACHABLE_IN_THIS_REQUEST = "stripe_unreachable"
BEST_EFFORT = "stripe_best_effort"


class OneWaitPerRequest(stripe.RequestsClient):
    """Stripe's HTTP client, waiting on an unreachable Stripe for one change per request.

    Each call waits ``STRIPE_TIMEOUT_SECONDS`` for each of the library's tries (about 13 s
    in all by default). A page that asks Stripe for several changes (a signed-in shopper
    replacing a payment: close the old page, update the customer, make the new page) waited
    that long for each, 40 s and more, near the worker's own timeout and past a proxy's.
    Once Stripe could not be reached (a timeout, a refused connection), the request asks it
    for no further change: those calls fail at once, as that one did, and every caller
    already takes an unreachable Stripe (the order left as it was, the shopper told, the
    sweeper or a retry finishing later). A look-up (``GET``) is still made: it is how a
    change that timed out is found to have happened (a page closed, or paid first); once
    Stripe answers one, the changes after it go again. A change whose failure its caller
    takes in its stride (:func:`update_customer_email`: the page is made all the same)
    counts for nothing. Only within a request: a command or the outbox worker asks again on
    its next turn anyway."""

    def request_with_retries(self, method: str, *args: Any, **kwargs: Any) -> Any:
        changes = method.lower() != "get"
        if changes and has_request_context() and g.get(UNREACHABLE_IN_THIS_REQUEST):
            raise stripe.APIConnectionError("Stripe could not be reached earlier in this request")
        try:
            answer = super().request_with_retries(method, *args, **kwargs)
        except stripe.APIConnectionError:
            if has_request_context() and not g.get(BEST_EFFORT):
                setattr(g, UNREACHABLE_IN_THIS_REQUEST, True)
            raise
        if has_request_context():
            g.pop(UNREACHABLE_IN_THIS_REQUEST, None)  # Stripe answers again
        return answer


def _client() -> stripe.StripeClient:
    """One client per app (its HTTP session is reused), built from the settings."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    client = app.extensions.get("stripe_client")
    if client is None:
        key = app.config.get("STRIPE_SECRET_KEY")
        if not key:
            raise PaymentProviderError("payments are not configured (no STRIPE_SECRET_KEY)")
        options: dict[str, Any] = {}
        if api_base := app.config.get("STRIPE_API_BASE"):
            options["base_addresses"] = {"api": api_base}
        http_client = OneWaitPerRequest(timeout=app.config["STRIPE_TIMEOUT_SECONDS"])
        # Every call that creates something carries an idempotency key, so the library may
        # safely try again after a network error, a 409 or a 5xx.
        client = stripe.StripeClient(
            key,
            max_network_retries=app.config["STRIPE_MAX_NETWORK_RETRIES"],
            http_client=http_client,
            **options,
        )
        app.extensions["stripe_http_client"] = http_client
        app.extensions["stripe_client"] = client
    return client


def close_client(app: Flask) -> None:
    """Close the app's Stripe HTTP session (tests call this on teardown)."""
    app.extensions.pop("stripe_client", None)
    http_client = app.extensions.pop("stripe_http_client", None)
    if http_client is not None:
        http_client.close()


@dataclass(frozen=True)
class LineItem:
    name: str
    description: str
    unit_amount: int
    quantity: int


@dataclass(frozen=True)
class CheckoutRequest:
    """Everything a Checkout Session is made from; the same request always makes the same
    session (``idempotency_key``), so asking again after a crash finds the first one."""

    order_number: str
    currency: str
    line_items: list[LineItem]
    email: str
    customer_id: str | None
    success_url: str
    cancel_url: str
    expires_at: datetime
    idempotency_key: str


def create_customer(*, email: str, name: str, user_id: int, idempotency_key: str) -> str:
    """A Stripe Customer for one account, so Checkout prefills the shopper's details."""
    params: dict[str, Any] = {"email": email, "metadata": {"user_id": str(user_id)}}
    if name:
        params["name"] = name
    try:
        customer = _client().v1.customers.create(
            params,  # type: ignore[arg-type]
            options={"idempotency_key": idempotency_key},
        )
    except stripe.StripeError as error:
        raise PaymentProviderError(str(error)) from error
    return customer.id


def delete_customer(customer_id: str) -> None:
    """Stripe forgets a customer's details (their payments stay on Stripe's records)."""
    try:
        _client().v1.customers.delete(customer_id)
    except stripe.InvalidRequestError as error:
        if error.code == "resource_missing":
            return  # already gone
        raise PaymentProviderError(str(error)) from error
    except stripe.StripeError as error:
        raise PaymentProviderError(str(error)) from error


class UnknownCustomerError(PaymentProviderError):
    """Stripe has no such customer (deleted in its dashboard, or made under other keys)."""


def update_customer_email(customer_id: str, email: str) -> None:
    """Tell Stripe a customer's new email address (its payment page prefills it, its
    receipts go to it). Raises :class:`UnknownCustomerError` when Stripe has no such
    customer."""
    # Best effort: should Stripe not answer, the caller makes the page all the same, so the
    # request's later calls are not refused for it (``OneWaitPerRequest``).
    setattr(g, BEST_EFFORT, True)
    try:
        _client().v1.customers.update(customer_id, {"email": email})
    except stripe.InvalidRequestError as error:
        if error.code == "resource_missing":
            raise UnknownCustomerError(str(error)) from error
        raise PaymentProviderError(str(error)) from error
    except stripe.StripeError as error:
        raise PaymentProviderError(str(error)) from error
    finally:
        g.pop(BEST_EFFORT, None)


def create_checkout_session(request: CheckoutRequest) -> tuple[str, str]:
    """A hosted Checkout Session; returns its id and the URL to send the shopper to.

    Amounts come from the order (computed on the server); the order number travels as
    ``client_reference_id`` and in ``metadata`` so the webhook can find the order. A known
    customer is passed as ``customer`` (Stripe prefills their details), anyone else by email.
    """
    currency = request.currency.lower()
    metadata = {"order_number": request.order_number}
    who: dict[str, Any] = (
        {"customer": request.customer_id}
        if request.customer_id
        else {"customer_email": request.email}
    )
    params: dict[str, Any] = {
        "mode": "payment",
        "line_items": [
            {
                "quantity": item.quantity,
                "price_data": {
                    "currency": currency,
                    "unit_amount": item.unit_amount,
                    "product_data": {
                        "name": item.name,
                        **({"description": item.description} if item.description else {}),
                    },
                },
            }
            for item in request.line_items
        ],
        **who,
        "client_reference_id": request.order_number,
        "metadata": metadata,
        "payment_intent_data": {"metadata": metadata},
        "success_url": request.success_url,
        "cancel_url": request.cancel_url,
        "expires_at": int(request.expires_at.timestamp()),
    }
    try:
        session = _client().v1.checkout.sessions.create(
            params,  # type: ignore[arg-type]
            options={"idempotency_key": request.idempotency_key},
        )
    except stripe.InvalidRequestError as error:
        if error.code == "resource_missing" and error.param == "customer":
            raise UnknownCustomerError(str(error)) from error
        raise PaymentProviderError(str(error)) from error
    except stripe.StripeError as error:
        raise PaymentProviderError(str(error)) from error
    if not session.url:
        raise PaymentProviderError(f"checkout session {session.id} has no URL")
    return session.id, session.url


class RefundRefusedError(PaymentProviderError):
    """Stripe answered and refused the refund (already refunded, disputed, too much...)."""


@dataclass(frozen=True)
class RefundAnswer:
    refund_id: str
    status: str  # Stripe's: succeeded, pending, requires_action, failed, canceled


def create_refund(
    *, payment_intent: str, amount: int, idempotency_key: str, order_number: str
) -> RefundAnswer:
    """Give back ``amount`` (minor units) of a payment. The same key asked again (a retry, a
    double submit) gets Stripe's first answer, never a second refund.

    Raises :class:`RefundRefusedError` when Stripe refuses it, :class:`PaymentProviderError`
    when Stripe could not be reached (whether the refund happened is then unknown: ask again
    with the same key).
    """
    params: dict[str, Any] = {
        "payment_intent": payment_intent,
        "amount": amount,
        # The key again, where it outlives Stripe's memory of it (about a day): see find_refund.
        "metadata": {"order_number": order_number, "refund_key": idempotency_key},
    }
    try:
        refund = _client().v1.refunds.create(
            params,  # type: ignore[arg-type]
            options={"idempotency_key": idempotency_key},
        )
    except stripe.InvalidRequestError as error:
        raise RefundRefusedError(error.user_message or str(error)) from error
    except stripe.StripeError as error:
        raise PaymentProviderError(str(error)) from error
    return RefundAnswer(refund_id=refund.id, status=refund.status or "pending")


@dataclass(frozen=True)
class PaymentRefund:
    """One refund of a payment as Stripe lists it; ``key`` is the shop's idempotency key from
    its metadata (None for a refund made elsewhere, in Stripe's dashboard say)."""

    refund_id: str
    status: str
    amount: int
    key: str | None
    created: int = 0  # when Stripe made it (seconds since the epoch)


def refunds_of(payment_intent: str) -> list[PaymentRefund]:
    """Every refund of the payment, whoever made it. Raises :class:`PaymentProviderError` when
    Stripe could not be reached."""
    return _every(
        lambda: _client().v1.refunds.list({"payment_intent": payment_intent, "limit": 100}),
        lambda refund: PaymentRefund(
            refund_id=refund.id,
            status=refund.status or "pending",
            amount=int(refund.amount or 0),
            key=(refund.metadata.to_dict() if refund.metadata else {}).get("refund_key"),
            created=int(refund.created or 0),
        ),
    )


def _every(first_page: Callable[[], Any], read: Callable[[Any], T]) -> list[T]:
    """Every item of a Stripe list, page after page, each read into one of ours. Raises
    :class:`PaymentProviderError` when Stripe could not be reached."""
    try:
        return [read(item) for item in first_page().auto_paging_iter()]
    except stripe.StripeError as error:
        raise PaymentProviderError(str(error)) from error


@dataclass(frozen=True)
class PaymentDispute:
    """One dispute of a payment as Stripe lists it. ``status`` is Stripe's: open while
    ``warning_needs_response``, ``warning_under_review``, ``needs_response`` or
    ``under_review``; closed ``won``, ``lost`` or ``warning_closed``. ``charge_refundable``:
    whether Stripe still lets the payment be refunded (not while a chargeback is open, nor
    once it is lost)."""

    dispute_id: str
    status: str
    amount: int
    charge_refundable: bool

    @property
    def open(self) -> bool:
        return self.status not in ("won", "lost", "warning_closed")

    @property
    def lost(self) -> bool:
        return self.status == "lost"


def disputes_of(payment_intent: str) -> list[PaymentDispute]:
    """Every dispute of the payment. Raises :class:`PaymentProviderError` when Stripe could not
    be reached."""
    return _every(
        lambda: _client().v1.disputes.list({"payment_intent": payment_intent, "limit": 100}),
        lambda dispute: PaymentDispute(
            dispute_id=dispute.id,
            status=dispute.status or "needs_response",
            amount=int(dispute.amount or 0),
            charge_refundable=bool(dispute.is_charge_refundable),
        ),
    )


class UnknownCheckoutSessionError(PaymentProviderError):
    """Stripe answered that it has no such Checkout Session (404 ``resource_missing``): made
    under other keys (another Stripe account, or the other mode), or never made there. Not an
    outage: asking again gets the same answer."""


def retrieve_checkout_session(session_id: str) -> stripe.checkout.Session:
    """Raises :class:`UnknownCheckoutSessionError` when Stripe has no such session,
    :class:`PaymentProviderError` when it could not be asked."""
    return _about_a_checkout_session(lambda: _client().v1.checkout.sessions.retrieve(session_id))


def expire_checkout_session(session_id: str) -> stripe.checkout.Session:
    """Raises :class:`UnknownCheckoutSessionError` when Stripe has no such session,
    :class:`PaymentProviderError` when it refused (a page no longer open) or could not be
    asked."""
    return _about_a_checkout_session(lambda: _client().v1.checkout.sessions.expire(session_id))


def _about_a_checkout_session(
    ask: Callable[[], stripe.checkout.Session],
) -> stripe.checkout.Session:
    try:
        return ask()
    except stripe.InvalidRequestError as error:
        if error.code == "resource_missing":
            raise UnknownCheckoutSessionError(str(error)) from error
        raise PaymentProviderError(str(error)) from error
    except stripe.StripeError as error:
        raise PaymentProviderError(str(error)) from error
