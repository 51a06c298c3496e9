"""The fake Stripe server (devtools/fake_stripe), driven through the real ``stripe`` library.

Webhooks go to a small local receiver that checks every signature with
``stripe.Webhook.construct_event``, exactly as the shop's endpoint will.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

import pytest
import requests
import stripe
from werkzeug.serving import make_server
from werkzeug.test import Client
from werkzeug.wrappers import Request, Response

from devtools.fake_stripe import FakeStripe, FakeStripeServer, sign, verify

KEY = "sk_test_fake_key_for_tests"
SECRET = "whsec_test_secret_for_fake_stripe"


@dataclass
class Receiver:
    """A webhook endpoint: verifies each delivery as the shop will, answers ``status``."""

    url: str = ""
    status: int = 200
    events: list[Any] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    payloads: list[bytes] = field(default_factory=list)
    signatures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: Called with each verified event before answering (e.g. to wait for something).
    before_answer: Callable[[Any], Any] | None = None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        payload = request.get_data()
        signature = request.headers.get("Stripe-Signature", "")
        try:
            event = stripe.Webhook.construct_event(payload, signature, SECRET)
        except (ValueError, stripe.SignatureVerificationError) as exc:
            with self.lock:
                self.rejected.append(str(exc))
            return Response("bad signature", status=400)(environ, start_response)
        if self.before_answer is not None:
            self.before_answer(event)
        with self.lock:
            self.events.append(event)
            self.payloads.append(payload)
            self.signatures.append(signature)
        return Response("", status=self.status)(environ, start_response)

    def types(self) -> list[str]:
        return [event.type for event in self.events]

    def of_type(self, type_: str) -> list[Any]:
        return [event for event in self.events if event.type == type_]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    target = Receiver()
    server = make_server("127.0.0.1", 0, target, threaded=True)
    target.url = f"http://127.0.0.1:{server.server_port}/webhooks/stripe"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield target
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def fake(receiver: Receiver) -> Iterator[FakeStripeServer]:
    with FakeStripeServer(webhook_url=receiver.url, webhook_secret=SECRET) as server:
        yield server


@pytest.fixture
def http_client() -> Iterator[stripe.RequestsClient]:
    client = stripe.RequestsClient(timeout=5)
    yield client
    client.close()


@pytest.fixture
def client(fake: FakeStripeServer, http_client: stripe.RequestsClient) -> stripe.StripeClient:
    return stripe.StripeClient(
        KEY,
        base_addresses={"api": fake.base_url},
        max_network_retries=0,
        http_client=http_client,
    )


@pytest.fixture
def browser() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


class _Inputs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.inputs: dict[str, dict[str, str | None]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        if tag == "input" and named.get("name"):
            self.inputs[str(named["name"])] = named


def form_input(page: str, name: str) -> dict[str, str | None]:
    """The attributes of the page's ``<input name=...>``."""
    parser = _Inputs()
    parser.feed(page)
    return parser.inputs[name]


def session_params(**overrides: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "mode": "payment",
        "line_items": [
            {
                "price_data": {
                    "currency": "GBP",
                    "unit_amount": 125000,
                    "product_data": {
                        "name": "Aurora ring",
                        "description": "18ct gold, size L",
                        "metadata": {"sku": "RING-1"},
                    },
                },
                "quantity": 2,
            },
            {
                "price_data": {
                    "currency": "gbp",
                    "unit_amount": 4500,
                    "product_data": {"name": "Gift box"},
                },
                "quantity": 1,
            },
        ],
        "customer_email": "ada@example.com",
        "client_reference_id": "order-42",
        "metadata": {"order_id": "42"},
        "payment_intent_data": {"metadata": {"order_id": "42"}},
        "success_url": "http://shop.test/checkout/success?session_id={CHECKOUT_SESSION_ID}",
        "cancel_url": "http://shop.test/basket",
        "expires_at": int(time.time()) + 3600,
    }
    params.update(overrides)
    return params


# ---------------------------------------------------------------- the API, via StripeClient


