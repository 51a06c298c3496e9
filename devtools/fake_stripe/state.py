"""The fake's state and its test hooks: the in-memory store, the clock, fault injection,
what happens when a customer pays, and webhook delivery.

Two ways an event reaches the webhook:

* caused by an API call (or a click on the hosted page): handed to the background
  :class:`~.webhooks.DeliveryQueue` once the answer has been written, as Stripe does; a test
  waits for it with :meth:`FakeStripeState.wait_for_deliveries`;
* caused by a test hook called directly (``pay``, ``expire``, ``create_dispute``, ...):
  delivered at once, in the calling thread, and the hook returns the deliveries.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import stripe

from . import objects
from .errors import StripeError, missing
from .objects import clone
from .webhooks import USER_AGENT, Batch, Delivery, DeliveryQueue, Transport, http_transport, sign

#: The API version of the installed stripe library (events carry it, as Stripe's do).
API_VERSION: str = stripe.api_version

#: Event types delivered unless ``enabled_events`` says otherwise (what the shop listens to).
DEFAULT_ENABLED_EVENTS = frozenset(
    {
        "checkout.session.completed",
        "checkout.session.async_payment_succeeded",
        "checkout.session.async_payment_failed",
        "checkout.session.expired",
        "charge.refunded",
        "charge.dispute.created",
        "charge.dispute.closed",
        "refund.created",
        "refund.failed",
        "payment_intent.payment_failed",
    }
)

IDEMPOTENCY_KEY_LIFETIME = 24 * 60 * 60
PAGE_ACTIONS = ("pay", "pay_later", "decline", "expire", "bank_succeeds", "bank_fails")


@dataclass
class Fault:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class SavedResponse:
    """The answer kept for an idempotency key."""

    method: str
    path: str
    fingerprint: str
    status: int
    body: bytes
    created: float


@dataclass
class FakeStripeState:
    """All of the fake's state, and the hooks tests drive it with.

    ``webhook_url``/``webhook_secret`` say where events go (change them at any time);
    ``webhook_transport`` replaces the HTTP POST (e.g. to call a Flask test client);
    ``auto_deliver=False`` queues events until :meth:`deliver` / :meth:`deliver_pending`;
    ``clock`` is the fake's idea of "now" (object timestamps, ``expires_at``);
    ``page_waits_for_webhooks`` says whether the hosted page's buttons answer only once the
    webhooks they caused have been attempted (the default, see :mod:`.page`).
    """

    webhook_url: str | None = None
    webhook_secret: str | None = None
    webhook_transport: Transport | None = None
    webhook_timeout: float = 10.0
    enabled_events: frozenset[str] | set[str] = DEFAULT_ENABLED_EVENTS
    auto_deliver: bool = True
    api_version: str = API_VERSION
    clock: Callable[[], float] = time.time
    #: Called after every delivery attempt (the demo prints them).
    on_delivery: Callable[[Delivery], None] | None = None
    #: Called with (method, path) as each API request arrives, before it is answered: a test
    #: looks at what the caller holds while it waits on Stripe.
    on_request: Callable[[str, str], None] | None = None
    page_waits_for_webhooks: bool = True

    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    payment_intents: dict[str, dict[str, Any]] = field(default_factory=dict)
    charges: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    disputes: dict[str, dict[str, Any]] = field(default_factory=dict)
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Every event created, oldest first (delivered or not).
    events: list[dict[str, Any]] = field(default_factory=list)
    #: Every delivery attempt, oldest first.
    deliveries: list[Delivery] = field(default_factory=list)
    #: Ids of events waiting for :meth:`deliver` while ``auto_deliver`` is off.
    pending: list[str] = field(default_factory=list)
    #: (method, path, status) of every API request, for tests that count calls.
    requests: list[tuple[str, str, int]] = field(default_factory=list)

    _line_items: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    _products: dict[str, dict[str, Any]] = field(default_factory=dict)
    _payloads: dict[str, bytes] = field(default_factory=dict)
    _session_pi_data: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: (api key, Idempotency-Key) -> the answer to replay.
    _idempotency: dict[tuple[str, str], SavedResponse] = field(default_factory=dict)
    _in_flight: set[tuple[str, str]] = field(default_factory=set)
    _faults: list[Fault] = field(default_factory=list)
    _hangs: list[float] = field(default_factory=list)
    _release: threading.Event = field(default_factory=threading.Event)
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _queue: DeliveryQueue = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.enabled_events = frozenset(self.enabled_events)
        self._queue = DeliveryQueue(self.deliver)

    # Fault injection.

    def fail_next(
        self,
        status: int = 500,
        count: int = 1,
        *,
        type: str | None = None,
        code: str | None = None,
        message: str | None = None,
        should_retry: bool | None = None,
    ) -> None:
        """Answer the next ``count`` API requests with a Stripe error of ``status`` before they
        execute (nothing is created and no idempotent result is saved, so a retry with the
        same Idempotency-Key succeeds). ``should_retry`` sets ``Stripe-Should-Retry``."""
        default_type = {
            400: "invalid_request_error",
            401: "invalid_request_error",
            402: "card_error",
            404: "invalid_request_error",
            429: "invalid_request_error",
        }.get(status, "api_error")
        body: dict[str, Any] = {
            "type": type or default_type,
            "message": message or "An unknown error occurred (injected by the fake Stripe).",
        }
        if code or status == 429:
            body["code"] = code or "rate_limit"
        headers = {}
        if should_retry is not None:
            headers["Stripe-Should-Retry"] = "true" if should_retry else "false"
        with self._lock:
            self._faults.extend(Fault(status, body, headers) for _ in range(count))

    def hang_next(self, seconds: float, count: int = 1) -> None:
        """Sit on the next ``count`` API requests for ``seconds`` before handling them (so a
        client with a shorter timeout gives up while the fake then carries on, as Stripe
        would). Stopping the server ends the wait."""
        with self._lock:
            self._hangs.extend([seconds] * count)

    def release_hangs(self) -> None:
        self._release.set()

    def reset_faults(self) -> None:
        with self._lock:
            self._faults.clear()
            self._hangs.clear()

    def _take_hang(self) -> float:
        with self._lock:
            return self._hangs.pop(0) if self._hangs else 0.0

    def _take_fault(self) -> Fault | None:
        with self._lock:
            return self._faults.pop(0) if self._faults else None

    # Reading the store.

    def session(self, session_id: str) -> dict[str, Any]:
        """A copy of a session as the API would return it."""
        with self._lock:
            return clone(self._session_or_404(session_id))

    def customer(self, customer_id: str) -> dict[str, Any]:
        """A copy of a customer as the API would return it."""
        with self._lock:
            return clone(self._customer_or_404(customer_id))

    def page_url(self, session_id: str) -> str:
        return self.session(session_id)["url"] or f"/pay/{session_id}"

    def event(self, event_id: str) -> dict[str, Any]:
        return json.loads(self._payloads[event_id])

    def events_of_type(self, type: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == type]

    def _session_or_404(self, session_id: str) -> dict[str, Any]:
        session = self.sessions.get(session_id)
        if session is None:
            raise missing("checkout.session", session_id)
        return session

    def _customer_or_404(self, customer_id: str) -> dict[str, Any]:
        customer = self.customers.get(customer_id)
        if customer is None or customer.get("deleted"):
            raise missing("customer", customer_id)
        return customer

    # What the customer does (the hosted page's buttons), and Stripe's own doings.

    def pay(self, session_id: str) -> list[Delivery]:
        """The customer pays by card successfully (as the page's Pay button)."""
        return self._act(session_id, "pay")

    def pay_later(self, session_id: str) -> list[Delivery]:
        """The customer picks a delayed bank payment (as the page's Pay later button)."""
        return self._act(session_id, "pay_later")

    def bank_payment_succeeds(self, session_id: str) -> list[Delivery]:
        return self._act(session_id, "bank_succeeds")

    def bank_payment_fails(self, session_id: str) -> list[Delivery]:
        return self._act(session_id, "bank_fails")

    def decline(self, session_id: str) -> list[Delivery]:
        """The customer's card is declined; the session stays open."""
        return self._act(session_id, "decline")

    def expire(self, session_id: str) -> list[Delivery]:
        """Expire an open session now and emit ``checkout.session.expired``."""
        return self._act(session_id, "expire")

    def expire_due_sessions(self) -> list[Delivery]:
        """Expire every open session whose ``expires_at`` has passed (Stripe does this on its
        own; the fake does it when asked) and deliver ``checkout.session.expired`` for each."""
        now = int(self.clock())
        with self._lock:
            due = [
                sid
                for sid, s in self.sessions.items()
                if s["status"] == "open" and s["expires_at"] <= now
            ]
        deliveries: list[Delivery] = []
        for sid in due:
            try:
                deliveries += self.expire(sid)
            except StripeError:  # paid or expired through the API meanwhile
                continue
        return deliveries

    def create_dispute(
        self, payment_intent_id: str, *, reason: str = "fraudulent", amount: int | None = None
    ) -> dict[str, Any]:
        """The cardholder disputes the payment: emits ``charge.dispute.created``."""
        with self._lock:
            intent = self.payment_intents.get(payment_intent_id)
            if intent is None or not intent.get("latest_charge"):
                raise KeyError(f"no charged payment intent {payment_intent_id!r}")
            charge = self.charges[intent["latest_charge"]]
            if charge["status"] != "succeeded":
                raise ValueError(f"charge {charge['id']} has not succeeded")
            dispute = objects.dispute(
                charge,
                reason=reason,
                amount=amount if amount is not None else charge["amount"],
                now=int(self.clock()),
            )
            self.disputes[dispute["id"]] = dispute
            charge["disputed"] = True
            event = self._new_event("charge.dispute.created", dispute)
        self._deliver_now([event])
        return clone(dispute)

    def close_dispute(self, dispute_id: str, *, status: str) -> dict[str, Any]:
        """The dispute ends: ``won`` (the payment stands, and may be refunded again), ``lost``
        (the cardholder's bank took the money back) or ``warning_closed`` (an inquiry that
        never became a chargeback). Emits ``charge.dispute.closed``."""
        if status not in ("won", "lost", "warning_closed"):
            raise ValueError(f"a dispute closes won, lost or warning_closed, not {status!r}")
        with self._lock:
            dispute = self.disputes[dispute_id]
            dispute["status"] = status
            dispute["is_charge_refundable"] = status != "lost"
            event = self._new_event("charge.dispute.closed", dispute)
        self._deliver_now([event])
        return clone(dispute)

    def _refundable_despite_disputes(self, charge_id: str) -> bool:
        """A disputed charge can be refunded again once each of its disputes closed in the
        merchant's favour (or as an inquiry); never while one is open, or after one was lost."""
        return all(
            dispute["status"] in ("won", "warning_closed")
            for dispute in self.disputes.values()
            if dispute["charge"] == charge_id
        )

    def fail_refund(
        self, refund_id: str, *, reason: str = "expired_or_canceled_card"
    ) -> list[Delivery]:
        """A refund Stripe accepted fails later (the card was closed, the bank refused it):
        the money goes back to the merchant's balance and counts as refunded no more. Emits
        ``refund.updated`` and ``refund.failed``."""
        with self._lock:
            refund = self.refunds[refund_id]
            if refund["status"] not in ("pending", "succeeded"):
                raise ValueError(f"refund {refund_id} is {refund['status']}: it can't fail now")
            refund.update(status="failed", failure_reason=reason)
            charge = self.charges[refund["charge"]]
            charge["amount_refunded"] -= refund["amount"]
            charge["refunded"] = False
            events = [
                self._new_event("refund.updated", refund, {}),
                self._new_event("refund.failed", refund, {}),
            ]
        return self._deliver_now(events)

    def refund_from_dashboard(
        self, payment_intent_id: str, *, amount: int | None = None
    ) -> list[Delivery]:
        """Someone refunds the payment in Stripe's dashboard (all that is left of it, or
        ``amount``): a refund with no key or metadata of the shop's; emits ``refund.created``
        and ``charge.refunded``."""
        values: dict[str, Any] = {"payment_intent": payment_intent_id}
        if amount is not None:
            values["amount"] = amount
        with self._lock:
            _, events = self._create_refund(values, {})
        return self._deliver_now(events)

    def _act(self, session_id: str, action: str, email: str | None = None) -> list[Delivery]:
        return self._deliver_now(self._transition(session_id, action, email))

    def _transition(
        self, session_id: str, action: str, email: str | None = None
    ) -> list[dict[str, Any]]:
        """Apply one of :data:`PAGE_ACTIONS` to a session; returns the events it caused."""
        with self._lock:
            session = self._session_or_404(session_id)
            status = session["status"]
            intent = self.payment_intents.get(session["payment_intent"] or "")
            if action in ("pay", "pay_later", "decline", "expire") and status != "open":
                raise StripeError(400, f"This Checkout Session is {status}, not open.")
            if action in ("pay", "pay_later", "decline") and session["expires_at"] <= self.clock():
                raise StripeError(400, "This Checkout Session is past its expires_at.")
            if action in ("bank_succeeds", "bank_fails") and (
                status != "complete" or intent is None or intent["status"] != "processing"
            ):
                raise StripeError(400, "No bank payment is pending for this Checkout Session.")
            if action == "pay":
                intent = self._intent_for(session)
                charge = self._charge(intent, session, "succeeded", "card", email)
                intent.update(
                    status="succeeded", amount_received=intent["amount"], last_payment_error=None
                )
                self._complete(session, email)
                session["payment_status"] = "paid"
                return [
                    self._new_event("charge.succeeded", charge),
                    self._new_event("payment_intent.succeeded", intent),
                    self._new_event("checkout.session.completed", session),
                ]
            if action == "pay_later":
                intent = self._intent_for(session)
                charge = self._charge(intent, session, "pending", "customer_balance", email)
                intent.update(status="processing", last_payment_error=None)
                self._complete(session, email)
                return [
                    self._new_event("charge.pending", charge),
                    self._new_event("payment_intent.processing", intent),
                    self._new_event("checkout.session.completed", session),
                ]
            if action == "bank_succeeds":
                assert intent is not None
                charge = self.charges[intent["latest_charge"]]
                charge.update(
                    status="succeeded", paid=True, captured=True, amount_captured=charge["amount"]
                )
                intent.update(status="succeeded", amount_received=intent["amount"])
                session["payment_status"] = "paid"
                return [
                    self._new_event("charge.succeeded", charge),
                    self._new_event("payment_intent.succeeded", intent),
                    self._new_event("checkout.session.async_payment_succeeded", session),
                ]
            if action == "bank_fails":
                assert intent is not None
                charge = self.charges[intent["latest_charge"]]
                charge.update(
                    status="failed",
                    failure_code="payment_method_provider_decline",
                    failure_message="The bank payment failed.",
                )
                intent.update(
                    status="requires_payment_method",
                    last_payment_error=objects.payment_error(charge["id"], bank=True),
                )
                return [
                    self._new_event("charge.failed", charge),
                    self._new_event("payment_intent.payment_failed", intent),
                    self._new_event("checkout.session.async_payment_failed", session),
                ]
            if action == "decline":
                intent = self._intent_for(session)
                charge = self._charge(intent, session, "failed", "card", email)
                intent.update(
                    status="requires_payment_method",
                    last_payment_error=objects.payment_error(charge["id"]),
                )
                return [
                    self._new_event("charge.failed", charge),
                    self._new_event("payment_intent.payment_failed", intent),
                ]
            if action == "expire":
                return self._expire(session)
        raise ValueError(f"unknown action {action!r}")

    def _expire(
        self, session: dict[str, Any], origin: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        session["status"] = "expired"
        session["url"] = None
        intent = self.payment_intents.get(session["payment_intent"] or "")
        if intent and intent["status"] == "requires_payment_method":
            intent.update(
                status="canceled", canceled_at=int(self.clock()), cancellation_reason="automatic"
            )
        return [self._new_event("checkout.session.expired", session, origin)]

    def _intent_for(self, session: dict[str, Any]) -> dict[str, Any]:
        if session["payment_intent"]:
            return self.payment_intents[session["payment_intent"]]
        pi_data = self._session_pi_data.get(session["id"], {})
        intent = objects.payment_intent(session, pi_data, int(self.clock()))
        self.payment_intents[intent["id"]] = intent
        session["payment_intent"] = intent["id"]
        return intent

    def _payer_email(self, session: Mapping[str, Any], typed: str | None) -> str:
        """The email the customer pays with: typed on the page, the customer's, the
        session's ``customer_email``, or a placeholder."""
        customer = self.customers.get(session["customer"] or "") or {}
        return typed or customer.get("email") or session["customer_email"] or objects.FALLBACK_EMAIL

    def _charge(
        self,
        intent: dict[str, Any],
        session: dict[str, Any],
        status: str,
        method: str,
        email: str | None,
    ) -> dict[str, Any]:
        charge = objects.charge(
            intent,
            status=status,
            method=method,
            email=self._payer_email(session, email),
            now=int(self.clock()),
        )
        self.charges[charge["id"]] = charge
        intent["latest_charge"] = charge["id"]
        intent["payment_method"] = charge["payment_method"]
        return charge

    def _complete(self, session: dict[str, Any], email: str | None) -> None:
        customer = self.customers.get(session["customer"] or "") or {}
        session["status"] = "complete"
        session["url"] = None
        session["customer_details"] = objects.customer_details(
            self._payer_email(session, email), customer.get("name")
        )

    # What the API calls do (the caller holds the lock; each returns its events).

    def _create_session(
        self, values: dict[str, Any], host: str
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        objects.check_session_customer_params(values)
        customer = None
        if values.get("customer"):
            customer = self.customers.get(values["customer"])
            if customer is None or customer.get("deleted"):
                raise missing("customer", values["customer"], "customer", 400)
        session, items, products = objects.checkout_session(
            values, now=int(self.clock()), host=host, customer=customer
        )
        self.sessions[session["id"]] = session
        self._line_items[session["id"]] = items
        self._products.update((product["id"], product) for product in products)
        self._session_pi_data[session["id"]] = values.get("payment_intent_data", {})
        return session, []

    def _expire_session(
        self, session_id: str, origin: Mapping[str, Any]
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        session = self._session_or_404(session_id)
        if session["status"] != "open":
            raise StripeError(
                400,
                'Only Checkout Sessions with a status in ["open"] can be expired. '
                f'This Checkout Session has a status of "{session["status"]}".',
                code="checkout_session_not_open",
            )
        return session, self._expire(session, origin)

    def _create_refund(
        self, values: dict[str, Any], origin: Mapping[str, Any]
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        intent_id, charge_id = values.get("payment_intent"), values.get("charge")
        if not intent_id and not charge_id:
            raise StripeError(
                400,
                "One of the following params should be provided for this request: "
                "payment_intent or charge.",
                code="parameter_missing",
            )
        if intent_id:
            intent = self.payment_intents.get(intent_id)
            if intent is None:
                raise missing("payment_intent", intent_id, "payment_intent", 400)
            if intent["status"] != "succeeded":
                raise StripeError(
                    400,
                    f"This PaymentIntent ({intent_id}) does not have a successful charge to "
                    "refund.",
                    code="charge_not_refundable",
                    param="payment_intent",
                )
            charge_id = charge_id or intent["latest_charge"]
        charge = self.charges.get(charge_id or "")
        if charge is None:
            raise missing("charge", str(charge_id), "charge", 400)
        if intent_id and charge["payment_intent"] != intent_id:
            raise StripeError(
                400, "The charge does not belong to this PaymentIntent.", param="charge"
            )
        if charge["status"] != "succeeded":
            raise StripeError(
                400,
                f"Charge {charge['id']} has not succeeded.",
                code="charge_not_refundable",
                param="charge",
            )
        if charge["disputed"] and not self._refundable_despite_disputes(charge["id"]):
            raise StripeError(
                400,
                f"Charge {charge['id']} has been charged back; cannot issue a refund.",
                code="charge_disputed",
            )
        remaining = charge["amount"] - charge["amount_refunded"]
        if remaining <= 0:
            raise StripeError(
                400,
                f"Charge {charge['id']} has already been refunded.",
                code="charge_already_refunded",
            )
        amount = values.get("amount", remaining)
        if amount < 1:
            raise StripeError(
                400, "Amount must be at least 1.", code="parameter_invalid_integer", param="amount"
            )
        if amount > remaining:
            raise StripeError(
                400,
                f"Refund amount ({objects.money(amount, charge['currency'])}) is greater than "
                f"unrefunded amount on charge ({objects.money(remaining, charge['currency'])})",
                code="amount_too_large",
                param="amount",
            )
        refund = objects.refund(values, charge, amount, int(self.clock()))
        self.refunds[refund["id"]] = refund
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] >= charge["amount"]
        return refund, [
            self._new_event("refund.created", refund, origin),
            self._new_event("charge.refunded", charge, origin),
        ]

    def _create_customer(
        self, values: dict[str, Any], origin: Mapping[str, Any]
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        customer = objects.customer(values, int(self.clock()))
        self.customers[customer["id"]] = customer
        return customer, [self._new_event("customer.created", customer, origin)]

    def _update_customer(
        self, customer_id: str, values: dict[str, Any], origin: Mapping[str, Any]
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        customer = self._customer_or_404(customer_id)
        changed = clone(customer)
        previous = objects.update_customer(changed, values)
        self.customers[customer_id] = changed
        if not previous:
            return changed, []
        return changed, [
            self._new_event("customer.updated", changed, origin, previous_attributes=previous)
        ]

    def _delete_customer(
        self, customer_id: str, origin: Mapping[str, Any]
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Stripe forgets the customer's details; what is left answers ``deleted: true``."""
        customer = self._customer_or_404(customer_id)
        deleted = {"id": customer_id, "object": "customer", "deleted": True}
        self.customers[customer_id] = deleted
        return deleted, [self._new_event("customer.deleted", customer, origin)]

    # Events and their delivery.

    def _new_event(
        self,
        type: str,
        obj: Mapping[str, Any],
        origin: Mapping[str, Any] | None = None,
        *,
        queue: bool = True,
        previous_attributes: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        event = objects.event(
            type,
            obj,
            api_version=self.api_version,
            now=int(self.clock()),
            origin=origin,
            previous_attributes=previous_attributes,
        )
        with self._lock:
            self.events.append(event)
            self._payloads[event["id"]] = objects.dump(event)
            if queue and ("*" in self.enabled_events or type in self.enabled_events):
                self.pending.append(event["id"])
        return event

    def signed_event(
        self, type: str, obj: Mapping[str, Any], *, timestamp: int | None = None
    ) -> tuple[bytes, str]:
        """Build and sign an event (recorded, not delivered): ``(payload, Stripe-Signature)``.
        Deliver it later with :meth:`deliver` (its id is in the payload)."""
        event = self._new_event(type, dict(obj), queue=False)
        payload = self._payloads[event["id"]]
        return payload, sign(payload, self._secret(), timestamp)

    def deliver(self, event_id: str) -> Delivery:
        """POST one event (same id, same body) to the webhook URL, freshly signed. A failure
        (no answer, no URL or secret configured) is recorded in the Delivery, never raised."""
        with self._lock:
            payload = self._payloads[event_id]
            if event_id in self.pending:
                self.pending.remove(event_id)
        url = self.webhook_url or ""
        signature = ""
        status: int | None = None
        error: str | None = None
        try:
            signature = sign(payload, self._secret())
            headers = {
                "Content-Type": "application/json; charset=utf-8",
                "Stripe-Signature": signature,
                "User-Agent": USER_AGENT,
                "Accept": "*/*; q=0.5, application/xml",
                "Cache-Control": "no-cache",
            }
            if not url and self.webhook_transport is None:
                raise RuntimeError("no webhook_url configured")
            transport = self.webhook_transport or http_transport(self.webhook_timeout)
            status = transport(url, payload, headers)
        except Exception as exc:  # a failed delivery is recorded, never raised
            error = f"{type(exc).__name__}: {exc}"
        delivery = Delivery(
            event_id=event_id,
            type=json.loads(payload)["type"],
            url=url,
            payload=payload,
            signature=signature,
            status=status,
            error=error,
            delivered_at=time.time(),
        )
        with self._lock:
            self.deliveries.append(delivery)
        if self.on_delivery is not None:
            self.on_delivery(delivery)
        return delivery

    redeliver = deliver

    def deliver_pending(self, order: Iterable[str] | None = None) -> list[Delivery]:
        """Deliver queued events, oldest first or in the given order of ids."""
        with self._lock:
            ids = list(order) if order is not None else list(self.pending)
        return [self.deliver(event_id) for event_id in ids]

    def deliver_concurrently(self, event_ids: Iterable[str]) -> list[Delivery]:
        """Deliver several events at the same moment, one thread each (results in order)."""
        ids = list(event_ids)
        barrier = threading.Barrier(len(ids))
        results: list[Delivery | None] = [None] * len(ids)

        def run(index: int, event_id: str) -> None:
            barrier.wait(timeout=10)
            results[index] = self.deliver(event_id)

        threads = [
            threading.Thread(target=run, args=(i, e), name=f"fake-stripe-deliver-{i}")
            for i, e in enumerate(ids)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=self.webhook_timeout + 15)
        return [r for r in results if r is not None]

    def wait_for_deliveries(self, timeout: float = 5.0) -> list[Delivery]:
        """Wait until every event that API calls (and the hosted page) caused has been
        attempted, and return those attempts (the ones made since the previous call).

        Webhooks caused by an API call are sent after its answer, from a background thread;
        call this after the step to assert on their effect. Raises ``TimeoutError`` if the
        receiver takes longer than ``timeout`` seconds."""
        return self._queue.wait(timeout)

    def _secret(self) -> str:
        if not self.webhook_secret:
            raise RuntimeError("FakeStripe has no webhook_secret")
        return self.webhook_secret

    def _take_deliverable(self, events: Iterable[Mapping[str, Any]]) -> list[str]:
        """The ids of ``events`` to deliver now (enabled types, ``auto_deliver`` on), taken
        off ``pending`` so that nothing delivers them twice."""
        with self._lock:
            if not self.auto_deliver:
                return []
            ids = [e["id"] for e in events if e["id"] in self.pending]
            self.pending[:] = [event_id for event_id in self.pending if event_id not in ids]
            return ids

    def _deliver_now(self, events: Iterable[Mapping[str, Any]]) -> list[Delivery]:
        """Deliver in the calling thread (outside the lock: the receiver may call the API)."""
        return [self.deliver(event_id) for event_id in self._take_deliverable(events)]

    def _hold(self, events: Iterable[Mapping[str, Any]]) -> Batch | None:
        """Queue events for the background thread, to be released once the answer is out."""
        ids = self._take_deliverable(events)
        return self._queue.hold(ids) if ids else None

    def _release_batch(self, batch: Batch) -> None:
        self._queue.release(batch)
