"""Stripe, through the official library: typed, with short timeouts and no surprises.

``STRIPE_API_BASE`` points the library at the fake server in ``devtools/`` for tests and the
offline demo; it is accepted only for a loopback address and an ``sk_test_`` key, so a
production deployment can never be pointed anywhere but Stripe by a stray setting.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import stripe
from flask import Flask, current_app

from elysium.config import ConfigurationError


class InvalidWebhookError(ValueError):
    """The body is not a correctly signed, recent, readable Stripe event."""


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_settings(app: Flask) -> None:
    """Refuse to start with a Stripe setup that could send real payments astray."""
    api_base = app.config.get("STRIPE_API_BASE")
    if not api_base:
        return
    key = app.config.get("STRIPE_SECRET_KEY") or ""
    if not _is_loopback(api_base):
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
    try:
        stripe.WebhookSignature.verify_header(
            payload.decode("utf-8"),
            signature,
            secret,
            current_app.config["STRIPE_WEBHOOK_TOLERANCE_SECONDS"],
        )
        event = json.loads(payload)
    except (stripe.SignatureVerificationError, UnicodeDecodeError, ValueError) as error:
        raise InvalidWebhookError(str(error)) from error
    if not isinstance(event, dict):
        raise InvalidWebhookError("the event is not a JSON object")
    return event


class PaymentProviderError(RuntimeError):
    """Stripe could not be reached, timed out or refused the request; nothing was paid."""


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
        http_client = stripe.RequestsClient(timeout=app.config["STRIPE_TIMEOUT_SECONDS"])
        client = stripe.StripeClient(key, max_network_retries=0, http_client=http_client, **options)
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


def create_checkout_session(
    order: Any,
    line_items: list[LineItem],
    *,
    success_url: str,
    cancel_url: str,
    expires_at: datetime,
    idempotency_key: str,
) -> tuple[str, str]:
    """A hosted Checkout Session for ``order``; returns its id and the URL to send the shopper to.

    Amounts come from the order (computed on the server); the order number travels as
    ``client_reference_id`` and in ``metadata`` so the webhook can find the order.
    """
    currency = order.currency.lower()
    metadata = {"order_number": order.number}
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
            for item in line_items
        ],
        "customer_email": order.email,
        "client_reference_id": order.number,
        "metadata": metadata,
        "payment_intent_data": {"metadata": metadata},
        "success_url": success_url,
        "cancel_url": cancel_url,
        "expires_at": int(expires_at.timestamp()),
    }
    try:
        session = _client().v1.checkout.sessions.create(
            params,  # type: ignore[arg-type]
            options={"idempotency_key": idempotency_key},
        )
    except stripe.StripeError as error:
        raise PaymentProviderError(str(error)) from error
    if not session.url:
        raise PaymentProviderError(f"checkout session {session.id} has no URL")
    return session.id, session.url


def retrieve_checkout_session(session_id: str) -> stripe.checkout.Session:
    try:
        return _client().v1.checkout.sessions.retrieve(session_id)
    except stripe.StripeError as error:
        raise PaymentProviderError(str(error)) from error


def expire_checkout_session(session_id: str) -> stripe.checkout.Session:
    try:
        return _client().v1.checkout.sessions.expire(session_id)
    except stripe.StripeError as error:
        raise PaymentProviderError(str(error)) from error
