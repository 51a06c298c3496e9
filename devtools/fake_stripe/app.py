"""A fake Stripe: the v1 API calls the shop makes, a hosted checkout page, and webhooks.

:class:`FakeStripe` is a WSGI application holding all state in memory. It answers in Stripe's
wire format (form-encoded requests, JSON answers, Stripe-shaped errors, idempotency keys) so
the real ``stripe`` library works against it unmodified. Run it with
:class:`devtools.fake_stripe.server.FakeStripeServer` (tests) or ``python -m
devtools.fake_stripe`` (local demo). Development only: nothing here touches real money.
"""

from __future__ import annotations

import copy
import html
import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from stripe._api_version import _ApiVersion
from stripe.params import (
    ChargeRetrieveParams,
    EventRetrieveParams,
    PaymentIntentRetrieveParams,
    RefundCreateParams,
    RefundRetrieveParams,
)
from stripe.params.checkout import (
    SessionCreateParams,
    SessionExpireParams,
    SessionListLineItemsParams,
    SessionRetrieveParams,
)
from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from .params import ParamError, parse_form, validate
from .webhooks import USER_AGENT, Delivery, Transport, http_transport, sign

API_VERSION = _ApiVersion.CURRENT

#: Event types delivered unless ``enabled_events`` says otherwise (what the shop listens to).
DEFAULT_ENABLED_EVENTS = frozenset(
    {
        "checkout.session.completed",
        "checkout.session.async_payment_succeeded",
        "checkout.session.async_payment_failed",
        "checkout.session.expired",
        "charge.refunded",
        "charge.dispute.created",
        "payment_intent.payment_failed",
    }
)

