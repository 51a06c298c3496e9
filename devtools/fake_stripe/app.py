"""A fake Stripe: the v1 API calls the shop makes, a hosted checkout page, and webhooks.

:class:`FakeStripe` is a WSGI application holding all state in memory. It answers in Stripe's
wire format (form-encoded requests, JSON answers, Stripe-shaped errors, idempotency keys) so
the real ``stripe`` library works against it unmodified. Run it with
:class:`devtools.fake_stripe.server.FakeStripeServer` (tests) or ``python -m
devtools.fake_stripe`` (local demo). Development only: nothing here touches real money.

The package, by job: :mod:`.objects` builds Stripe-shaped objects, :mod:`.api` routes ``/v1``
(authentication, parameters, idempotency), :mod:`.page` is the hosted page, :mod:`.state`
holds the store and the test hooks, :mod:`.webhooks` signs and delivers events.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Request

from . import api, page
from .state import FakeStripeState


class FakeStripe(FakeStripeState):
    """All of the fake's state and test hooks (see :class:`.state.FakeStripeState`), served
    as a WSGI application.

    The webhooks a request causes are released to the delivery thread once its response has
    been written: the caller always has its answer before the receiver hears of the change."""

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        request = Request(environ)
        try:
            if request.path.startswith("/v1/"):
                response, events = api.answer(self, request)
            else:
                response, events = page.answer(self, request)
        except HTTPException as exc:
            response, events = exc.get_response(environ), []  # type: ignore[assignment]
        batch = self._hold(events)
        if batch is None:
            return response(environ, start_response)
        release = functools.partial(self._release_batch, batch)
        try:
            return _ThenRelease(response(environ, start_response), release)
        except BaseException:
            release()
            raise


class _ThenRelease:
    """A response body that calls ``release`` once it has been written.

    A WSGI server asks for the next chunk only after writing the previous one, so running out
    of chunks means everything has been written; ``close()`` (which servers call at the end,
    and which a client that stops reading early triggers) releases too, once."""

    def __init__(self, body: Iterable[bytes], release: Callable[[], None]) -> None:
        self._body = body
        self._release = release

    def __iter__(self) -> Iterator[bytes]:
        yield from self._body
        self._release()

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._release()
