"""A fake Stripe server for tests and the offline demo (development only, no real payments).

``FakeStripeServer`` serves a ``FakeStripe`` WSGI app on 127.0.0.1; the real ``stripe``
library talks to it unmodified. See ``state.py`` for the test hooks and README.md for a tour.
"""

from .app import FakeStripe
from .errors import StripeError
from .server import FakeStripeServer
from .state import API_VERSION, DEFAULT_ENABLED_EVENTS
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