MIN_EXPIRY_SECONDS = 30 * 60
MAX_EXPIRY_SECONDS = 24 * 60 * 60
IDEMPOTENCY_KEY_LIFETIME = 24 * 60 * 60
ZERO_DECIMAL = frozenset(
    "bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split()  # noqa: SIM905
)
MINIMUM_CHARGE = {"usd": 50, "eur": 50, "gbp": 30, "cad": 50, "aud": 50, "chf": 50}
SYMBOLS = {"gbp": "£", "usd": "$", "eur": "€"}
_URL = re.compile(r"^https?://[^\s/]+", re.IGNORECASE)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class StripeError(Exception):
    """An answer in Stripe's error shape: ``{"error": {type, code, message, param}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        extra: Mapping[str, Any] | None = None,
        save: bool = True,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"type": type, "message": message}
        if code:
            self.body["code"] = code
            self.body["doc_url"] = f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}"
        if param:
            self.body["param"] = param
        self.body.update(extra or {})
        # Like Stripe, keep no idempotent result for a request that never started executing.
        self.save = save


def _missing(kind: str, object_id: str, param: str = "id") -> StripeError:
    return StripeError(404, f"No such {kind}: '{object_id}'", code="resource_missing", param=param)


@dataclass
class _Fault:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class _SavedResponse:
    method: str
    path: str
    fingerprint: str
    status: int
    body: bytes
    created: float


@dataclass
class FakeStripe:
    """All of the fake's state, and the WSGI application serving it.

    ``webhook_url``/``webhook_secret`` say where events go (change them at any time);
    ``webhook_transport`` replaces the HTTP POST (e.g. to call a Flask test client);
    ``auto_deliver=False`` queues events until :meth:`deliver` / :meth:`deliver_pending`;
    ``clock`` is the fake's idea of "now" (object timestamps, ``expires_at``).
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

    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    payment_intents: dict[str, dict[str, Any]] = field(default_factory=dict)
    charges: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    disputes: dict[str, dict[str, Any]] = field(default_factory=dict)
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
    _idempotency: dict[tuple[str, str], _SavedResponse] = field(default_factory=dict)
    _in_flight: set[tuple[str, str]] = field(default_factory=set)
    _faults: list[_Fault] = field(default_factory=list)
    _hangs: list[float] = field(default_factory=list)
    _release: threading.Event = field(default_factory=threading.Event)
    _lock: threading.RLock = field(default_factory=threading.RLock)

    def __post_init__(self) -> None:
        self.enabled_events = frozenset(self.enabled_events)
        self._routes = Map(
            [
                Rule("/v1/checkout/sessions", methods=["POST"], endpoint="create_session"),
                Rule("/v1/checkout/sessions/<sid>", methods=["GET"], endpoint="get_session"),
                Rule(
                    "/v1/checkout/sessions/<sid>/expire",
                    methods=["POST"],
                    endpoint="expire_session",
                ),
                Rule(
                    "/v1/checkout/sessions/<sid>/line_items",
                    methods=["GET"],
                    endpoint="session_line_items",
                ),
                Rule("/v1/refunds", methods=["POST"], endpoint="create_refund"),
                Rule("/v1/refunds/<oid>", methods=["GET"], endpoint="get_refund"),
                Rule("/v1/payment_intents/<oid>", methods=["GET"], endpoint="get_payment_intent"),
                Rule("/v1/charges/<oid>", methods=["GET"], endpoint="get_charge"),
                Rule("/v1/events/<oid>", methods=["GET"], endpoint="get_event"),
                Rule("/", methods=["GET"], endpoint="index"),
                Rule("/pay/<sid>", methods=["GET"], endpoint="page"),
                Rule("/pay/<sid>/<action>", methods=["POST"], endpoint="page_action"),
            ]
        )

    # ------------------------------------------------------------------ test hooks

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
            self._faults.extend(_Fault(status, body, headers) for _ in range(count))

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

    def session(self, session_id: str) -> dict[str, Any]:
        """A copy of a session as the API would return it."""
        with self._lock:
            return _copy(self._session_or_404(session_id))

    def page_url(self, session_id: str) -> str:
        return self.session(session_id)["url"] or f"/pay/{session_id}"

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
            deliveries += self.expire(sid)
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
            now = int(self.clock())
            dispute = {
                "id": _new_id("dp"),
                "object": "dispute",
                "amount": amount if amount is not None else charge["amount"],
                "balance_transactions": [],
                "charge": charge["id"],
                "created": now,
                "currency": charge["currency"],
                "evidence": {},
                "evidence_details": {
                    "due_by": now + 7 * 24 * 3600,
                    "has_evidence": False,
                    "past_due": False,
                    "submission_count": 0,
                },
                "is_charge_refundable": False,
                "livemode": False,
                "metadata": {},
                "payment_intent": payment_intent_id,
                "reason": reason,
                "status": "needs_response",
            }
            self.disputes[dispute["id"]] = dispute
            charge["disputed"] = True
            event = self._new_event("charge.dispute.created", dispute)
        self._after([event])
        return _copy(dispute)

    def signed_event(
        self, type: str, obj: Mapping[str, Any], *, timestamp: int | None = None
    ) -> tuple[bytes, str]:
        """Build and sign an event (recorded, not delivered): ``(payload, Stripe-Signature)``.
        Deliver it later with :meth:`deliver` (its id is in the payload)."""
        with self._lock:
            event = self._new_event(type, dict(obj), queue=False)
        payload = self._payloads[event["id"]]
        return payload, sign(payload, self._secret(), timestamp)

    def event(self, event_id: str) -> dict[str, Any]:
        return json.loads(self._payloads[event_id])

    def events_of_type(self, type: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == type]

    def deliver(self, event_id: str) -> Delivery:
        """POST one event (same id, same body) to the webhook URL, freshly signed."""
        with self._lock:
            payload = self._payloads[event_id]
            if event_id in self.pending:
                self.pending.remove(event_id)
        url = self.webhook_url or ""
        signature = sign(payload, self._secret())
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Stripe-Signature": signature,
            "User-Agent": USER_AGENT,
            "Accept": "*/*; q=0.5, application/xml",
            "Cache-Control": "no-cache",
        }
        transport = self.webhook_transport or http_transport(self.webhook_timeout)
        status: int | None = None
        error: str | None = None
        try:
            if not url and self.webhook_transport is None:
                raise RuntimeError("no webhook_url configured")
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

    def _secret(self) -> str:
        if not self.webhook_secret:
            raise RuntimeError("FakeStripe has no webhook_secret")
        return self.webhook_secret

    # ------------------------------------------------------------------ WSGI

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        try:
            response = self._dispatch(request)
        except HTTPException as exc:
            response = exc.get_response(environ)  # type: ignore[assignment]
        return response(environ, start_response)

    def _dispatch(self, request: Request) -> Response:
        if request.path.startswith("/v1/"):
            return self._api(request)
        adapter = self._routes.bind_to_environ(request.environ)
        endpoint, args = adapter.match()
        if endpoint == "index":
            return self._index_page()
        if endpoint == "page":
            return self._page(args["sid"], request)
        if endpoint == "page_action":
            return self._page_action(args["sid"], args["action"], request)
        raise NotFound()

    def _api(self, request: Request) -> Response:
        request_id = _new_id("req", test=False)
        response = self._api_answer(request, request_id)
        response.headers["Request-Id"] = request_id
        response.headers["Stripe-Version"] = request.headers.get("Stripe-Version", self.api_version)
        with self._lock:
            self.requests.append((request.method, request.path, response.status_code))
        return response

    def _api_answer(self, request: Request, request_id: str) -> Response:
        with self._lock:
            hang = self._hangs.pop(0) if self._hangs else 0.0
        if hang:
            self._release.wait(hang)
        with self._lock:
            fault = self._faults.pop(0) if self._faults else None
        if fault:
            response = _json({"error": fault.body}, fault.status)
            response.headers.update(fault.headers)
            return response
        try:
            api_key = self._authenticate(request)
        except StripeError as exc:
            return _json({"error": exc.body}, exc.status)

        key = request.headers.get("Idempotency-Key") if request.method == "POST" else None
        try:
            params = parse_form(
                request.form.items(multi=True)
                if request.method == "POST"
                else request.args.items(multi=True)
            )
        except ParamError as exc:
            return _json({"error": _param_error(exc).body}, 400)
        fingerprint = json.dumps(params, sort_keys=True)
        scope = (api_key, key or "")
        if key:
            replay = self._idempotent_replay(scope, request, fingerprint)
            if replay is not None:
                return replay
        events: list[dict[str, Any]] = []
        try:
            save = True
            try:
                status, body = self._route_api(request, params, events, request_id, key)
            except ParamError as exc:
                status, body, save = 400, {"error": _param_error(exc).body}, False
            except StripeError as exc:
                status, body, save = exc.status, {"error": exc.body}, exc.save
            if key and save:
                self._save(scope, request, fingerprint, status, body)
        finally:
            if key:
                with self._lock:
                    self._in_flight.discard(scope)
        if status == 200:
            self._after(events)
        return _json(body, status)

    def _authenticate(self, request: Request) -> str:
        header = request.headers.get("Authorization", "")
        api_key = ""
        if header.startswith("Bearer "):
            api_key = header[len("Bearer ") :].strip()
        elif request.authorization and request.authorization.type == "basic":
            api_key = request.authorization.username or ""
        if not api_key:
            raise StripeError(
                401,
                "You did not provide an API key. You need to provide your API key in the "
                "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
                "YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for details.",
            )
        if not api_key.startswith("sk_test_") or len(api_key) <= len("sk_test_"):
            shown = api_key[:8] + "*" * max(0, len(api_key) - 12) + api_key[-4:]
            raise StripeError(401, f"Invalid API Key provided: {shown}", code="api_key_invalid")
        return api_key

    def _idempotent_replay(
        self, scope: tuple[str, str], request: Request, fingerprint: str
    ) -> Response | None:
        now = self.clock()
        with self._lock:
            saved = self._idempotency.get(scope)
            if saved and now - saved.created > IDEMPOTENCY_KEY_LIFETIME:
                del self._idempotency[scope]
                saved = None
            if saved is None:
                if scope in self._in_flight:
                    return _json(
                        {
                            "error": {
                                "type": "idempotency_error",
                                "code": "idempotency_key_in_use",
                                "message": "There is currently another in-progress request "
                                "using this Idempotent Key (that probably means you submitted "
                                "twice, and the other request is still going through): "
                                f"{scope[1]}. Please try again later.",
                            }
                        },
                        409,
                    )
                self._in_flight.add(scope)
                return None
        key = scope[1]
        if (saved.method, saved.path) != (request.method, request.path):
            message = (
                "Keys for idempotent requests can only be used for the same endpoint they "
                f"were first used for ('{request.method} {request.path}' vs "
                f"'{saved.method} {saved.path}'). Try using a key other than '{key}' if you "
                "meant to execute a different request."
            )
        elif saved.fingerprint != fingerprint:
            message = (
                "Keys for idempotent requests can only be used with the same parameters they "
                f"were first used with. Try using a key other than '{key}' if you meant to "
                "execute a different request."
            )
        else:
            response = Response(saved.body, status=saved.status, mimetype="application/json")
            response.headers["Idempotent-Replayed"] = "true"
            response.headers["Idempotency-Key"] = key
            return response
        return _json({"error": {"type": "idempotency_error", "message": message}}, 400)

    def _save(
        self,
        scope: tuple[str, str],
        request: Request,
        fingerprint: str,
        status: int,
        body: dict[str, Any],
    ) -> None:
        with self._lock:
            self._idempotency[scope] = _SavedResponse(
                request.method, request.path, fingerprint, status, _dump(body), self.clock()
            )

    def _route_api(
        self,
        request: Request,
        params: dict[str, Any],
        events: list[dict[str, Any]],
        request_id: str,
        key: str | None,
    ) -> tuple[int, dict[str, Any]]:
        adapter = self._routes.bind_to_environ(request.environ)
        try:
            endpoint, args = adapter.match()
        except HTTPException:
            raise StripeError(
                404,
                f"Unrecognized request URL ({request.method}: {request.path}). Please see "
                "https://stripe.com/docs or we can help at https://support.stripe.com/.",
            ) from None
        origin = {"id": request_id, "idempotency_key": key}
        with self._lock:
            if endpoint == "create_session":
                values = validate(SessionCreateParams, params)
                session = self._create_session(values, request.host_url.rstrip("/"))
                return 200, self._expand_session(session, values.get("expand", []))
            if endpoint == "get_session":
                values = validate(SessionRetrieveParams, params)
                session = self._session_or_404(args["sid"])
                return 200, self._expand_session(session, values.get("expand", []))
            if endpoint == "expire_session":
                values = validate(SessionExpireParams, params)
                session = self._session_or_404(args["sid"])
                if session["status"] != "open":
                    raise StripeError(
                        400,
                        'Only Checkout Sessions with a status in ["open"] can be expired. '
                        f'This Checkout Session has a status of "{session["status"]}".',
                        code="checkout_session_not_open",
                    )
                events += self._do_expire(session, origin)
                return 200, self._expand_session(session, values.get("expand", []))
            if endpoint == "session_line_items":
                validate(SessionListLineItemsParams, params)
                session = self._session_or_404(args["sid"])
                return 200, self._line_item_list(session["id"])
            if endpoint == "create_refund":
                values = validate(RefundCreateParams, params)
                refund = self._create_refund(values, events, origin)
                return 200, _copy(refund)
            lookups: dict[str, tuple[Any, dict[str, dict[str, Any]], str]] = {
                "get_refund": (RefundRetrieveParams, self.refunds, "refund"),
                "get_payment_intent": (
                    PaymentIntentRetrieveParams,
                    self.payment_intents,
                    "payment_intent",
                ),
                "get_charge": (ChargeRetrieveParams, self.charges, "charge"),
            }
            if endpoint in lookups:
                schema, table, kind = lookups[endpoint]
                validate(schema, params)
                if args["oid"] not in table:
                    raise _missing(kind, args["oid"])
                return 200, _copy(table[args["oid"]])
            if endpoint == "get_event":
                validate(EventRetrieveParams, params)
                if args["oid"] not in self._payloads:
                    raise _missing("event", args["oid"])
                return 200, json.loads(self._payloads[args["oid"]])
        raise StripeError(404, f"Unrecognized request URL ({request.method}: {request.path}).")

    # ------------------------------------------------------------------ sessions

    def _session_or_404(self, session_id: str) -> dict[str, Any]:
        session = self.sessions.get(session_id)
        if session is None:
            raise _missing("checkout.session", session_id)
        return session

    def _create_session(self, values: dict[str, Any], host: str) -> dict[str, Any]:
        now = int(self.clock())
        mode = values.get("mode")
        if mode is None:
            raise StripeError(
                400, "Missing required param: mode.", code="parameter_missing", param="mode"
            )
        if mode != "payment":
            raise StripeError(
                400,
                f"The fake Stripe server supports only mode=payment, not mode={mode}.",
                param="mode",
            )
        ui_mode = values.get("ui_mode", "hosted_page")
        if ui_mode != "hosted_page":
            raise StripeError(
                400,
                f"The fake Stripe server supports only hosted Checkout, not {ui_mode}.",
                param="ui_mode",
            )
        if values.get("customer"):
            raise _missing("customer", values["customer"], "customer")
        for name in ("success_url", "cancel_url"):
            url = values.get(name)
            if url is not None and not _URL.match(url):
                raise StripeError(400, "Not a valid URL", code="url_invalid", param=name)
        email = values.get("customer_email")
        if email is not None and not _EMAIL.match(email):
            raise StripeError(
                400,
                f"Invalid email address: {email}",
                code="email_invalid",
                param="customer_email",
            )
        _check_metadata(values.get("metadata", {}), "metadata")
        pi_data = values.get("payment_intent_data", {})
        _check_metadata(pi_data.get("metadata", {}), "payment_intent_data[metadata]")
        expires_at = values.get("expires_at", now + MAX_EXPIRY_SECONDS)
        if expires_at - now < MIN_EXPIRY_SECONDS:
            raise StripeError(
                400,
                "The `expires_at` timestamp must be at least 30 minutes from Checkout Session "
                "creation.",
                code="parameter_invalid_integer",
                param="expires_at",
            )
        if expires_at - now > MAX_EXPIRY_SECONDS:
            raise StripeError(
                400,
                "The `expires_at` timestamp must be less than 24 hours from Checkout Session "
                "creation.",
                code="parameter_invalid_integer",
                param="expires_at",
            )

        line_params = values.get("line_items")
        if not line_params:
            raise StripeError(
                400,
                "Missing required param: line_items.",
                code="parameter_missing",
                param="line_items",
            )
        session_id = _new_id("cs")
        items: list[dict[str, Any]] = []
        currency: str | None = None
        for index, line in enumerate(line_params):
            where = f"line_items[{index}]"
            if line.get("price"):
                raise _missing("price", line["price"], f"{where}[price]")
            price_data = line.get("price_data")
            if price_data is None:
                raise StripeError(
                    400,
                    f"You must specify either `price` or `price_data` in `{where}`.",
                    param=where,
                )
            pwhere = f"{where}[price_data]"
            if price_data.get("product"):
                raise _missing("product", price_data["product"], f"{pwhere}[product]")
            product_data = price_data.get("product_data")
            if product_data is None:
                raise StripeError(
                    400,
                    f"You must specify either `product` or `product_data` in `{pwhere}`.",
                    param=pwhere,
                )
            item_currency = price_data["currency"].lower()
            if not re.fullmatch(r"[a-z]{3}", item_currency):
                raise StripeError(
                    400,
                    f"Invalid currency: {price_data['currency']}",
                    code="parameter_invalid_string",
                    param=f"{pwhere}[currency]",
                )
            if currency is not None and item_currency != currency:
                raise StripeError(
                    400,
                    "All line items must have the same currency.",
                    param=f"{pwhere}[currency]",
                )
            currency = item_currency
            has_int = "unit_amount" in price_data
            has_decimal = "unit_amount_decimal" in price_data
            if has_int == has_decimal:
                raise StripeError(
                    400,
                    "You must specify exactly one of `unit_amount` or `unit_amount_decimal` "
                    f"in `{pwhere}`.",
                    param=f"{pwhere}[unit_amount]",
                )
            unit = (
                Decimal(price_data["unit_amount"]) if has_int else price_data["unit_amount_decimal"]
            )
            if unit < 0:
                raise StripeError(
                    400,
                    "This value must be greater than or equal to 0.",
                    param=f"{pwhere}[unit_amount]",
                )
            quantity = line.get("quantity")
            if quantity is None:
                raise StripeError(
                    400,
                    f"Quantity is required. Add `quantity` to `{where}`",
                    code="parameter_missing",
                    param=f"{where}[quantity]",
                )
            if quantity < 1:
                raise StripeError(
                    400,
                    "This value must be greater than or equal to 1.",
                    param=f"{where}[quantity]",
                )
            _check_metadata(product_data.get("metadata", {}), f"{pwhere}[product_data][metadata]")
            product = {
                "id": _new_id("prod"),
                "object": "product",
                "active": True,
                "created": now,
                "description": product_data.get("description"),
                "images": product_data.get("images", []),
                "livemode": False,
                "metadata": product_data.get("metadata", {}),
                "name": product_data["name"],
                "tax_code": product_data.get("tax_code"),
                "type": "service",
                "unit_label": product_data.get("unit_label"),
                "updated": now,
                "url": None,
            }
            self._products[product["id"]] = product
            amount = int((unit * quantity).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
            items.append(
                {
                    "id": _new_id("li"),
                    "object": "item",
                    "amount_discount": 0,
                    "amount_subtotal": amount,
                    "amount_tax": 0,
                    "amount_total": amount,
                    "currency": item_currency,
                    "description": product["name"],
                    "metadata": line.get("metadata", {}),
                    "price": {
                        "id": _new_id("price"),
                        "object": "price",
                        "active": False,
                        "billing_scheme": "per_unit",
                        "created": now,
                        "currency": item_currency,
                        "custom_unit_amount": None,
                        "livemode": False,
                        "lookup_key": None,
                        "metadata": {},
                        "nickname": None,
                        "product": product["id"],
                        "recurring": None,
                        "tax_behavior": price_data.get("tax_behavior", "unspecified"),
                        "tiers_mode": None,
                        "transform_quantity": None,
                        "type": "one_time",
                        "unit_amount": int(unit) if unit == int(unit) else None,
                        "unit_amount_decimal": str(unit),
                    },
                    "quantity": quantity,
                }
            )
        assert currency is not None
        total = sum(item["amount_total"] for item in items)
        minimum = MINIMUM_CHARGE.get(currency)
        if minimum and total < minimum:
            raise StripeError(
                400,
                "The Checkout Session's total amount due must add up to at least "
                f"{_money(minimum, currency)}",
                code="amount_too_small",
                param="line_items",
            )
        methods = values.get("allowed_payment_method_types") or ["card"]
        session = {
            "id": session_id,
            "object": "checkout.session",
            "adaptive_pricing": None,
            "after_expiration": None,
            "allow_promotion_codes": values.get("allow_promotion_codes"),
            "allowed_payment_method_types": values.get("allowed_payment_method_types"),
            "amount_subtotal": total,
            "amount_total": total,
            "automatic_tax": {
                "enabled": False,
                "liability": None,
                "provider": None,
                "status": None,
            },
            "billing_address_collection": values.get("billing_address_collection"),
            "branding_settings": None,
            "cancel_url": values.get("cancel_url"),
            "client_reference_id": values.get("client_reference_id"),
            "client_secret": None,
            "collected_information": None,
            "consent": None,
            "consent_collection": None,
            "created": now,
            "currency": currency,
            "currency_conversion": None,
            "custom_fields": [],
            "custom_text": {
                "after_submit": None,
                "shipping_address": None,
                "submit": None,
                "terms_of_service_acceptance": None,
            },
            "customer": None,
            "customer_account": None,
            "customer_creation": values.get("customer_creation", "if_required"),
            "customer_details": None,
            "customer_email": email,
            "discounts": [],
            "excluded_payment_method_types": values.get("excluded_payment_method_types"),
            "expires_at": expires_at,
            "integration_identifier": values.get("integration_identifier"),
            "invoice": None,
            "invoice_creation": None,
            "livemode": False,
            "locale": values.get("locale"),
            "managed_payments": None,
            "metadata": values.get("metadata", {}),
            "mode": "payment",
            "name_collection": None,
            "optional_items": None,
            "origin_context": values.get("origin_context"),
            "payment_intent": None,
            "payment_link": None,
            "payment_method_collection": "if_required",
            "payment_method_configuration_details": None,
            "payment_method_options": {},
            "payment_method_types": methods,
            "payment_status": "unpaid",
            "permissions": None,
            "phone_number_collection": {"enabled": False},
            "presentment_details": None,
            "recovered_from": None,
            "saved_payment_method_options": None,
            "setup_intent": None,
            "shipping_address_collection": None,
            "shipping_cost": None,
            "shipping_options": [],
            "status": "open",
            "submit_type": values.get("submit_type"),
            "subscription": None,
            "success_url": values.get("success_url"),
            "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
            "ui_mode": "hosted_page",
            "url": f"{host}/pay/{session_id}",
            "wallet_options": None,
        }
        self.sessions[session_id] = session
        self._line_items[session_id] = items
        self._session_pi_data[session_id] = pi_data
        return session

    def _line_item_list(self, session_id: str) -> dict[str, Any]:
        return {
            "object": "list",
            "data": _copy(self._line_items[session_id]),
            "has_more": False,
            "url": f"/v1/checkout/sessions/{session_id}/line_items",
        }

    def _expand_session(self, session: dict[str, Any], expand: list[str]) -> dict[str, Any]:
        result = _copy(session)
        for path in expand:
            if path in ("line_items", "line_items.data.price.product"):
                result["line_items"] = self._line_item_list(session["id"])
                if path.endswith(".product"):
                    for item in result["line_items"]["data"]:
                        item["price"]["product"] = _copy(self._products[item["price"]["product"]])
            elif path in ("payment_intent", "payment_intent.latest_charge"):
                if session["payment_intent"]:
                    intent = _copy(self.payment_intents[session["payment_intent"]])
                    if path.endswith("latest_charge") and intent["latest_charge"]:
                        intent["latest_charge"] = _copy(self.charges[intent["latest_charge"]])
                    result["payment_intent"] = intent
            else:
                raise StripeError(
                    400,
                    f"This property cannot be expanded ({path}) by the fake Stripe server.",
                    param="expand",
                )
        return result

    def _do_expire(
        self, session: dict[str, Any], origin: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        session["status"] = "expired"
        session["url"] = None
        intent_id = session["payment_intent"]
        if intent_id and self.payment_intents[intent_id]["status"] == "requires_payment_method":
            intent = self.payment_intents[intent_id]
            intent["status"] = "canceled"
            intent["canceled_at"] = int(self.clock())
            intent["cancellation_reason"] = "automatic"
        return [self._new_event("checkout.session.expired", session, origin)]

    # ------------------------------------------------------------------ payments

    def _intent_for(self, session: dict[str, Any]) -> dict[str, Any]:
        if session["payment_intent"]:
            return self.payment_intents[session["payment_intent"]]
        pi_data = self._session_pi_data.get(session["id"], {})
        intent = {
            "id": _new_id("pi"),
            "object": "payment_intent",
            "amount": session["amount_total"],
            "amount_capturable": 0,
            "amount_details": {"tip": {}},
            "amount_received": 0,
            "application": None,
            "application_fee_amount": None,
            "automatic_payment_methods": None,
            "canceled_at": None,
            "cancellation_reason": None,
            "capture_method": pi_data.get("capture_method", "automatic"),
            "client_secret": None,
            "confirmation_method": "automatic",
            "created": int(self.clock()),
            "currency": session["currency"],
            "customer": None,
            "description": pi_data.get("description"),
            "last_payment_error": None,
            "latest_charge": None,
            "livemode": False,
            "metadata": dict(pi_data.get("metadata", {})),
            "next_action": None,
            "on_behalf_of": None,
            "payment_method": None,
            "payment_method_options": {},
            "payment_method_types": list(session["payment_method_types"]),
            "processing": None,
            "receipt_email": pi_data.get("receipt_email"),
            "review": None,
            "setup_future_usage": None,
            "shipping": None,
            "statement_descriptor": pi_data.get("statement_descriptor"),
            "statement_descriptor_suffix": pi_data.get("statement_descriptor_suffix"),
            "status": "requires_payment_method",
            "transfer_data": None,
            "transfer_group": None,
        }
        self.payment_intents[intent["id"]] = intent
        session["payment_intent"] = intent["id"]
        return intent

    def _charge(
        self, intent: dict[str, Any], session: dict[str, Any], status: str, method: str
    ) -> dict[str, Any]:
        email = session["customer_email"] or "customer@example.com"
        failed = status == "failed"
        charge = {
            "id": _new_id("ch"),
            "object": "charge",
            "amount": intent["amount"],
            "amount_captured": intent["amount"] if status == "succeeded" else 0,
            "amount_refunded": 0,
            "balance_transaction": None,
            "billing_details": {"address": None, "email": email, "name": None, "phone": None},
            "captured": status == "succeeded",
            "created": int(self.clock()),
            "currency": intent["currency"],
            "customer": None,
            "description": intent["description"],
            "disputed": False,
            "failure_code": "card_declined" if failed else None,
            "failure_message": "Your card was declined." if failed else None,
            "livemode": False,
            "metadata": dict(intent["metadata"]),
            "outcome": {
                "network_status": "declined_by_network" if failed else "approved_by_network",
                "reason": "generic_decline" if failed else None,
                "risk_level": "normal",
                "seller_message": "The bank did not return any further details with this decline."
                if failed
                else "Payment complete.",
                "type": "issuer_declined" if failed else "authorized",
            },
            "paid": status == "succeeded",
            "payment_intent": intent["id"],
            "payment_method": _new_id("pm"),
            "payment_method_details": {"type": method},
            "receipt_email": intent["receipt_email"],
            "receipt_url": None,
            "refunded": False,
            "status": status,
        }
        self.charges[charge["id"]] = charge
        intent["latest_charge"] = charge["id"]
        intent["payment_method"] = charge["payment_method"]
        return charge

    def _complete(self, session: dict[str, Any], email: str | None) -> None:
        session["status"] = "complete"
        session["url"] = None
        session["customer_details"] = {
            "address": None,
            "business_name": None,
            "email": email or session["customer_email"] or "customer@example.com",
            "individual_name": None,
            "name": None,
            "phone": None,
            "tax_exempt": "none",
            "tax_ids": [],
        }

    def _act(self, session_id: str, action: str, email: str | None = None) -> list[Delivery]:
        with self._lock:
            session = self._session_or_404(session_id)
            events = self._apply(session, action, email)
        return self._after(events)

    def _apply(
        self, session: dict[str, Any], action: str, email: str | None
    ) -> list[dict[str, Any]]:
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
        events: list[dict[str, Any]] = []
        if action == "pay":
            intent = self._intent_for(session)
            charge = self._charge(intent, session, "succeeded", "card")
            intent.update(
                status="succeeded", amount_received=intent["amount"], last_payment_error=None
            )
            self._complete(session, email)
            session["payment_status"] = "paid"
            events += [
                self._new_event("charge.succeeded", charge),
                self._new_event("payment_intent.succeeded", intent),
                self._new_event("checkout.session.completed", session),
            ]
        elif action == "pay_later":
            intent = self._intent_for(session)
            charge = self._charge(intent, session, "pending", "customer_balance")
            intent.update(status="processing", last_payment_error=None)
            self._complete(session, email)
            events += [
                self._new_event("charge.pending", charge),
                self._new_event("payment_intent.processing", intent),
                self._new_event("checkout.session.completed", session),
            ]
        elif action == "bank_succeeds":
            assert intent is not None
            charge = self.charges[intent["latest_charge"]]
            charge.update(
                status="succeeded", paid=True, captured=True, amount_captured=charge["amount"]
            )
            intent.update(status="succeeded", amount_received=intent["amount"])
            session["payment_status"] = "paid"
            events += [
                self._new_event("charge.succeeded", charge),
                self._new_event("payment_intent.succeeded", intent),
                self._new_event("checkout.session.async_payment_succeeded", session),
            ]
        elif action == "bank_fails":
            assert intent is not None
            charge = self.charges[intent["latest_charge"]]
            charge.update(
                status="failed",
                failure_code="payment_method_provider_decline",
                failure_message="The bank payment failed.",
            )
            intent.update(
                status="requires_payment_method",
                last_payment_error=_payment_error(charge["id"], bank=True),
            )
            events += [
                self._new_event("charge.failed", charge),
                self._new_event("payment_intent.payment_failed", intent),
                self._new_event("checkout.session.async_payment_failed", session),
            ]
        elif action == "decline":
            intent = self._intent_for(session)
            charge = self._charge(intent, session, "failed", "card")
            intent.update(
                status="requires_payment_method", last_payment_error=_payment_error(charge["id"])
            )
            events += [
                self._new_event("charge.failed", charge),
                self._new_event("payment_intent.payment_failed", intent),
            ]
        elif action == "expire":
            events += self._do_expire(session)
        else:
            raise NotFound()
        return events

    def _create_refund(
        self, values: dict[str, Any], events: list[dict[str, Any]], origin: dict[str, Any]
    ) -> dict[str, Any]:
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
                raise _missing("payment_intent", intent_id, "payment_intent")
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
            raise _missing("charge", str(charge_id), "charge")
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
        if charge["disputed"]:
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
                f"Refund amount ({_money(amount, charge['currency'])}) is greater than "
                f"unrefunded amount on charge ({_money(remaining, charge['currency'])})",
                code="amount_too_large",
                param="amount",
            )
        reason = values.get("reason")
        if reason not in (None, "duplicate", "fraudulent", "requested_by_customer"):
            raise StripeError(
                400,
                "Invalid reason: must be one of duplicate, fraudulent, or requested_by_customer",
                param="reason",
            )
        refund = {
            "id": _new_id("re"),
            "object": "refund",
            "amount": amount,
            "balance_transaction": None,
            "charge": charge["id"],
            "created": int(self.clock()),
            "currency": charge["currency"],
            "destination_details": {"card": {"type": "refund"}, "type": "card"},
            "metadata": values.get("metadata", {}),
            "payment_intent": charge["payment_intent"],
            "reason": reason,
            "receipt_number": None,
            "source_transfer_reversal": None,
            "status": "succeeded",
            "transfer_reversal": None,
        }
        self.refunds[refund["id"]] = refund
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] >= charge["amount"]
        events += [
            self._new_event("refund.created", refund, origin),
            self._new_event("charge.refunded", charge, origin),
        ]
        return refund

    # ------------------------------------------------------------------ events

    def _new_event(
        self,
        type: str,
        obj: Mapping[str, Any],
        origin: Mapping[str, Any] | None = None,
        *,
        queue: bool = True,
    ) -> dict[str, Any]:
        event = {
            "id": _new_id("evt"),
            "object": "event",
            "api_version": self.api_version,
            "created": int(self.clock()),
            "data": {"object": _copy(obj)},
            "livemode": False,
            "pending_webhooks": 1,
            "request": dict(origin) if origin else {"id": None, "idempotency_key": None},
            "type": type,
        }
        self.events.append(event)
        self._payloads[event["id"]] = json.dumps(event, indent=2).encode()
        if queue and ("*" in self.enabled_events or type in self.enabled_events):
            self.pending.append(event["id"])
        return event

    def _after(self, events: list[dict[str, Any]]) -> list[Delivery]:
        """Deliver (outside the lock: the receiver may call the API back) what was queued."""
        if not self.auto_deliver:
            return []
        with self._lock:
            ids = [e["id"] for e in events if e["id"] in self.pending]
        return [self.deliver(event_id) for event_id in ids]

    # ------------------------------------------------------------------ hosted page

    def _index_page(self) -> Response:
        with self._lock:
            rows = "".join(
                f'<li><a href="/pay/{_e(s["id"])}">{_e(s["id"])}</a> {_e(s["status"])} '
                f"{_e(s['payment_status'])} {_e(_money(s['amount_total'], s['currency']))}</li>"
                for s in reversed(self.sessions.values())
            )
        body = f"<h2>Checkout Sessions</h2><ul>{rows or '<li>None yet.</li>'}</ul>"
        return _html(_layout("Fake Stripe", body))

    def _page(self, session_id: str, request: Request, notice: str = "") -> Response:
        with self._lock:
            session = self.sessions.get(session_id)
            if session is None:
                return _html(_layout("Not found", "<p>No such Checkout Session.</p>"), 404)
            session = _copy(session)
            items = _copy(self._line_items[session_id])
            intent = _copy(self.payment_intents.get(session["payment_intent"] or "") or {})
        currency = session["currency"]
        rows = "".join(
            f"<tr><td>{_e(item['description'])}"
            f"{_product_description(self._products, item)}</td>"
            f"<td>{item['quantity']}</td>"
            f"<td>{_e(_money(item['amount_total'], currency))}</td></tr>"
            for item in items
        )
        table = (
            "<table><thead><tr><th>Item</th><th>Qty</th><th>Amount</th></tr></thead>"
            f"<tbody>{rows}</tbody><tfoot><tr><th colspan=2>Total</th>"
            f"<th>{_e(_money(session['amount_total'], currency))}</th></tr></tfoot></table>"
        )
        status = session["status"]
        past_due = status == "open" and session["expires_at"] <= self.clock()
        if status == "expired":
            state = "<p class=state>This Checkout Session has expired.</p>"
            actions = ""
        elif status == "complete" and intent.get("status") == "processing":
            state = (
                "<p class=state>Order placed: the bank payment is pending "
                "(payment_status unpaid).</p>"
            )
            actions = _button(session_id, "bank_succeeds", "Bank payment succeeds") + _button(
                session_id, "bank_fails", "Bank payment fails"
            )
        elif status == "complete" and session["payment_status"] == "paid":
            state = "<p class=state>This Checkout Session is complete: payment received.</p>"
            actions = ""
        elif status == "complete":
            state = (
                "<p class=state>This Checkout Session is complete but the bank payment failed.</p>"
            )
            actions = ""
        elif past_due:
            state = "<p class=state>This Checkout Session is past its expiry time.</p>"
            actions = _button(session_id, "expire", "Expire now")
        else:
            state = ""
            if intent.get("status") == "requires_payment_method" and intent.get(
                "last_payment_error"
            ):
                state = f"<p class=decline>{_e(intent['last_payment_error']['message'])}</p>"
            email = session["customer_email"] or ""
            readonly = " readonly" if email else ""
            actions = (
                f'<form method="post" action="/pay/{_e(session_id)}/pay">'
                f'<label>Email <input type="email" name="email" value="{_e(email)}"'
                f"{readonly}></label> "
                '<button type="submit">Pay</button></form>'
                + _button(session_id, "pay_later", "Pay later (bank transfer)")
                + _button(session_id, "decline", "Decline (card declined)")
                + _button(session_id, "cancel", "Cancel")
                + _button(session_id, "expire", "Expire now")
            )
        notice_html = f"<p class=notice>{_e(notice)}</p>" if notice else ""
        body = (
            f"<p>Session <code>{_e(session_id)}</code> · status <b>{_e(status)}</b> · "
            f"payment_status <b>{_e(session['payment_status'])}</b></p>"
            f"{notice_html}{state}{table}<div class=actions>{actions}</div>"
        )
        return _html(_layout("Checkout", body))

    def _page_action(self, session_id: str, action: str, request: Request) -> Response:
        with self._lock:
            session = self.sessions.get(session_id)
            if session is None:
                return _html(_layout("Not found", "<p>No such Checkout Session.</p>"), 404)
            cancel_url = session["cancel_url"]
        if action == "cancel":
            if cancel_url:
                return _redirect(cancel_url)
            return self._page(session_id, request, "No cancel_url was given.")
        if action not in ("pay", "pay_later", "decline", "expire", "bank_succeeds", "bank_fails"):
            raise NotFound()
        try:
            deliveries = self._act(session_id, action, request.form.get("email") or None)
        except StripeError as exc:
            return self._page(session_id, request, str(exc))
        failed = [d for d in deliveries if not d.ok]
        if action in ("pay", "pay_later"):
            success_url = self.sessions[session_id]["success_url"]
            if success_url:
                return _redirect(success_url.replace("{CHECKOUT_SESSION_ID}", session_id))
        notice = ""
        if failed:
            notice = "Webhook delivery failed: " + ", ".join(
                f"{d.type} → {d.status or d.error}" for d in failed
            )
        return self._page(session_id, request, notice)