def test_create_retrieve_and_expire_a_session(
    client: stripe.StripeClient, fake: FakeStripeServer, receiver: Receiver
) -> None:
    session = client.v1.checkout.sessions.create(session_params())

    assert session.id.startswith("cs_test_")
    assert session.object == "checkout.session"
    assert (session.status, session.payment_status, session.mode) == ("open", "unpaid", "payment")
    assert session.amount_subtotal == session.amount_total == 2 * 125000 + 4500
    assert session.currency == "gbp"
    assert session.url == f"{fake.base_url}/pay/{session.id}"
    assert session.client_reference_id == "order-42"
    assert session.customer_email == "ada@example.com"
    assert session.metadata.to_dict() == {"order_id": "42"}
    assert session.payment_intent is None
    assert session.livemode is False
    assert session.success_url.endswith("{CHECKOUT_SESSION_ID}")

    again = client.v1.checkout.sessions.retrieve(session.id)
    assert again.to_dict() == session.to_dict()

    items = client.v1.checkout.sessions.line_items.list(session.id)
    assert [(i.description, i.quantity, i.amount_total) for i in items.data] == [
        ("Aurora ring", 2, 250000),
        ("Gift box", 1, 4500),
    ]
    expanded = client.v1.checkout.sessions.retrieve(session.id, {"expand": ["line_items"]})
    assert len(expanded.line_items.data) == 2

    expired = client.v1.checkout.sessions.expire(session.id)
    assert expired.status == "expired"
    assert expired.url is None
    [delivery] = fake.wait_for_deliveries()
    assert (delivery.type, delivery.ok) == ("checkout.session.expired", True)
    assert receiver.types() == ["checkout.session.expired"]
    event = receiver.events[0]
    assert event.data.object.id == session.id
    assert event.request.idempotency_key  # stripe-python sends one on every POST

    with pytest.raises(stripe.InvalidRequestError) as not_open:
        client.v1.checkout.sessions.expire(session.id)
    assert not_open.value.http_status == 400

    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.checkout.sessions.retrieve("cs_test_nope")
    assert missing.value.http_status == 404
    assert missing.value.code == "resource_missing"


