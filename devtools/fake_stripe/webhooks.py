"""Signing and delivering webhook events the way Stripe does."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import requests

USER_AGENT = "Stripe/1.0 (+https://stripe.com/docs/webhooks)"

# (url, payload, headers) -> HTTP status of the receiver's answer. Lets a test hand events to
# a Flask test client instead of a live server.
Transport = Callable[[str, bytes, Mapping[str, str]], int]


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """The ``Stripe-Signature`` header: ``t=<unix>,v1=<hex HMAC-SHA256(secret, "t.payload")>``."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    signed = f"{timestamp}.".encode() + payload
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(payload: bytes, header: str, secret: str, tolerance: int = 300) -> bool:
    """The check a receiver makes (stripe.Webhook.construct_event does the same)."""
    try:
        items = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(items["t"])
    except (KeyError, ValueError):
        return False
    expected = sign(payload, secret, timestamp).split("v1=", 1)[1]
    signatures = [v for k, v in (p.split("=", 1) for p in header.split(",")) if k == "v1"]
    fresh = abs(time.time() - timestamp) <= tolerance
    return fresh and any(hmac.compare_digest(expected, s) for s in signatures)


@dataclass(frozen=True)
class Delivery:
    """One attempt to deliver one event. ``status`` is None when no answer came back."""

    event_id: str
    type: str
    url: str
    payload: bytes
    signature: str
    status: int | None
    error: str | None
    delivered_at: float

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def http_transport(timeout: float) -> Transport:
    def post(url: str, payload: bytes, headers: Mapping[str, str]) -> int:
        with requests.Session() as session:
            response = session.post(
                url, data=payload, headers=dict(headers), timeout=timeout, allow_redirects=False
            )
            response.close()
            return response.status_code

    return post