# ---------------------------------------------------------------------- helpers


def _new_id(prefix: str, *, test: bool = True) -> str:
    return f"{prefix}_{'test_' if test else ''}{secrets.token_hex(12)}"


def _copy(obj: Any) -> Any:
    return copy.deepcopy(obj)


def _dump(body: Any) -> bytes:
    return json.dumps(body, indent=2).encode()


def _json(body: Any, status: int) -> Response:
    return Response(_dump(body), status=status, mimetype="application/json")


def _param_error(exc: ParamError) -> StripeError:
    return StripeError(400, exc.message, code=exc.code, param=exc.param, save=False)


def _check_metadata(metadata: Mapping[str, Any], param: str) -> None:
    if len(metadata) > 50:
        raise StripeError(400, "Metadata can have up to 50 keys.", param=param)
    for key, value in metadata.items():
        if len(key) > 40:
            raise StripeError(
                400, "Metadata keys can have up to 40 characters.", param=f"{param}[{key}]"
            )
        if len(str(value)) > 500:
            raise StripeError(
                400, "Metadata values can have up to 500 characters.", param=f"{param}[{key}]"
            )


def _payment_error(charge_id: str, *, bank: bool = False) -> dict[str, Any]:
    return {
        "charge": charge_id,
        "code": "payment_method_provider_decline" if bank else "card_declined",
        "decline_code": None if bank else "generic_decline",
        "doc_url": "https://stripe.com/docs/error-codes/card-declined",
        "message": "The bank payment failed." if bank else "Your card was declined.",
        "type": "card_error",
    }