def test_the_global_api_base_style_works_too(
    fake: FakeStripeServer, http_client: stripe.RequestsClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stripe, "api_key", KEY)
    monkeypatch.setattr(stripe, "api_base", fake.base_url)
    monkeypatch.setattr(stripe, "max_network_retries", 0)
    monkeypatch.setattr(stripe, "default_http_client", http_client)

    session = stripe.checkout.Session.create(**session_params())
    assert stripe.checkout.Session.retrieve(session.id).amount_total == 254500
    assert stripe.checkout.Session.expire(session.id).status == "expired"


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"line_item": [{"quantity": 1}]}, "line_item"),
        ({"payment_method_types": ["card"]}, "payment_method_types"),
        (
            {
                "line_items": [
                    {
                        "price_data": {
                            "currency": "gbp",
                            "unit_amout": 100,
                            "product_data": {"name": "x"},
                        },
                        "quantity": 1,
                    }
                ]
            },
            "line_items[0][price_data][unit_amout]",
        ),
        ({"payment_intent_data": {"metadta": {"a": "b"}}}, "payment_intent_data[metadta]"),
    ],
)
def test_unknown_parameters_are_refused(
    client: stripe.StripeClient, fake: FakeStripeServer, change: dict[str, Any], param: str
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.checkout.sessions.create(session_params(**change))
    assert refused.value.http_status == 400
    assert refused.value.param == param
    assert refused.value.code == "parameter_unknown"
    assert f"Received unknown parameter: {param}" in str(refused.value.user_message)
    assert fake.sessions == {}


def test_missing_and_malformed_values_are_refused(client: stripe.StripeClient) -> None:
    line = {"price_data": {"unit_amount": 100, "product_data": {"name": "x"}}, "quantity": 1}
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.checkout.sessions.create(session_params(line_items=[line]))
    assert missing.value.param == "line_items[0][price_data][currency]"
    assert missing.value.code == "parameter_missing"

    line = {
        "price_data": {"currency": "gbp", "unit_amount": 10, "product_data": {"name": "x"}},
        "quantity": 1,
    }
    with pytest.raises(stripe.InvalidRequestError) as too_small:
        client.v1.checkout.sessions.create(session_params(line_items=[line]))
    assert too_small.value.code == "amount_too_small"

    line = {"price_data": {"currency": "gbp", "unit_amount": 100, "product_data": {"name": "x"}}}
    with pytest.raises(stripe.InvalidRequestError) as no_quantity:
        client.v1.checkout.sessions.create(session_params(line_items=[line]))
    assert no_quantity.value.param == "line_items[0][quantity]"


@pytest.mark.parametrize(
    ("minutes", "ok"), [(10, False), (29, False), (31, True), (23 * 60, True), (25 * 60, False)]
)
def test_expires_at_must_be_30_minutes_to_24_hours_away(
    client: stripe.StripeClient, minutes: int, ok: bool
) -> None:
    params = session_params(expires_at=int(time.time()) + minutes * 60)
    if ok:
        assert client.v1.checkout.sessions.create(params).expires_at == params["expires_at"]
        return
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.checkout.sessions.create(params)
    assert refused.value.param == "expires_at"


def test_idempotency_key_replays_or_conflicts(
    client: stripe.StripeClient, fake: FakeStripeServer
) -> None:
    options = {"idempotency_key": "basket-7-attempt-1"}
    params = session_params()  # one expiry: the same request sent again, whatever the clock
    first = client.v1.checkout.sessions.create(params, options)
    replay = client.v1.checkout.sessions.create(params, options)

    assert replay.id == first.id
    assert len(fake.sessions) == 1
    assert replay.last_response.headers.get("Idempotent-Replayed") == "true"
    assert first.last_response.headers.get("Idempotent-Replayed") is None

    with pytest.raises(stripe.IdempotencyError) as conflict:
        client.v1.checkout.sessions.create({**params, "client_reference_id": "other"}, options)
    assert conflict.value.http_status == 400
    assert conflict.value.json_body["error"]["type"] == "idempotency_error"
    assert len(fake.sessions) == 1

    # A validation failure is not saved: the same key may be used once the request is fixed.
    fixed = {"idempotency_key": "basket-8"}
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.checkout.sessions.create(session_params(line_item=[{"quantity": 1}]), fixed)
    assert client.v1.checkout.sessions.create(session_params(), fixed).id != first.id


def test_authentication(fake: FakeStripeServer, http_client: stripe.RequestsClient) -> None:
    for key in ("sk_live_realkey123456", "rk_test_restricted1234", "pk_test_publishable"):
        bad = stripe.StripeClient(
            key, base_addresses={"api": fake.base_url}, http_client=http_client
        )
        with pytest.raises(stripe.AuthenticationError) as refused:
            bad.v1.checkout.sessions.retrieve("cs_test_x")
        assert refused.value.http_status == 401

    with requests.Session() as raw:
        answer = raw.get(f"{fake.base_url}/v1/checkout/sessions/cs_test_x", timeout=5)
    assert answer.status_code == 401
    assert answer.json()["error"]["type"] == "invalid_request_error"
    assert "API key" in answer.json()["error"]["message"]


def test_server_errors_and_timeouts_raise_the_matching_exceptions(
    fake: FakeStripeServer, client: stripe.StripeClient
) -> None:
    fake.fail_next(500)
    with pytest.raises(stripe.APIError) as failed:
        client.v1.checkout.sessions.create(session_params())
    assert failed.value.http_status == 500
    assert fake.sessions == {}
    assert client.v1.checkout.sessions.create(session_params()).status == "open"

    fake.fail_next(429)
    with pytest.raises(stripe.RateLimitError):
        client.v1.checkout.sessions.create(session_params())

    with FakeStripeServer() as slow_fake, closing(stripe.RequestsClient(timeout=0.3)) as quick:
        impatient = stripe.StripeClient(
            KEY,
            base_addresses={"api": slow_fake.base_url},
            max_network_retries=0,
            http_client=quick,
        )
        slow_fake.hang_next(3)
        with pytest.raises(stripe.APIConnectionError):
            impatient.v1.checkout.sessions.create(session_params())
        slow_fake.release_hangs()


def test_the_library_retries_5xx_when_allowed(
    fake: FakeStripeServer, http_client: stripe.RequestsClient
) -> None:
    retrying = stripe.StripeClient(
        KEY, base_addresses={"api": fake.base_url}, max_network_retries=1, http_client=http_client
    )
    fake.fail_next(503)
    session = retrying.v1.checkout.sessions.create(session_params())
    assert [status for _, _, status in fake.requests] == [503, 200]
    assert len(fake.sessions) == 1
    assert session.id in fake.sessions


def test_down_refuses_connections_until_up(
    fake: FakeStripeServer, client: stripe.StripeClient
) -> None:
    session = client.v1.checkout.sessions.create(session_params())
    fake.down()
    with pytest.raises(stripe.APIConnectionError):
        client.v1.checkout.sessions.retrieve(session.id)
    fake.up()
    assert client.v1.checkout.sessions.retrieve(session.id).id == session.id


def test_refunds(client: stripe.StripeClient, fake: FakeStripeServer, receiver: Receiver) -> None:
    session = client.v1.checkout.sessions.create(session_params())
    fake.pay(session.id)
    paid = client.v1.checkout.sessions.retrieve(session.id)
    intent = client.v1.payment_intents.retrieve(paid.payment_intent)
    assert (intent.status, intent.amount_received) == ("succeeded", 254500)

    partial = client.v1.refunds.create({"payment_intent": intent.id, "amount": 4500})
    assert (partial.object, partial.status, partial.amount) == ("refund", "succeeded", 4500)
    charge = fake.charges[intent.latest_charge]
    assert (charge["amount_refunded"], charge["refunded"]) == (4500, False)

    with pytest.raises(stripe.InvalidRequestError) as too_much:
        client.v1.refunds.create({"payment_intent": intent.id, "amount": 999999})
    assert too_much.value.code == "amount_too_large"

    rest = client.v1.refunds.create({"payment_intent": intent.id})
    assert rest.amount == 250000

    with pytest.raises(stripe.InvalidRequestError) as again:
        client.v1.refunds.create({"payment_intent": intent.id})
    assert again.value.code == "charge_already_refunded"

    fake.wait_for_deliveries()
    refunded = receiver.of_type("charge.refunded")
    assert [e.data.object.amount_refunded for e in refunded] == [4500, 254500]
    last = refunded[-1].data.object
    assert (last.amount, last.refunded, last.payment_intent) == (254500, True, intent.id)
    assert last.metadata.to_dict() == {"order_id": "42"}

    # Listed newest first, a page at a time, and only the payment's own.
    first_page = client.v1.refunds.list({"payment_intent": intent.id, "limit": 1})
    assert [r.id for r in first_page.data] == [rest.id]
    assert first_page.has_more is True
    every = client.v1.refunds.list({"payment_intent": intent.id, "limit": 1}).auto_paging_iter()
    assert [r.id for r in every] == [rest.id, partial.id]
    assert client.v1.refunds.list({"payment_intent": "pi_test_other"}).data == []
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.refunds.list({"limit": 101})


# ---------------------------------------------------------------- hosted page and webhooks


def test_pay_button_completes_the_session_and_signs_the_event(
    client: stripe.StripeClient,
    fake: FakeStripeServer,
    receiver: Receiver,
    browser: requests.Session,
) -> None:
    session = client.v1.checkout.sessions.create(session_params())

    page = browser.get(session.url, timeout=5)
    assert page.status_code == 200
    assert "SIMULATED CHECKOUT — development only, no real payment" in page.text
    assert "Aurora ring" in page.text
    assert "£2,545.00" in page.text

    answer = browser.post(f"{session.url}/pay", allow_redirects=False, timeout=5)
    assert answer.status_code == 303
    assert answer.headers["Location"] == (
        f"http://shop.test/checkout/success?session_id={session.id}"
    )

    assert receiver.rejected == []
    assert receiver.types() == ["checkout.session.completed"]
    event = receiver.events[0]
    assert event.id.startswith("evt_")
    assert event.object == "event"
    assert event.livemode is False
    assert event.api_version == stripe.api_version
    completed = event.data.object
    assert (completed.id, completed.status, completed.payment_status) == (
        session.id,
        "complete",
        "paid",
    )
    assert completed.payment_intent.startswith("pi_test_")
    assert completed.customer_details.email == "ada@example.com"
    assert completed.metadata.to_dict() == {"order_id": "42"}

    done = browser.get(session.url, timeout=5)
    assert "complete" in done.text
    assert "<button" not in done.text
    [delivery] = fake.deliveries
    assert delivery.ok
    assert verify(delivery.payload, delivery.signature, SECRET)


def test_pay_later_then_the_bank_payment_succeeds_or_fails(
    client: stripe.StripeClient,
    fake: FakeStripeServer,
    receiver: Receiver,
    browser: requests.Session,
) -> None:
    good = client.v1.checkout.sessions.create(session_params())
    answer = browser.post(f"{good.url}/pay_later", allow_redirects=False, timeout=5)
    assert answer.status_code == 303
    completed = receiver.of_type("checkout.session.completed")[0].data.object
    assert (completed.status, completed.payment_status) == ("complete", "unpaid")
    page = browser.get(f"{fake.base_url}/pay/{good.id}", timeout=5)
    assert "Bank payment succeeds" in page.text

    browser.post(f"{fake.base_url}/pay/{good.id}/bank_succeeds", timeout=5)
    succeeded = receiver.of_type("checkout.session.async_payment_succeeded")
    assert [e.data.object.payment_status for e in succeeded] == ["paid"]

    bad = client.v1.checkout.sessions.create(session_params())
    fake.pay_later(bad.id)
    browser.post(f"{fake.base_url}/pay/{bad.id}/bank_fails", timeout=5)
    failed = receiver.of_type("checkout.session.async_payment_failed")
    assert [(e.data.object.id, e.data.object.payment_status) for e in failed] == [
        (bad.id, "unpaid")
    ]
    assert receiver.rejected == []


def test_decline_keeps_the_session_open(
    client: stripe.StripeClient,
    fake: FakeStripeServer,
    receiver: Receiver,
    browser: requests.Session,
) -> None:
    session = client.v1.checkout.sessions.create(session_params())
    page = browser.post(f"{session.url}/decline", timeout=5)
    assert "Your card was declined." in page.text

    [failed] = receiver.of_type("payment_intent.payment_failed")
    intent = failed.data.object
    assert intent.object == "payment_intent"
    assert intent.metadata.to_dict() == {"order_id": "42"}
    assert intent.last_payment_error.code == "card_declined"
    assert client.v1.checkout.sessions.retrieve(session.id).status == "open"

    fake.pay(session.id)
    paid = client.v1.checkout.sessions.retrieve(session.id)
    assert (paid.payment_status, paid.payment_intent) == ("paid", intent.id)


def test_cancel_and_expire_buttons(
    client: stripe.StripeClient, receiver: Receiver, browser: requests.Session
) -> None:
    session = client.v1.checkout.sessions.create(session_params())
    cancel = browser.post(f"{session.url}/cancel", allow_redirects=False, timeout=5)
    assert (cancel.status_code, cancel.headers["Location"]) == (303, "http://shop.test/basket")
    assert receiver.events == []

    browser.post(f"{session.url}/expire", timeout=5)
    assert receiver.types() == ["checkout.session.expired"]
    page = browser.get(session.url, timeout=5)
    assert "expired" in page.text
    refused = browser.post(f"{session.url}/pay", allow_redirects=False, timeout=5)
    assert refused.status_code == 200
    assert client.v1.checkout.sessions.retrieve(session.id).status == "expired"


def test_failed_delivery_is_recorded_and_redelivery_resends_the_same_event(
    client: stripe.StripeClient, fake: FakeStripeServer, receiver: Receiver
) -> None:
    session = client.v1.checkout.sessions.create(session_params())
    receiver.status = 500
    [first] = fake.pay(session.id)
    assert (first.status, first.ok) == (500, False)

    receiver.status = 200
    second = fake.redeliver(first.event_id)
    assert second.ok
    assert second.event_id == first.event_id
    assert second.payload == first.payload
    assert receiver.payloads[0] == receiver.payloads[1]
    assert [e.id for e in receiver.events] == [first.event_id, first.event_id]

    fake.webhook_url = "http://127.0.0.1:9/nothing-listens-here"
    third = fake.redeliver(first.event_id)
    assert third.status is None
    assert third.error


def test_events_can_be_held_and_delivered_in_any_order_or_at_once(
    client: stripe.StripeClient, fake: FakeStripeServer, receiver: Receiver
) -> None:
    fake.auto_deliver = False
    session = client.v1.checkout.sessions.create(session_params())
    assert fake.pay_later(session.id) == []
    fake.bank_payment_succeeds(session.id)
    completed, succeeded = fake.pending
    assert receiver.events == []

    fake.deliver_pending([succeeded, completed])
    assert receiver.types() == [
        "checkout.session.async_payment_succeeded",
        "checkout.session.completed",
    ]
    assert fake.pending == []

    deliveries = fake.deliver_concurrently([completed, completed])
    assert [d.status for d in deliveries] == [200, 200]
    assert len(receiver.of_type("checkout.session.completed")) == 3


def test_signed_event_can_be_verified_and_delivered_later(
    fake: FakeStripeServer, receiver: Receiver
) -> None:
    payload, header = fake.signed_event("charge.refunded", {"id": "ch_test_1", "object": "charge"})
    event = stripe.Webhook.construct_event(payload, header, SECRET)
    assert (event.type, event.data.object.id, event.pending_webhooks) == (
        "charge.refunded",
        "ch_test_1",
        1,
    )
    assert receiver.events == []
    assert fake.deliver(event.id).ok
    assert receiver.events[0].id == event.id

    stale = sign(payload, SECRET, timestamp=int(time.time()) - 3600)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload, stale, SECRET)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload, header, "whsec_wrong")


