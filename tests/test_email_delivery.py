"""No request waits for the email provider: sign-up and the Stripe webhook only write the
outbox, and the email worker delivers each email once the provider answers again."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import time_machine
from flask import Flask

from devtools.fake_stripe.webhooks import sign
from elysium.extensions import db
from elysium.models import Order, OrderStatus, OutboxStatus
from elysium.models.types import utcnow
from elysium.services.outbox import idempotency_key, queue_email
from tests.conftest import PASSWORD, WEBHOOK_SECRET, ShopClient, create_user, make_app, sent_emails
from tests.support.orders import CHAIN_PRICE, pending_chain_order
from tests.support.resend_server import FakeResend, running_fake_resend

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Long enough that a request which called the provider could not answer in under a second.
PROVIDER_TIMEOUT_SECONDS = 10
HANG_SECONDS = 60
TOTAL = CHAIN_PRICE


@pytest.fixture
def fake_resend() -> Iterator[FakeResend]:
    with running_fake_resend() as fake:
        yield fake


@pytest.fixture
def shop(app: Flask, fake_resend: FakeResend) -> Iterator[Flask]:
    """The shop on the test database, sending through the Resend stand-in."""
    application = make_app(
        app.config["SQLALCHEMY_DATABASE_URI"],
        EMAIL_BACKEND="resend",
        RESEND_BASE_URL=fake_resend.url,
        RESEND_API_KEY=fake_resend.api_key,
        EMAIL_TIMEOUT_SECONDS=PROVIDER_TIMEOUT_SECONDS,
        PASSWORD_HASH_TIME_COST=1,
        PASSWORD_HASH_MEMORY_KIB=1024,
    )
    yield application
    with application.app_context():
        db.engine.dispose()


def register(client: ShopClient, email: str) -> tuple[int, float]:
    """Sign up through the real form; the status and how long the POST alone took."""
    client.get("/auth/register")
    form = {
        "csrf_token": client.csrf_token,
        "first_name": "Grace",
        "last_name": "Hopper",
        "email": email,
        "password": PASSWORD,
    }
    started = time.monotonic()
    response = client.post("/auth/register", data=form)
    return response.status_code, time.monotonic() - started


def checkout_completed(order: dict) -> bytes:
    return json.dumps(
        {
            "id": "evt_test_emails_1",
            "object": "event",
            "type": "checkout.session.completed",
            "created": int(time.time()),
            "livemode": False,
            "data": {
                "object": {
                    "id": "cs_test_emails_1",
                    "object": "checkout.session",
                    "client_reference_id": order["number"],
                    "metadata": {"order_number": order["number"]},
                    "amount_total": TOTAL,
                    "currency": "gbp",
                    "payment_status": "paid",
                    "status": "complete",
                    "payment_intent": "pi_test_emails_1",
                }
            },
        }
    ).encode()


def send_pending(application: Flask) -> str:
    result = application.test_cli_runner().invoke(args=["emails", "send-pending"])
    assert result.exit_code == 0, result.output
    return result.output


def assert_each_email_delivered_once(application: Flask, fake_resend: FakeResend) -> None:
    emails = sent_emails(application)
    assert emails
    assert {email.status for email in emails} == {OutboxStatus.SENT}
    expected = sorted(idempotency_key(email.id, email.created_at) for email in emails)
    assert sorted(fake_resend.keys()) == expected
    assert fake_resend.emails_sent == len(emails)


def test_sign_up_answers_at_once_while_the_email_provider_hangs(shop, fake_resend):
    fake_resend.hang(seconds=HANG_SECONDS)

    status, elapsed = register(shop.test_client(), "grace@example.com")

    assert status == 303
    assert elapsed < 1.0
    assert fake_resend.requests == []
    [email] = sent_emails(shop, "grace@example.com")
    assert email.status is OutboxStatus.PENDING

    fake_resend.succeed()
    assert "Emails: 1 sent, 0 to retry, 0 failed." in send_pending(shop)
    assert "Emails: 0 sent, 0 to retry, 0 failed." in send_pending(shop)

    assert_each_email_delivered_once(shop, fake_resend)
    [delivered] = fake_resend.requests
    assert delivered.json["to"] == ["grace@example.com"]
    assert "/auth/confirm/" in delivered.json["text"]


def test_the_stripe_webhook_answers_at_once_while_the_email_provider_hangs(
    shop, fake_resend, catalogue
):
    order = pending_chain_order(
        shop, number="ELY-EMAILS01", checkout_session_id="cs_test_emails_1", with_cart=False
    )
    fake_resend.hang(seconds=HANG_SECONDS)
    payload = checkout_completed(order)
    headers = {
        "Content-Type": "application/json",
        "Stripe-Signature": sign(payload, WEBHOOK_SECRET),
    }

    started = time.monotonic()
    response = shop.test_client().post("/webhooks/stripe", data=payload, headers=headers)
    elapsed = time.monotonic() - started

    assert response.status_code == 200
    assert response.get_json()["outcome"] == "applied"
    assert elapsed < 1.0
    assert fake_resend.requests == []
    with shop.app_context():
        assert db.session.get_one(Order, order["id"]).status is OrderStatus.PAID
    [confirmation] = sent_emails(shop, "shopper@example.com")
    assert confirmation.status is OutboxStatus.PENDING
    assert order["number"] in confirmation.subject

    fake_resend.succeed()
    assert "Emails: 1 sent, 0 to retry, 0 failed." in send_pending(shop)
    assert "Emails: 0 sent, 0 to retry, 0 failed." in send_pending(shop)

    assert_each_email_delivered_once(shop, fake_resend)
    [delivered] = fake_resend.requests
    assert delivered.json["to"] == ["shopper@example.com"]
    assert order["number"] in delivered.json["text"]


def test_an_order_confirmation_outlives_a_three_hour_provider_outage(shop, fake_resend, catalogue):
    order = pending_chain_order(
        shop, number="ELY-EMAILS02", checkout_session_id="cs_test_emails_1", with_cart=False
    )
    fake_resend.fail_with(503, "application_error")
    payload = checkout_completed(order)
    headers = {
        "Content-Type": "application/json",
        "Stripe-Signature": sign(payload, WEBHOOK_SECRET),
    }
    response = shop.test_client().post("/webhooks/stripe", data=payload, headers=headers)
    assert response.get_json()["outcome"] == "applied"
    [confirmation] = sent_emails(shop, "shopper@example.com")

    with time_machine.travel(utcnow(), tick=False) as traveller:
        while utcnow() < confirmation.created_at + timedelta(hours=3):
            assert "Emails: 0 sent, 1 to retry, 0 failed." in send_pending(shop)
            [confirmation] = sent_emails(shop, "shopper@example.com")
            traveller.move_to(confirmation.next_attempt_at)
        fake_resend.succeed()
        assert "Emails: 1 sent, 0 to retry, 0 failed." in send_pending(shop)

    [confirmation] = sent_emails(shop)
    assert confirmation.status is OutboxStatus.SENT
    assert confirmation.attempts == len(fake_resend.requests) == 9
    assert set(fake_resend.keys()) == {idempotency_key(confirmation.id, confirmation.created_at)}
    assert fake_resend.emails_sent == 1
    assert order["number"] in fake_resend.requests[-1].json["subject"]


def test_a_running_worker_delivers_what_a_request_queues_without_being_asked(
    shop, fake_resend, tmp_path
):
    worker = start_emails_command(shop, fake_resend, tmp_path, "worker", "--interval", "0.2")
    try:
        wait_for_output(worker, "Email worker started (resend backend", timeout=30)
        time.sleep(0.5)  # a few idle passes, so the email arrives while the worker waits

        status, _elapsed = register(shop.test_client(), "grace@example.com")
        assert status == 303

        deadline = time.monotonic() + 15
        while fake_resend.emails_sent == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=30)

    assert worker.returncode == 0, output
    assert "SIGTERM received, stopping." in output
    assert "Email worker stopped." in output
    assert_each_email_delivered_once(shop, fake_resend)
    [delivered] = fake_resend.requests
    assert delivered.json["to"] == ["grace@example.com"]
    [email] = sent_emails(shop)
    assert email.claimed_by == f"{socket.gethostname()}:{worker.pid}"


def test_sigterm_lets_send_pending_finish_the_current_email_only(shop, fake_resend, tmp_path):
    """``flask emails send-pending`` (cron's) was simply killed by SIGTERM (a deploy, a
    timer's stop) while Resend was slow: the emails it had claimed waited 10 minutes in
    "sending", a password reset or an order confirmation among them (found by review). Now it
    stops as the worker does: it finishes the email being sent and hands the rest back,
    untried and due, to the next run."""
    fake_resend.hang(seconds=HANG_SECONDS)
    with shop.app_context():
        for n in range(10):
            queue_email(
                db.session,
                to=f"shopper{n}@example.com",
                subject="A test",
                template="test_email",
                context={"name": "Ada"},
            )
        db.session.commit()

    with start_emails_command(shop, fake_resend, tmp_path, "send-pending") as sender:
        try:
            deadline = time.monotonic() + 30
            while not fake_resend.requests and time.monotonic() < deadline:
                time.sleep(0.02)
            assert fake_resend.requests, "send-pending never reached the provider"
            sender.send_signal(signal.SIGTERM)  # the first email held by the provider
            wait_for_output(sender, "SIGTERM received, stopping.", timeout=10)
            fake_resend.release()
            output, _ = sender.communicate(timeout=30)
        finally:
            if sender.poll() is None:
                sender.kill()

    assert sender.returncode == 0, output
    assert "Emails: 1 sent, 0 to retry, 0 failed, 9 handed back." in output
    first, *unsent = sent_emails(shop)
    assert first.status is OutboxStatus.SENT
    assert {(e.status, e.attempts, e.tries_began_at) for e in unsent} == {
        (OutboxStatus.PENDING, 0, None)
    }
    assert all(e.next_attempt_at <= utcnow() for e in unsent)  # due at once, not in 10 minutes
    assert "9 sent" in send_pending(shop)  # the next run
    assert_each_email_delivered_once(shop, fake_resend)


def start_emails_command(
    application: Flask, fake_resend: FakeResend, tmp_path: Path, *command: str
) -> subprocess.Popen:
    """``flask emails <command>`` in its own process, on the test database and the stand-in."""
    env = {
        **os.environ,
        "FLASK_APP": "wsgi",
        "ELYSIUM_ENV": "testing",
        "ELYSIUM_INSTANCE_PATH": str(tmp_path),
        "SECRET_KEY": "test-secret-key-not-for-production",
        "DATABASE_URL": application.config["SQLALCHEMY_DATABASE_URI"],
        "EMAIL_BACKEND": "resend",
        "RESEND_BASE_URL": fake_resend.url,
        "RESEND_API_KEY": fake_resend.api_key,
        "EMAIL_TIMEOUT_SECONDS": str(PROVIDER_TIMEOUT_SECONDS),
        "PYTHONUNBUFFERED": "1",
    }
    return subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "flask", "emails", *command],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for_output(process: subprocess.Popen, text: str, *, timeout: float) -> None:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], deadline - time.monotonic())
        line = process.stdout.readline() if ready else ""
        seen.append(line)
        if text in line:
            return
        if not line:
            break
    pytest.fail(f"the command never said {text!r}: {''.join(seen)!r}")


def test_a_reset_for_a_known_and_an_unknown_address_answers_alike_and_at_once(shop, fake_resend):
    """No outside call in either case, so neither the answer nor its time tells them apart."""
    with shop.app_context():
        create_user("ada@example.com")
    fake_resend.hang(seconds=HANG_SECONDS)
    client = shop.test_client()
    answers = {}
    for email in ("ada@example.com", "nobody@example.com"):
        client.get("/auth/forgot")
        started = time.monotonic()
        response = client.post(
            "/auth/forgot", data={"csrf_token": client.csrf_token, "email": email}
        )
        answers[email] = (response.status_code, response.location, time.monotonic() - started)

    assert {(status, location) for status, location, _ in answers.values()} == {
        (303, "/auth/check-inbox")
    }
    assert all(elapsed < 1.0 for _, _, elapsed in answers.values()), answers
    assert fake_resend.requests == []
    assert len(sent_emails(shop, "ada@example.com")) == 1
    assert sent_emails(shop, "nobody@example.com") == []