def _money(amount: int, currency: str) -> str:
    text = f"{amount:,}" if currency in ZERO_DECIMAL else f"{amount / 100:,.2f}"
    symbol = SYMBOLS.get(currency)
    return f"{symbol}{text}" if symbol else f"{text} {currency.upper()}"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _product_description(products: Mapping[str, dict[str, Any]], item: dict[str, Any]) -> str:
    product = products.get(item["price"]["product"]) or {}
    description = product.get("description")
    return f"<br><small>{_e(description)}</small>" if description else ""


def _button(session_id: str, action: str, label: str) -> str:
    return (
        f'<form method="post" action="/pay/{_e(session_id)}/{_e(action)}">'
        f'<button type="submit" name="action" value="{_e(action)}">{_e(label)}</button></form>'
    )


def _layout(title: str, body: str) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)} · SIMULATED CHECKOUT</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 44rem; margin: 2rem auto; padding: 0 1rem; }}
.banner {{ background: #b00020; color: #fff; padding: .75rem 1rem; font-weight: bold; }}
table {{ width: 100%; border-collapse: collapse; margin: 1rem 0; }}
td, th {{ border-bottom: 1px solid #ddd; padding: .4rem; text-align: left; }}
.actions form {{ display: inline-block; margin: .25rem .5rem .25rem 0; }}
.decline, .notice {{ color: #b00020; }}
.state {{ font-weight: bold; }}
</style></head>
<body><h1 class="banner">SIMULATED CHECKOUT — development only, no real payment</h1>
{body}
</body></html>"""


def _html(text: str, status: int = 200) -> Response:
    return Response(text, status=status, mimetype="text/html")


def _redirect(url: str) -> Response:
    response = Response("", status=303)
    response.headers["Location"] = url
    return response