def test_disputes(client: stripe.StripeClient, fake: FakeStripeServer, receiver: Receiver) -> None:
    session = client.v1.checkout.sessions.create(session_params())
    fake.pay(session.id)
    intent_id = fake.session(session.id)["payment_intent"]
    dispute = fake.create_dispute(intent_id)
    [event] = receiver.of_type("charge.dispute.created")
    assert event.data.object.id == dispute["id"]
    assert (event.data.object.payment_intent, event.data.object.status) == (
        intent_id,
        "needs_response",
    )
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.refunds.create({"payment_intent": intent_id})
    assert refused.value.code == "charge_disputed"

    fake.close_dispute(dispute["id"], status="won")
    [closed] = receiver.of_type("charge.dispute.closed")
    assert (closed.data.object.id, closed.data.object.status) == (dispute["id"], "won")
    assert client.v1.refunds.create({"payment_intent": intent_id}).status == "succeeded"


def test_a_refund_that_fails_later_counts_on_its_charge_no_more(
    client: stripe.StripeClient, fake: FakeStripeServer, receiver: Receiver
) -> None:
    session = client.v1.checkout.sessions.create(session_params())
    fake.pay(session.id)
    intent_id = fake.session(session.id)["payment_intent"]
    refund = client.v1.refunds.create({"payment_intent": intent_id, "amount": 100})

    fake.fail_refund(refund.id, reason="expired_or_canceled_card")

    [failed] = receiver.of_type("refund.failed")
    assert (failed.data.object.id, failed.data.object.status) == (refund.id, "failed")
    assert failed.data.object.failure_reason == "expired_or_canceled_card"
    assert client.v1.refunds.retrieve(refund.id).status == "failed"
    charge = fake.charges[fake.payment_intents[intent_id]["latest_charge"]]
    assert charge["amount_refunded"] == 0
    with pytest.raises(ValueError, match="can't fail now"):
        fake.fail_refund(refund.id)


