"""The ``/v1`` API: routing, authentication, parameter checks and idempotency keys.

Every request goes through the same steps, in Stripe's order: an injected hang or fault
(:meth:`~.state.FakeStripeState.hang_next` / ``fail_next``), the API key, the form body or
query string checked against the stripe library's own parameter types, the replay of a saved
answer for a known ``Idempotency-Key``, and only then the endpoint. :func:`answer` returns the
response and the events the call caused; the WSGI app hands those to the webhook thread once
the response has been written (see :mod:`.app`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from stripe.params import (
    ChargeRetrieveParams,
    CustomerCreateParams,
    CustomerRetrieveParams,
    CustomerUpdateParams,
    DisputeListParams,
    EventRetrieveParams,
    PaymentIntentRetrieveParams,
    RefundCreateParams,
    RefundListParams,
    RefundRetrieveParams,
)
from stripe.params.checkout import (
    SessionCreateParams,
    SessionExpireParams,
    SessionListLineItemsParams,
    SessionRetrieveParams,
)
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from . import objects
from .errors import StripeError, from_param_error, missing
from .objects import clone
from .params import ParamError, parse_form, validate
from .state import IDEMPOTENCY_KEY_LIFETIME, FakeStripeState, SavedResponse

Events = list[dict[str, Any]]
Result = tuple[dict[str, Any], Events]

ROUTES = Map(
    [
        Rule("/v1/checkout/sessions", methods=["POST"], endpoint="create_session"),
        Rule("/v1/checkout/sessions/<oid>", methods=["GET"], endpoint="get_session"),
        Rule("/v1/checkout/sessions/<oid>/expire", methods=["POST"], endpoint="expire_session"),
        Rule(
            "/v1/checkout/sessions/<oid>/line_items",
            methods=["GET"],
            endpoint="session_line_items",
        ),
        Rule("/v1/customers", methods=["POST"], endpoint="create_customer"),
        Rule("/v1/customers/<oid>", methods=["GET"], endpoint="get_customer"),
        Rule("/v1/customers/<oid>", methods=["POST"], endpoint="update_customer"),
        Rule("/v1/customers/<oid>", methods=["DELETE"], endpoint="delete_customer"),
        Rule("/v1/refunds", methods=["POST"], endpoint="create_refund"),
        Rule("/v1/refunds", methods=["GET"], endpoint="list_refunds"),
        Rule("/v1/refunds/<oid>", methods=["GET"], endpoint="get_refund"),
        Rule("/v1/disputes", methods=["GET"], endpoint="list_disputes"),
        Rule("/v1/payment_intents/<oid>", methods=["GET"], endpoint="get_payment_intent"),
        Rule("/v1/charges/<oid>", methods=["GET"], endpoint="get_charge"),
        Rule("/v1/events/<oid>", methods=["GET"], endpoint="get_event"),
    ]
)


class _Call:
    """One API call as an endpoint sees it."""

    def __init__(
        self, fake: FakeStripeState, request: Request, oid: str, origin: dict[str, Any]
    ) -> None:
        self.fake = fake
        self.oid = oid
        self.origin = origin  # the event's ``request`` field: {id, idempotency_key}
        self.host = request.host_url.rstrip("/")


def _create_session(call: _Call, params: dict[str, Any]) -> Result:
    values = validate(SessionCreateParams, params)
    session, events = call.fake._create_session(values, call.host)
    return _expand_session(call.fake, session, values.get("expand", [])), events


def _get_session(call: _Call, params: dict[str, Any]) -> Result:
    values = validate(SessionRetrieveParams, params)
    session = call.fake._session_or_404(call.oid)
    return _expand_session(call.fake, session, values.get("expand", [])), []


def _expire_session(call: _Call, params: dict[str, Any]) -> Result:
    values = validate(SessionExpireParams, params)
    session, events = call.fake._expire_session(call.oid, call.origin)
    return _expand_session(call.fake, session, values.get("expand", [])), events


def _session_line_items(call: _Call, params: dict[str, Any]) -> Result:
    validate(SessionListLineItemsParams, params)
    call.fake._session_or_404(call.oid)
    return objects.line_item_list(call.oid, call.fake._line_items[call.oid]), []


def _create_customer(call: _Call, params: dict[str, Any]) -> Result:
    customer, events = call.fake._create_customer(
        validate(CustomerCreateParams, params), call.origin
    )
    return clone(customer), events


def _get_customer(call: _Call, params: dict[str, Any]) -> Result:
    validate(CustomerRetrieveParams, params)
    found = call.fake.customers.get(call.oid)
    if found is None:
        raise missing("customer", call.oid)
    return clone(found), []  # a deleted customer is still found, as ``{"deleted": true}``


def _delete_customer(call: _Call, params: dict[str, Any]) -> Result:
    if params:
        raise StripeError(400, f"Received unknown parameter: {next(iter(params))}")
    deleted, events = call.fake._delete_customer(call.oid, call.origin)
    return clone(deleted), events


def _update_customer(call: _Call, params: dict[str, Any]) -> Result:
    values = validate(CustomerUpdateParams, params)
    customer, events = call.fake._update_customer(call.oid, values, call.origin)
    return clone(customer), events


def _create_refund(call: _Call, params: dict[str, Any]) -> Result:
    refund, events = call.fake._create_refund(validate(RefundCreateParams, params), call.origin)
    return clone(refund), events


def _listed(schema: Any, table: str, kind: str) -> Callable[[_Call, dict[str, Any]], Result]:
    """A list endpoint: newest first, of one payment intent or charge if asked, a page at a
    time (``limit``, default 10, at most 100; ``starting_after`` an id of the previous page)."""

    def listed(call: _Call, params: dict[str, Any]) -> Result:
        values = validate(schema, params)
        limit = int(values.get("limit", 10))
        if not 1 <= limit <= 100:
            raise StripeError(400, "Invalid limit: must be between 1 and 100", param="limit")
        with call.fake._lock:
            found = [
                clone(item)
                for item in reversed(list(getattr(call.fake, table).values()))
                if values.get("payment_intent") in (None, item["payment_intent"])
                and values.get("charge") in (None, item["charge"])
            ]
        after = values.get("starting_after")
        if after is not None:
            ids = [item["id"] for item in found]
            if after not in ids:
                raise missing(kind, after)
            found = found[ids.index(after) + 1 :]
        return objects.listed(found[:limit], f"/v1/{table}", has_more=len(found) > limit), []

    return listed


def _retrieve(schema: Any, table: str, kind: str) -> Callable[[_Call, dict[str, Any]], Result]:
    def retrieve(call: _Call, params: dict[str, Any]) -> Result:
        validate(schema, params)
        found = getattr(call.fake, table).get(call.oid)
        if found is None:
            raise missing(kind, call.oid)
        return clone(found), []

    return retrieve


def _get_event(call: _Call, params: dict[str, Any]) -> Result:
    validate(EventRetrieveParams, params)
    if call.oid not in call.fake._payloads:
        raise missing("event", call.oid)
    return json.loads(call.fake._payloads[call.oid]), []


ENDPOINTS: dict[str, Callable[[_Call, dict[str, Any]], Result]] = {
    "create_session": _create_session,
    "get_session": _get_session,
    "expire_session": _expire_session,
    "session_line_items": _session_line_items,
    "create_customer": _create_customer,
    "get_customer": _get_customer,
    "update_customer": _update_customer,
    "delete_customer": _delete_customer,
    "create_refund": _create_refund,
    "list_refunds": _listed(RefundListParams, "refunds", "refund"),
    "list_disputes": _listed(DisputeListParams, "disputes", "dispute"),
    "get_refund": _retrieve(RefundRetrieveParams, "refunds", "refund"),
    "get_payment_intent": _retrieve(
        PaymentIntentRetrieveParams, "payment_intents", "payment_intent"
    ),
    "get_charge": _retrieve(ChargeRetrieveParams, "charges", "charge"),
    "get_event": _get_event,
}


def _expand_session(
    fake: FakeStripeState, session: dict[str, Any], expand: list[str]
) -> dict[str, Any]:
    result = clone(session)
    for path in expand:
        if path in ("line_items", "line_items.data.price.product"):
            result["line_items"] = objects.line_item_list(
                session["id"], fake._line_items[session["id"]]
            )
            if path.endswith(".product"):
                for item in result["line_items"]["data"]:
                    item["price"]["product"] = clone(fake._products[item["price"]["product"]])
        elif path in ("payment_intent", "payment_intent.latest_charge"):
            if session["payment_intent"]:
                intent = clone(fake.payment_intents[session["payment_intent"]])
                if path.endswith("latest_charge") and intent["latest_charge"]:
                    intent["latest_charge"] = clone(fake.charges[intent["latest_charge"]])
                result["payment_intent"] = intent
        elif path == "customer":
            if session["customer"]:
                result["customer"] = clone(fake.customers[session["customer"]])
        else:
            raise StripeError(
                400,
                f"This property cannot be expanded ({path}) by the fake Stripe server.",
                param="expand",
            )
    return result


def answer(fake: FakeStripeState, request: Request) -> tuple[Response, Events]:
    """Stripe's answer to one ``/v1`` request, and the events to deliver once it is sent."""
    request_id = objects.new_id("req", test=False)
    response, events = _answer(fake, request, request_id)
    response.headers["Request-Id"] = request_id
    response.headers["Stripe-Version"] = request.headers.get("Stripe-Version", fake.api_version)
    with fake._lock:
        fake.requests.append((request.method, request.path, response.status_code))
    return response, events


