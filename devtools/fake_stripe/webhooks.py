"""Signing and delivering webhook events the way Stripe does.

Stripe sends an event after the API call that caused it has been answered, from its own
machinery: a receiver can never be asked about a change before the caller has heard of it.
:class:`DeliveryQueue` does the same for the fake: events are handed to one background thread
once the answer has been written, and a test can wait for them with :meth:`DeliveryQueue.wait`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import requests

USER_AGENT = "Stripe/1.0 (+https://stripe.com/docs/webhooks)"

# (url, payload, headers) -> HTTP status of the receiver's answer. Lets a test hand events to
# a Flask test client instead of a live server.
Transport = Callable[[str, bytes, Mapping[str, str]], int]

logger = logging.getLogger(__name__)


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


class Batch:
    """The events of one API call (or one click on the hosted page), delivered in order."""

    def __init__(self, event_ids: Iterable[str]) -> None:
        self.event_ids = tuple(event_ids)
        self.deliveries: list[Delivery] = []
        self._attempted = 0
        self._done = threading.Event()
        if not self.event_ids:
            self._done.set()

    def wait(self, timeout: float) -> bool:
        """True once every event of the batch has been attempted (``deliveries`` holds them)."""
        return self._done.wait(timeout)

    def _record(self, delivery: Delivery | None) -> None:
        if delivery is not None:
            self.deliveries.append(delivery)
        self._attempted += 1
        if self._attempted == len(self.event_ids):
            self._done.set()


class DeliveryQueue:
    """Delivers events on a background thread, one at a time, in the order they were released.

    An API call *holds* its events while its answer is being written and *releases* them once
    it has been (the WSGI response's ``close``), so nothing reaches the receiver before the
    caller has its answer, and a caller that holds a lock the receiver needs cannot deadlock.
    :meth:`wait` counts held events too: a test that has its answer in hand can wait for the
    webhook it caused. The thread starts when there is work and ends when there is none.
    """

    def __init__(self, deliver: Callable[[str], Delivery], name: str = "fake-stripe-webhooks"):
        self._deliver = deliver
        self._name = name
        self._cond = threading.Condition()
        self._held: list[Batch] = []
        self._ready: deque[tuple[str, Batch]] = deque()
        self._worker: threading.Thread | None = None
        self._unreported: list[Delivery] = []

    def hold(self, event_ids: Iterable[str]) -> Batch:
        batch = Batch(event_ids)
        if batch.event_ids:
            with self._cond:
                self._held.append(batch)
        return batch

    def release(self, batch: Batch) -> None:
        """Let the thread deliver a held batch (a second release does nothing)."""
        with self._cond:
            if not any(held is batch for held in self._held):
                return
            self._held = [held for held in self._held if held is not batch]
            self._ready.extend((event_id, batch) for event_id in batch.event_ids)
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._worker.start()

    def send(self, event_ids: Iterable[str]) -> Batch:
        batch = self.hold(event_ids)
        self.release(batch)
        return batch

    def wait(self, timeout: float) -> list[Delivery]:
        """Wait until every held and queued event has been attempted; returns the attempts
        made since the previous call. Raises ``TimeoutError`` if that takes over ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._held or self._ready or self._worker is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    outstanding = sum(len(b.event_ids) for b in self._held) + len(self._ready)
                    raise TimeoutError(
                        f"webhook deliveries still outstanding after {timeout}s "
                        f"({outstanding} queued or held, "
                        f"{'one' if self._worker else 'none'} in progress)"
                    )
                self._cond.wait(remaining)
            done, self._unreported = self._unreported, []
        return done

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._ready:
                    self._worker = None
                    self._cond.notify_all()
                    return
                event_id, batch = self._ready.popleft()
            delivery: Delivery | None = None
            try:
                delivery = self._deliver(event_id)
            except Exception:  # a broken hook must not stop the deliveries behind it
                logger.exception("delivering %s failed", event_id)
            with self._cond:
                batch._record(delivery)
                if delivery is not None:
                    self._unreported.append(delivery)
                self._cond.notify_all()