def test_a_payments_disputes_are_listed_newest_first(
    client: stripe.StripeClient, fake: FakeStripeServer
) -> None:
    session = client.v1.checkout.sessions.create(session_params())
    fake.pay(session.id)
    intent_id = fake.session(session.id)["payment_intent"]
    first = fake.create_dispute(intent_id, amount=100)
    fake.close_dispute(first["id"], status="won")
    second = fake.create_dispute(intent_id, amount=200)

    listed = client.v1.disputes.list({"payment_intent": intent_id, "limit": 1})

    assert [(d.id, d.amount, d.status) for d in listed.data] == [
        (second["id"], 200, "needs_response")
    ]
    assert listed.has_more is True
    every = client.v1.disputes.list({"payment_intent": intent_id, "limit": 1}).auto_paging_iter()
    assert [(d.id, d.status, d.is_charge_refundable) for d in every] == [
        (second["id"], "needs_response", False),
        (first["id"], "won", True),
    ]
    assert client.v1.disputes.list({"payment_intent": "pi_test_other"}).data == []
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.disputes.list({"limit": 0})


def test_a_lost_dispute_leaves_the_charge_unrefundable(
    client: stripe.StripeClient, fake: FakeStripeServer, receiver: Receiver
) -> None:
    session = client.v1.checkout.sessions.create(session_params())
    fake.pay(session.id)
    intent_id = fake.session(session.id)["payment_intent"]
    dispute = fake.create_dispute(intent_id)

    fake.close_dispute(dispute["id"], status="lost")

    [closed] = receiver.of_type("charge.dispute.closed")
    assert closed.data.object.status == "lost"
    assert closed.data.object.is_charge_refundable is False
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.refunds.create({"payment_intent": intent_id})
    assert refused.value.code == "charge_disputed"
    with pytest.raises(ValueError, match="won, lost or warning_closed"):
        fake.close_dispute(dispute["id"], status="pending")


