"""Stripe, through the official library: typed, with short timeouts and no surprises.

``STRIPE_API_BASE`` points the library at the fake server in ``devtools/`` for tests and the
offline demo; it is accepted only for a loopback address and an ``sk_test_`` key, so a
production deployment can never be pointed anywhere but Stripe by a stray setting.
"""

from __future__ import annotations

import ipaddress
import json
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