def _answer(fake: FakeStripeState, request: Request, request_id: str) -> tuple[Response, Events]:
    if fake.on_request is not None:
        fake.on_request(request.method, request.path)
    hang = fake._take_hang()
    if hang:
        fake._release.wait(hang)
    fault = fake._take_fault()
    if fault:
        response = _json({"error": fault.body}, fault.status)
        response.headers.update(fault.headers)
        return response, []
    try:
        api_key = _authenticate(request)
    except StripeError as exc:
        return _json({"error": exc.body}, exc.status), []

    key = request.headers.get("Idempotency-Key") if request.method == "POST" else None
    try:
        params = parse_form(
            request.form.items(multi=True)
            if request.method == "POST"
            else request.args.items(multi=True)
        )
    except ParamError as exc:
        return _json({"error": from_param_error(exc).body}, 400), []
    fingerprint = json.dumps(params, sort_keys=True)
    scope = (api_key, key or "")
    if key:
        replay = _idempotent_replay(fake, scope, request, fingerprint)
        if replay is not None:
            return replay, []  # a replay causes nothing: its events went out the first time
    events: Events = []
    try:
        save = True
        try:
            body, events = _route(fake, request, params, request_id, key)
            status = 200
        except ParamError as exc:
            status, body, save = 400, {"error": from_param_error(exc).body}, False
        except StripeError as exc:
            status, body, save = exc.status, {"error": exc.body}, exc.save
        if key and save:
            with fake._lock:
                fake._idempotency[scope] = SavedResponse(
                    request.method,
                    request.path,
                    fingerprint,
                    status,
                    objects.dump(body),
                    fake.clock(),
                )
    finally:
        if key:
            with fake._lock:
                fake._in_flight.discard(scope)
    return _json(body, status), events