def test_due_sessions_expire_on_request(receiver: Receiver) -> None:
    now = [time.time()]
    with (
        FakeStripeServer(
            webhook_url=receiver.url, webhook_secret=SECRET, clock=lambda: now[0]
        ) as fake,
        closing(stripe.RequestsClient(timeout=5)) as http,
    ):
        client = stripe.StripeClient(
            KEY, base_addresses={"api": fake.base_url}, max_network_retries=0, http_client=http
        )
        soon = client.v1.checkout.sessions.create(session_params(expires_at=int(now[0]) + 1800))
        later = client.v1.checkout.sessions.create(session_params())
        assert fake.expire_due_sessions() == []
        now[0] += 1801
        [delivery] = fake.expire_due_sessions()
        assert delivery.ok
        assert receiver.of_type("checkout.session.expired")[0].data.object.id == soon.id
        assert fake.session(later.id)["status"] == "open"


def test_the_wsgi_app_alone_with_a_webhook_transport() -> None:
    received: list[tuple[bytes, dict[str, str]]] = []

    def transport(url: str, payload: bytes, headers: Any) -> int:
        received.append((payload, dict(headers)))
        return 204

    app = FakeStripe(
        webhook_url="http://shop.test/webhooks/stripe",
        webhook_secret=SECRET,
        webhook_transport=transport,
    )
    web = Client(app)
    form = [
        ("mode", "payment"),
        ("line_items[0][price_data][currency]", "eur"),
        ("line_items[0][price_data][unit_amount]", "9900"),
        ("line_items[0][price_data][product_data][name]", "Pearl"),
        ("line_items[0][quantity]", "1"),
        ("success_url", "http://shop.test/ok/{CHECKOUT_SESSION_ID}"),
    ]
    created = web.post(
        "/v1/checkout/sessions", data=dict(form), headers={"Authorization": f"Bearer {KEY}"}
    )
    assert created.status_code == 200
    session = created.get_json()
    paid = web.post(f"/pay/{session['id']}/pay")
    assert paid.status_code == 303
    assert paid.headers["Location"] == f"http://shop.test/ok/{session['id']}"
    [(payload, headers)] = received
    event = stripe.Webhook.construct_event(payload, headers["Stripe-Signature"], SECRET)
    assert event.type == "checkout.session.completed"
    assert json.loads(payload)["data"]["object"]["amount_total"] == 9900

    other = web.post(
        "/v1/checkout/sessions", data=dict(form), headers={"Authorization": f"Bearer {KEY}"}
    ).get_json()
    expired = web.post(
        f"/v1/checkout/sessions/{other['id']}/expire", headers={"Authorization": f"Bearer {KEY}"}
    )
    assert expired.get_json()["status"] == "expired"  # reading the answer lets its webhook go
    # Every delivery the webhook thread made so far: the Pay button's, then the API call's.
    paid_delivery, expired_delivery = app.wait_for_deliveries()
    assert (paid_delivery.type, expired_delivery.type) == (
        "checkout.session.completed",
        "checkout.session.expired",
    )
    assert expired_delivery.status == 204
    assert json.loads(received[-1][0])["data"]["object"]["id"] == other["id"]


