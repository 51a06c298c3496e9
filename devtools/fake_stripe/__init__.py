"""A fake Stripe server for tests and the offline demo (development only, no real payments).

``FakeStripeServer`` serves a ``FakeStripe`` WSGI app on 127.0.0.1; the real ``stripe``
library talks to it unmodified. See ``app.py`` for the test hooks.
"""

from .app import API_VERSION, DEFAULT_ENABLED_EVENTS, FakeStripe, StripeError
from .server import FakeStripeServer
from .webhooks import Delivery, sign, verify

__all__ = [
    "API_VERSION",
    "DEFAULT_ENABLED_EVENTS",
    "Delivery",
    "FakeStripe",
    "FakeStripeServer",
    "StripeError",
    "sign",
    "verify",
]