def _route(
    fake: FakeStripeState,
    request: Request,
    params: dict[str, Any],
    request_id: str,
    key: str | None,
) -> Result:
    adapter = ROUTES.bind_to_environ(request.environ)
    try:
        endpoint, args = adapter.match()
    except HTTPException:
        raise StripeError(
            404,
            f"Unrecognized request URL ({request.method}: {request.path}). Please see "
            "https://stripe.com/docs or we can help at https://support.stripe.com/.",
        ) from None
    call = _Call(fake, request, args.get("oid", ""), {"id": request_id, "idempotency_key": key})
    with fake._lock:
        return ENDPOINTS[endpoint](call, params)


def _authenticate(request: Request) -> str:
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
    fake: FakeStripeState, scope: tuple[str, str], request: Request, fingerprint: str
) -> Response | None:
    """The saved answer for this key, a 400/409 idempotency error, or None: go ahead (the key
    is then marked in flight until the answer is saved)."""
    now = fake.clock()
    with fake._lock:
        saved = fake._idempotency.get(scope)
        if saved and now - saved.created > IDEMPOTENCY_KEY_LIFETIME:
            del fake._idempotency[scope]
            saved = None
        if saved is None:
            if scope in fake._in_flight:
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
            fake._in_flight.add(scope)
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


def _json(body: Any, status: int) -> Response:
    return Response(objects.dump(body), status=status, mimetype="application/json")