# ---------------------------------------------------------------- webhooks come after the answer


def _call_the_api(call: str, client: stripe.StripeClient, session_id: str, intent: str) -> None:
    if call == "expire a session":
        client.v1.checkout.sessions.expire(session_id)
    elif call == "refund a payment":
        client.v1.refunds.create({"payment_intent": intent})
    else:
        client.v1.customers.create({"email": "ada@example.com"})


@pytest.mark.parametrize("call", ["expire a session", "refund a payment", "create a customer"])
def test_a_webhook_caused_by_an_api_call_arrives_only_after_the_caller_has_its_answer(
    client: stripe.StripeClient, fake: FakeStripeServer, receiver: Receiver, call: str
) -> None:
    fake.enabled_events = {"*"}
    session = client.v1.checkout.sessions.create(session_params())
    intent = ""
    if call == "refund a payment":
        fake.pay(session.id)
        intent = fake.session(session.id)["payment_intent"]
    # Like a shop whose webhook handler needs the row its own request still has locked: the
    # receiver waits (at most 5 s) until the caller has its answer.
    answered = threading.Event()
    caller_had_its_answer: list[bool] = []
    receiver.before_answer = lambda event: caller_had_its_answer.append(answered.wait(5))

    _call_the_api(call, client, session.id, intent)
    client.v1.checkout.sessions.retrieve(session.id)  # the caller carries on meanwhile
    answered.set()

    deliveries = fake.wait_for_deliveries(timeout=10)
    assert deliveries
    assert all(delivery.ok for delivery in deliveries)
    assert caller_had_its_answer == [True] * len(deliveries)


def test_waiting_for_deliveries_gives_up_while_the_receiver_hangs(
    client: stripe.StripeClient, fake: FakeStripeServer, receiver: Receiver
) -> None:
    release = threading.Event()
    receiver.before_answer = lambda event: release.wait(10)
    session = client.v1.checkout.sessions.create(session_params())

    expired = client.v1.checkout.sessions.expire(session.id)  # answered, though nobody listens

    assert expired.status == "expired"
    with pytest.raises(TimeoutError):
        fake.wait_for_deliveries(timeout=0.2)
    release.set()
    [delivery] = fake.wait_for_deliveries(timeout=10)
    assert (delivery.type, delivery.ok) == ("checkout.session.expired", True)
    assert fake.wait_for_deliveries() == []


def test_the_pay_button_can_redirect_before_its_webhook_arrives(
    client: stripe.StripeClient,
    fake: FakeStripeServer,
    receiver: Receiver,
    browser: requests.Session,
) -> None:
    fake.page_waits_for_webhooks = False
    session = client.v1.checkout.sessions.create(session_params())
    redirected = threading.Event()
    browser_had_its_redirect: list[bool] = []
    receiver.before_answer = lambda event: browser_had_its_redirect.append(redirected.wait(5))

    answer = browser.post(f"{session.url}/pay", allow_redirects=False, timeout=5)
    redirected.set()

    assert answer.status_code == 303
    [delivery] = fake.wait_for_deliveries(timeout=10)
    assert (delivery.type, delivery.ok) == ("checkout.session.completed", True)
    assert browser_had_its_redirect == [True]


# ---------------------------------------------------------------- customers


