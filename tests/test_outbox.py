"""The email outbox: queued in the unit of work, sent by the worker, retried, never twice."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from flask import Flask
from jinja2 import TemplateNotFound
from sqlalchemy import func, select, update

from elysium.extensions import db
from elysium.models import OutboxEmail, OutboxStatus
from elysium.models.types import utcnow
from elysium.services.outbox import (
    RETRY_MAX_DELAY,
    idempotency_key,
    queue_email,
    retry_delay,
    send_pending,
)
from tests.conftest import make_app
from tests.support.resend_server import FakeResend, running_fake_resend

SHOPPER = "ada@example.com"


@pytest.fixture
def fake_resend() -> Iterator[FakeResend]:
    with running_fake_resend() as fake:
        yield fake


@pytest.fixture
def make_outbox_app(app: Flask) -> Iterator[Callable[..., Flask]]:
    """Apps on the test database with other settings and a few test routes."""
    built: list[Flask] = []

    def build(**overrides) -> Flask:
        application = make_app(app.config["SQLALCHEMY_DATABASE_URI"], **overrides)
        add_test_routes(application)
        built.append(application)
        return application

    yield build
    for application in built:
        with application.app_context():
            db.engine.dispose()


@pytest.fixture
def console_app(make_outbox_app) -> Flask:
    return make_outbox_app()


@pytest.fixture
def resend_app(make_outbox_app, fake_resend: FakeResend) -> Flask:
    return make_outbox_app(
        EMAIL_BACKEND="resend",
        RESEND_BASE_URL=fake_resend.url,
        RESEND_API_KEY=fake_resend.api_key,
        EMAIL_TIMEOUT_SECONDS=1,
        EMAIL_MAX_ATTEMPTS=4,
    )


def add_test_routes(application: Flask) -> None:
    """Stand-ins for views that queue an email as part of their unit of work."""

    @application.get("/_test/queue")
    def queue_and_commit() -> str:
        queue_test_email()
        db.session.commit()
        return "queued"

    @application.get("/_test/queue-then-fail")
    def queue_then_roll_back() -> str:
        queue_test_email()
        db.session.rollback()
        db.session.commit()
        return "rolled back"


def queue_test_email(to: str = SHOPPER, **kwargs) -> OutboxEmail:
    kwargs.setdefault("context", {"name": "Ada"})
    return queue_email(db.session, to=to, subject="A test", template="test_email", **kwargs)


def queue_and_commit(count: int) -> list[int]:
    """Commit ``count`` emails, as requests do, for a sender to find."""
    ids = [queue_test_email(to=f"shopper{n}@example.com").id for n in range(count)]
    db.session.commit()
    return ids


def rows() -> list[OutboxEmail]:
    db.session.expire_all()
    return list(db.session.scalars(select(OutboxEmail).order_by(OutboxEmail.id)))


def make_due() -> None:
    db.session.execute(update(OutboxEmail).values(next_attempt_at=utcnow() - timedelta(seconds=1)))
    db.session.commit()


def test_a_request_only_queues_its_email_and_the_worker_prints_it(console_app, capsys):
    response = console_app.test_client().get("/_test/queue")

    assert response.status_code == 200
    assert "Subject:" not in capsys.readouterr().out
    with console_app.app_context():
        [email] = rows()
        assert email.status is OutboxStatus.PENDING
        assert email.attempts == 0

    result = console_app.test_cli_runner().invoke(args=["emails", "worker", "--once"])

    assert result.exit_code == 0, result.output
    assert f"To: {SHOPPER}" in result.output
    assert "Subject: A test" in result.output
    assert "Hello Ada," in result.output
    assert "Emails: 1 sent, 0 to retry, 0 failed." in result.output
    with console_app.app_context():
        [email] = rows()
        assert email.status is OutboxStatus.SENT
        assert email.sent_at is not None
        assert email.attempts == 1
        assert email.claimed_by


def test_a_request_queues_its_email_even_when_the_email_settings_are_broken(make_outbox_app):
    application = make_outbox_app(EMAIL_BACKEND="resend", RESEND_API_KEY=None)

    response = application.test_client().get("/_test/queue")

    assert response.status_code == 200
    with application.app_context():
        [email] = rows()
        assert email.status is OutboxStatus.PENDING
        assert email.attempts == 0


def test_email_from_a_rolled_back_transaction_is_never_sent(console_app, capsys):
    response = console_app.test_client().get("/_test/queue-then-fail")

    assert response.status_code == 200
    with console_app.app_context():
        assert rows() == []
        assert send_pending(db.session).total == 0
    assert "Subject:" not in capsys.readouterr().out


def test_a_released_savepoint_leaves_the_email_unfinished_until_the_outer_commit(console_app):
    with console_app.app_context():
        with db.session.begin_nested():
            queue_test_email()
        with pytest.raises(RuntimeError, match="commit or roll back"):
            send_pending(db.session)
        db.session.commit()
        assert send_pending(db.session).sent == 1


def test_closing_the_session_without_commit_forgets_the_email(console_app):
    with console_app.app_context():
        queue_test_email()
        db.session.close()
        assert send_pending(db.session).total == 0
        assert rows() == []


def test_the_worker_logs_an_email_by_its_id_never_its_address(resend_app, fake_resend, caplog):
    """The address is in the outbox row, which closing the account erases; a log kept for
    months must not hold it."""
    with resend_app.app_context(), caplog.at_level(logging.INFO):
        sent = queue_test_email().id
        db.session.commit()
        send_pending(db.session)
        fake_resend.fail_with(422, "validation_error", "Invalid `to` field.")
        refused = queue_test_email(to="grace@example.com").id
        db.session.commit()
        send_pending(db.session)

    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert f"Email {sent} sent" in logged
    assert f"Email {refused} failed for good" in logged
    assert SHOPPER not in logged
    assert "grace@example.com" not in logged


def test_resend_receives_the_email_with_its_key_and_records_the_message_id(resend_app, fake_resend):
    with resend_app.app_context():
        email = queue_test_email(context={"name": "Ada <script>"})
        db.session.commit()
        expected_key = idempotency_key(email.id, email.created_at)
        report = send_pending(db.session)
        [email] = rows()

    assert report.sent == 1
    assert email.status is OutboxStatus.SENT
    assert email.provider_message_id == "fake-0001"
    assert email.last_error == ""
    [request] = fake_resend.requests
    assert request.path == "/emails"
    assert request.headers["Authorization"] == "Bearer re_test_key"
    assert request.idempotency_key == expected_key
    assert expected_key.startswith(f"elysium-outbox-{email.id}-")
    assert request.json["from"] == resend_app.config["EMAIL_FROM"]
    assert request.json["to"] == [SHOPPER]
    assert request.json["subject"] == "A test"
    assert "Hello Ada &lt;script&gt;," in request.json["html"]
    assert "Hello Ada <script>," in request.json["text"]


@pytest.mark.parametrize(
    ("status", "name"),
    [(400, "validation_error"), (403, "invalid_from_address"), (422, "validation_error")],
)
def test_a_refused_email_fails_at_once_and_keeps_the_error(resend_app, fake_resend, status, name):
    fake_resend.fail_with(status, name, "Invalid `to` field.")
    with resend_app.app_context():
        queue_test_email()
        db.session.commit()
        send_pending(db.session)
        [email] = rows()
        assert email.status is OutboxStatus.FAILED
        assert email.attempts == 1
        assert f"Resend {status} {name}: Invalid `to` field." in email.last_error

        make_due()
        assert send_pending(db.session).total == 0
    assert len(fake_resend.requests) == 1


@pytest.mark.parametrize(
    ("status", "name"),
    [
        (500, "internal_server_error"),
        (503, "application_error"),
        (429, "rate_limit_exceeded"),
        (409, "concurrent_idempotent_requests"),
    ],
)
def test_a_provider_failure_is_retried_later_and_then_delivered(
    resend_app, fake_resend, status, name
):
    fake_resend.fail_with(status, name)
    with resend_app.app_context():
        queue_test_email()
        db.session.commit()
        before = utcnow()
        report = send_pending(db.session)
        [email] = rows()
        assert report.retried == 1
        assert email.status is OutboxStatus.PENDING
        assert email.attempts == 1
        assert f"Resend {status}" in email.last_error
        assert before + timedelta(seconds=55) < email.next_attempt_at
        assert email.next_attempt_at < before + timedelta(seconds=65)

        fake_resend.succeed()
        assert send_pending(db.session).total == 0, "not due yet"
        make_due()
        report = send_pending(db.session)
        [email] = rows()

    assert (report.sent, report.retried, report.failed) == (1, 0, 0)
    assert email.status is OutboxStatus.SENT
    assert email.attempts == 2
    assert email.provider_message_id == "fake-0001"
    assert len(set(fake_resend.keys())) == 1
    assert fake_resend.emails_sent == 1


def test_a_provider_that_does_not_answer_times_out_and_the_email_waits(resend_app, fake_resend):
    fake_resend.hang(seconds=5)
    with resend_app.app_context():
        queue_test_email()
        db.session.commit()
        started = time.monotonic()
        report = send_pending(db.session)
        elapsed = time.monotonic() - started
        [email] = rows()

        assert elapsed < 3
        assert report.retried == 1
        assert email.status is OutboxStatus.PENDING
        assert "timed out" in email.last_error
        assert email.next_attempt_at > utcnow()

        fake_resend.succeed()
        make_due()
        assert send_pending(db.session).sent == 1
        assert rows()[0].status is OutboxStatus.SENT
    assert fake_resend.emails_sent == 1


def test_an_unreachable_provider_is_retried(make_outbox_app):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    application = make_outbox_app(
        EMAIL_BACKEND="resend",
        RESEND_BASE_URL=f"http://127.0.0.1:{closed_port}",
        RESEND_API_KEY="re_test_key",
        EMAIL_TIMEOUT_SECONDS=1,
    )
    with application.app_context():
        queue_and_commit(1)
        assert send_pending(db.session).retried == 1
        [email] = rows()
        assert email.status is OutboxStatus.PENDING
        assert "unreachable" in email.last_error


def test_back_off_doubles_and_sending_stops_at_the_attempt_cap(resend_app, fake_resend):
    fake_resend.fail_with(503, "application_error")
    delays = []
    with resend_app.app_context():
        queue_and_commit(1)
        for _ in range(4):
            before = utcnow()
            send_pending(db.session)
            email = rows()[0]
            delays.append(round((email.next_attempt_at - before).total_seconds() / 60))
            make_due()
        email = rows()[0]
        assert email.status is OutboxStatus.FAILED
        assert email.attempts == 4
        assert "gave up after 4 attempts" in email.last_error

        make_due()
        assert send_pending(db.session).total == 0
    assert delays[:3] == [1, 2, 4]
    assert len(fake_resend.requests) == 4


def test_retry_delay_is_capped_at_a_few_hours():
    assert [retry_delay(n) for n in (1, 2, 3, 4)] == [
        timedelta(minutes=1),
        timedelta(minutes=2),
        timedelta(minutes=4),
        timedelta(minutes=8),
    ]
    assert retry_delay(12) == RETRY_MAX_DELAY == timedelta(hours=4)
    assert retry_delay(10_000) == RETRY_MAX_DELAY


def test_lowering_the_attempt_cap_fails_emails_that_are_over_it(resend_app, fake_resend):
    with resend_app.app_context():
        queue_and_commit(1)
        db.session.execute(update(OutboxEmail).values(attempts=4, last_error="Resend 503"))
        db.session.commit()
        assert send_pending(db.session).failed == 1
        email = rows()[0]
        assert email.status is OutboxStatus.FAILED
        assert email.last_error == "Resend 503"
    assert fake_resend.requests == []


def test_senders_running_at_once_never_send_an_email_twice(resend_app, fake_resend):
    fake_resend.succeed(delay_seconds=0.01)
    with resend_app.app_context():
        ids = queue_and_commit(24)
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def sender() -> None:
        try:
            with resend_app.app_context():
                start.wait()
                for _ in range(50):
                    send_pending(db.session, limit=3)
                    due = db.session.scalar(
                        select(func.count()).where(OutboxEmail.status != OutboxStatus.SENT)
                    )
                    db.session.rollback()
                    if not due:
                        break
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=sender) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    keys = fake_resend.keys()
    assert len(keys) == len(ids) == len(set(keys))
    with resend_app.app_context():
        assert {email.status for email in rows()} == {OutboxStatus.SENT}


def test_an_email_abandoned_by_a_crashed_sender_is_reclaimed_but_not_sent_twice(
    resend_app, fake_resend
):
    with resend_app.app_context():
        queue_and_commit(1)
        send_pending(db.session)
        first_id = rows()[0].provider_message_id
        # As if a sender had posted the email, then died before recording the outcome.
        db.session.execute(
            update(OutboxEmail).values(
                status=OutboxStatus.SENDING,
                claimed_at=utcnow() - timedelta(hours=1),
                claimed_by="crashed-host:123",
                provider_message_id=None,
                sent_at=None,
            )
        )
        db.session.commit()

        assert send_pending(db.session).sent == 1
        email = rows()[0]
        assert email.status is OutboxStatus.SENT
        assert email.provider_message_id == first_id
        assert email.attempts == 2
    assert len(fake_resend.requests) == 2
    assert fake_resend.emails_sent == 1


def test_a_fresh_claim_by_another_sender_is_left_alone(resend_app, fake_resend):
    with resend_app.app_context():
        queue_and_commit(1)
        db.session.execute(
            update(OutboxEmail).values(
                status=OutboxStatus.SENDING, claimed_at=utcnow(), claimed_by="busy-host:1"
            )
        )
        db.session.commit()
        assert send_pending(db.session).total == 0
    assert fake_resend.requests == []


def test_a_sender_that_died_on_the_last_attempt_leaves_the_email_failed(resend_app, fake_resend):
    with resend_app.app_context():
        queue_and_commit(1)
        db.session.execute(
            update(OutboxEmail).values(
                status=OutboxStatus.SENDING,
                attempts=4,
                claimed_at=utcnow() - timedelta(hours=1),
                claimed_by="crashed-host:123",
            )
        )
        db.session.commit()
        assert send_pending(db.session).failed == 1
        email = rows()[0]
        assert email.status is OutboxStatus.FAILED
        assert "stopped during the last allowed attempt" in email.last_error
    assert fake_resend.requests == []


def test_a_dedupe_key_queues_one_email_however_often_it_is_asked_for(console_app):
    with console_app.app_context():
        first = queue_test_email(dedupe_key="order-1-confirmation")
        again = queue_test_email(dedupe_key="order-1-confirmation")
        assert again is first
        db.session.commit()
        send_pending(db.session)
        later = queue_test_email(dedupe_key="order-1-confirmation")
        assert later.id == first.id
        assert later.status is OutboxStatus.SENT
        queue_test_email()
        queue_test_email()
        db.session.commit()
        assert len(rows()) == 3


def test_concurrent_transactions_with_one_dedupe_key_end_up_with_one_email(console_app):
    results: dict[str, int] = {}
    first_has_queued = threading.Event()
    errors: list[BaseException] = []

    def second_transaction() -> None:
        try:
            with console_app.app_context():
                first_has_queued.wait(5)
                results["second"] = queue_test_email(dedupe_key="lead-7").id
                db.session.commit()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=second_transaction)
    thread.start()
    with console_app.app_context():
        results["first"] = queue_test_email(dedupe_key="lead-7").id
        first_has_queued.set()
        time.sleep(0.2)  # the second INSERT is now waiting for this transaction
        db.session.commit()
    thread.join(timeout=10)

    assert errors == []
    assert results["first"] == results["second"]
    with console_app.app_context():
        assert len(rows()) == 1


def test_both_bodies_use_the_house_layouts(console_app):
    with console_app.app_context():
        email = queue_test_email(context={"name": "Ada", "note": "Fish & chips"})
        assert email.body_html.startswith("<!doctype html>")
        assert "ELYSIUM" in email.body_html
        assert "<title>A test</title>" in email.body_html
        assert "Fish &amp; chips" in email.body_html
        assert "Hatton Garden" in email.body_html
        assert "<table" not in email.body_html
        assert email.body_text.startswith("E L Y S I U M")
        assert "Fish & chips" in email.body_text
        assert "Hatton Garden" in email.body_text
        assert "<" not in email.body_text
        db.session.rollback()


def test_queueing_needs_both_templates_and_a_real_address(console_app):
    with console_app.app_context():
        with pytest.raises(TemplateNotFound):
            queue_email(db.session, to=SHOPPER, subject="x", template="no_such_email", context={})
        with pytest.raises(ValueError, match="not an email address"):
            queue_test_email(to="ada@example.com\r\nBcc: eve@example.com")
        db.session.rollback()


def test_send_pending_command_sends_what_is_due_and_says_how_many(console_app):
    with console_app.app_context():
        queue_and_commit(2)
    result = console_app.test_cli_runner().invoke(args=["emails", "send-pending"])

    assert result.exit_code == 0, result.output
    assert "Emails: 2 sent, 0 to retry, 0 failed." in result.output
    with console_app.app_context():
        assert {email.status for email in rows()} == {OutboxStatus.SENT}


def test_send_pending_command_reports_failures(resend_app, fake_resend):
    fake_resend.fail_with(500)
    with resend_app.app_context():
        queue_and_commit(1)
    result = resend_app.test_cli_runner().invoke(args=["emails", "send-pending"])

    assert result.exit_code == 0, result.output
    assert "Emails: 0 sent, 1 to retry, 0 failed." in result.output


def test_email_commands_refuse_to_run_without_an_api_key(make_outbox_app):
    application = make_outbox_app(EMAIL_BACKEND="resend", RESEND_API_KEY=None)
    result = application.test_cli_runner().invoke(args=["emails", "send-pending"])

    assert result.exit_code == 1
    assert "RESEND_API_KEY is not set" in result.output


def test_worker_once_makes_one_pass(console_app):
    with console_app.app_context():
        queue_and_commit(3)
    result = console_app.test_cli_runner().invoke(args=["emails", "worker", "--once"])

    assert result.exit_code == 0, result.output
    assert "Emails: 3 sent, 0 to retry, 0 failed." in result.output
    assert "Email worker stopped." in result.output


def test_worker_keeps_going_until_sigterm(console_app):
    previous = signal.getsignal(signal.SIGTERM)
    with console_app.app_context():
        queue_and_commit(1)
    timer = threading.Timer(0.5, os.kill, args=(os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        result = console_app.test_cli_runner().invoke(
            args=["emails", "worker", "--interval", "0.05"]
        )
    finally:
        timer.cancel()

    assert result.exit_code == 0, result.output
    assert "SIGTERM received, stopping." in result.output
    assert "Email worker stopped." in result.output
    assert signal.getsignal(signal.SIGTERM) is previous
    with console_app.app_context():
        assert rows()[0].status is OutboxStatus.SENT


def test_sending_refuses_to_commit_unfinished_work(console_app):
    with console_app.app_context():
        queue_test_email()
        with pytest.raises(RuntimeError, match="commit or roll back"):
            send_pending(db.session)
        db.session.rollback()
        assert rows() == []