def test_a_customer_is_created_retrieved_and_updated(
    client: stripe.StripeClient, fake: FakeStripeServer, receiver: Receiver
) -> None:
    fake.enabled_events = {"customer.created", "customer.updated"}
    customer = client.v1.customers.create(
        {"email": "ada@example.com", "name": "Ada", "metadata": {"user_id": "7", "tier": "gold"}}
    )
    assert customer.id.startswith("cus_test_")
    assert (customer.object, customer.email, customer.name) == (
        "customer",
        "ada@example.com",
        "Ada",
    )
    assert customer.metadata.to_dict() == {"user_id": "7", "tier": "gold"}
    assert client.v1.customers.retrieve(customer.id).to_dict() == customer.to_dict()

    updated = client.v1.customers.update(
        customer.id, {"name": "Ada Lovelace", "phone": "+44 20 7946 0000", "metadata": {"tier": ""}}
    )

    assert (updated.name, updated.phone, updated.email) == (
        "Ada Lovelace",
        "+44 20 7946 0000",
        "ada@example.com",
    )
    assert updated.metadata.to_dict() == {"user_id": "7"}
    assert fake.customer(customer.id)["name"] == "Ada Lovelace"
    fake.wait_for_deliveries()
    # Each event is delivered on its own, and Stripe promises no order between them (CI once
    # received the update first): taken by type.
    events = {event.type: event for event in receiver.events}
    assert sorted(events) == ["customer.created", "customer.updated"]
    created, changed = events["customer.created"], events["customer.updated"]
    assert created.data.object.id == customer.id
    assert changed.data.previous_attributes.name == "Ada"
    assert changed.data.previous_attributes.phone is None


def test_creating_a_customer_twice_with_one_idempotency_key_makes_one_customer(
    client: stripe.StripeClient, fake: FakeStripeServer
) -> None:
    fake.enabled_events = {"*"}
    options = {"idempotency_key": "customer-for-user-7"}

    first = client.v1.customers.create({"email": "ada@example.com"}, options)
    again = client.v1.customers.create({"email": "ada@example.com"}, options)

    assert again.id == first.id
    assert again.last_response.headers.get("Idempotent-Replayed") == "true"
    assert list(fake.customers) == [first.id]
    assert [d.type for d in fake.wait_for_deliveries()] == ["customer.created"]
    with pytest.raises(stripe.IdempotencyError):
        client.v1.customers.create({"email": "grace@example.com"}, options)
    assert list(fake.customers) == [first.id]


def test_customer_parameters_are_checked_like_stripe_does(
    client: stripe.StripeClient, fake: FakeStripeServer
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        client.v1.customers.create({"emial": "ada@example.com"})  # type: ignore[typeddict-unknown-key]
    assert (unknown.value.param, unknown.value.code) == ("emial", "parameter_unknown")
    with pytest.raises(stripe.InvalidRequestError) as bad_email:
        client.v1.customers.create({"email": "not-an-email"})
    assert (bad_email.value.param, bad_email.value.code) == ("email", "email_invalid")
    assert fake.customers == {}

    for lookup in (client.v1.customers.retrieve, client.v1.customers.update):
        with pytest.raises(stripe.InvalidRequestError) as missing:
            lookup("cus_test_nobody")
        assert (missing.value.http_status, missing.value.code) == (404, "resource_missing")


def test_a_session_for_a_customer_carries_the_customer_to_the_page_and_the_webhook(
    client: stripe.StripeClient,
    fake: FakeStripeServer,
    receiver: Receiver,
    browser: requests.Session,
) -> None:
    customer = client.v1.customers.create({"email": "grace@example.com", "name": "Grace"})
    params = session_params(customer=customer.id)
    del params["customer_email"]

    session = client.v1.checkout.sessions.create(params)

    assert (session.customer, session.customer_email) == (customer.id, None)
    assert session.customer_details.email == "grace@example.com"
    expanded = client.v1.checkout.sessions.retrieve(session.id, {"expand": ["customer"]})
    assert expanded.customer.id == customer.id
    email = form_input(browser.get(session.url, timeout=5).text, "email")
    assert email["value"] == "grace@example.com"
    assert "readonly" in email

    browser.post(
        f"{session.url}/pay",
        data={"email": "grace@example.com"},
        allow_redirects=False,
        timeout=5,
    )

    [completed] = receiver.of_type("checkout.session.completed")
    assert completed.data.object.customer == customer.id
    assert completed.data.object.customer_details.email == "grace@example.com"
    assert completed.data.object.customer_details.name == "Grace"
    intent = client.v1.payment_intents.retrieve(completed.data.object.payment_intent)
    assert intent.customer == customer.id


def test_a_session_for_an_unknown_customer_is_refused(
    client: stripe.StripeClient, fake: FakeStripeServer
) -> None:
    params = session_params(customer="cus_test_nobody")
    del params["customer_email"]

    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.checkout.sessions.create(params)

    assert refused.value.http_status == 400
    assert (refused.value.code, refused.value.param) == ("resource_missing", "customer")
    assert "No such customer: 'cus_test_nobody'" in str(refused.value.user_message)
    assert fake.sessions == {}


def test_a_session_cannot_name_both_a_customer_and_a_customer_email(
    client: stripe.StripeClient, fake: FakeStripeServer
) -> None:
    customer = client.v1.customers.create({"email": "grace@example.com"})

    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.checkout.sessions.create(session_params(customer=customer.id))

    assert refused.value.http_status == 400
    assert "You may only specify one of these parameters: customer, customer_email." in str(
        refused.value.user_message
    )
    assert fake.sessions == {}
