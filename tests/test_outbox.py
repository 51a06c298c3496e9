"""The email outbox: queued in the unit of work, sent by the worker, retried, never twice."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from email.utils import format_datetime
from typing import Any

import pytest
import time_machine
from flask import Flask
from jinja2 import TemplateNotFound
from sqlalchemy import func, select, update
from werkzeug.serving import make_server

from elysium.config import ConfigurationError, settings_from_environment
from elysium.extensions import db
from elysium.models import OutboxEmail, OutboxStatus
from elysium.models.types import utcnow
from elysium.services.outbox import (
    REFUSED_MAX_WAIT,
    REFUSED_WAIT,
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
    )


@contextmanager
def serving_with_headers(fake: FakeResend, headers: dict[str, str]) -> Iterator[str]:
    """``fake`` on a port of its own whose every answer also carries ``headers`` (such as
    Resend's ``Retry-After``); yields the URL for ``RESEND_BASE_URL``."""

    def answer(environ: dict[str, Any], start_response: Any) -> Any:
        def start_with_headers(status: str, response_headers: list, exc_info: Any = None) -> Any:
            return start_response(status, [*response_headers, *headers.items()], exc_info)

        return fake.wsgi(environ, start_with_headers)

    server = make_server("127.0.0.1", 0, answer, threaded=True)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


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
        assert email.tries_began_at is None
        report = send_pending(db.session)
        [email] = rows()
        expected_key = idempotency_key(email.id, email.created_at)

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
    [(400, "validation_error"), (422, "invalid_from_address"), (422, "validation_error")],
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
    fake_resend.hang(seconds=60)
    with resend_app.app_context():
        queue_test_email()
        db.session.commit()
        started = time.monotonic()
        report = send_pending(db.session)
        elapsed = time.monotonic() - started
        [email] = rows()

        # The timeout is a second; the provider would keep it a minute. A busy machine (CI
        # beside other work) once took 3.4 s to give up.
        assert elapsed < 15
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


def test_an_email_failing_for_three_hours_is_still_retried_and_sent_once_the_provider_recovers(
    resend_app, fake_resend
):
    fake_resend.fail_with(503, "application_error")
    delays = []
    with resend_app.app_context(), time_machine.travel(utcnow(), tick=False) as traveller:
        queue_and_commit(1)
        queued_at = rows()[0].created_at
        while utcnow() < queued_at + timedelta(hours=3):
            before = utcnow()
            assert send_pending(db.session).retried == 1
            email = rows()[0]
            assert email.status is OutboxStatus.PENDING
            delays.append(email.next_attempt_at - before)
            traveller.move_to(email.next_attempt_at)

        fake_resend.succeed()
        report = send_pending(db.session)
        email = rows()[0]

    assert (report.sent, report.retried, report.failed) == (1, 0, 0)
    assert email.status is OutboxStatus.SENT
    assert email.attempts == len(delays) + 1 == 9
    assert [delay // timedelta(minutes=1) for delay in delays[:4]] == [1, 2, 4, 8]
    assert len(set(fake_resend.keys())) == 1
    assert fake_resend.emails_sent == 1


def test_an_email_still_failing_when_too_old_to_retry_fails_for_good(resend_app, fake_resend):
    """The last try comes just before ``EMAIL_GIVE_UP_AFTER_HOURS`` (23 by default), inside
    the 24 hours in which Resend would answer a repeat with an email it did take."""
    fake_resend.fail_with(503, "application_error")
    tried_at = []
    with resend_app.app_context(), time_machine.travel(utcnow(), tick=False) as traveller:
        queue_and_commit(1)
        queued_at = rows()[0].created_at
        while (email := rows()[0]).status is OutboxStatus.PENDING:
            traveller.move_to(email.next_attempt_at)
            tried_at.append(utcnow() - queued_at)
            send_pending(db.session)

        traveller.move_to(queued_at + timedelta(days=2))
        assert send_pending(db.session).total == 0
        email = rows()[0]

    assert email.status is OutboxStatus.FAILED
    assert email.attempts == len(tried_at) == 14
    assert "Resend 503" in email.last_error
    assert "(gave up after 14 attempts in 23 hours)" in email.last_error
    assert tried_at[-1] == timedelta(hours=23) - timedelta(minutes=1)
    assert tried_at[-2] < timedelta(hours=21)
    assert len(fake_resend.requests) == 14


def test_retry_delay_is_capped_at_a_few_hours():
    assert [retry_delay(n) for n in (1, 2, 3, 4)] == [
        timedelta(minutes=1),
        timedelta(minutes=2),
        timedelta(minutes=4),
        timedelta(minutes=8),
    ]
    assert retry_delay(12) == RETRY_MAX_DELAY == timedelta(hours=4)
    assert retry_delay(10_000) == RETRY_MAX_DELAY


def test_after_a_stopped_worker_an_email_tried_before_fails_and_one_never_tried_is_sent(
    resend_app, fake_resend
):
    """Two days without a worker: a retry could come after Resend forgot the first try's key,
    so it is not made; an email never tried can't have been sent, so it goes out late."""
    with resend_app.app_context():
        tried, never_tried = queue_and_commit(2)
        two_days_ago = utcnow() - timedelta(days=2)
        db.session.execute(update(OutboxEmail).values(created_at=two_days_ago))
        db.session.execute(
            update(OutboxEmail)
            .where(OutboxEmail.id == tried)
            .values(
                attempts=2,
                last_error="Resend 503",
                next_attempt_at=two_days_ago,
                tries_began_at=two_days_ago,
            )
        )
        db.session.commit()

        report = send_pending(db.session)
        emails = {email.id: email for email in rows()}

    assert (report.sent, report.failed) == (1, 1)
    assert emails[tried].status is OutboxStatus.FAILED
    assert emails[tried].last_error == (
        "Resend 503 (its first try was over 23 hours ago: not tried again under its key)"
    )
    assert emails[never_tried].status is OutboxStatus.SENT
    [request] = fake_resend.requests
    assert request.json["to"] == [emails[never_tried].to_address]


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


def test_an_email_queued_days_ago_and_never_tried_gets_its_day_of_retries(resend_app, fake_resend):
    """Its tries (and its key's day at Resend) begin with the first: a worker stopped for two
    days doesn't cost the late email its retries."""
    fake_resend.fail_with(503, "application_error")
    with resend_app.app_context():
        queue_and_commit(1)
        db.session.execute(update(OutboxEmail).values(created_at=utcnow() - timedelta(days=2)))
        db.session.commit()

        report = send_pending(db.session)
        [email] = rows()

    assert (report.retried, report.failed) == (1, 0)
    assert email.status is OutboxStatus.PENDING
    assert utcnow() - email.tries_began_at < timedelta(minutes=1)
    assert fake_resend.keys() == [idempotency_key(email.id, email.created_at)]


def test_a_sender_that_died_on_an_email_too_old_to_retry_leaves_it_failed(resend_app, fake_resend):
    with resend_app.app_context():
        queue_and_commit(1)
        db.session.execute(
            update(OutboxEmail).values(
                status=OutboxStatus.SENDING,
                attempts=3,
                tries_began_at=utcnow() - timedelta(hours=24),
                claimed_at=utcnow() - timedelta(hours=1),
                claimed_by="crashed-host:123",
            )
        )
        db.session.commit()
        assert send_pending(db.session).failed == 1
        email = rows()[0]
        assert email.status is OutboxStatus.FAILED
        assert "stopped during a try" in email.last_error
    assert fake_resend.requests == []


@pytest.mark.parametrize(
    ("retry_after", "wait"),
    [
        pytest.param(lambda: "120", timedelta(seconds=120), id="seconds"),
        pytest.param(
            lambda: format_datetime(utcnow() + timedelta(minutes=5), usegmt=True),
            timedelta(minutes=5),
            id="http-date",
        ),
        pytest.param(lambda: "86400", REFUSED_MAX_WAIT, id="a-day-capped"),
        pytest.param(lambda: None, REFUSED_WAIT, id="none"),
    ],
)
def test_a_rate_limit_holds_the_emails_without_spending_an_attempt_until_retry_after(
    make_outbox_app, fake_resend, retry_after, wait
):
    fake_resend.fail_with(429, "rate_limit_exceeded", "Too many requests.")
    header = retry_after()
    with serving_with_headers(fake_resend, {"Retry-After": header} if header else {}) as url:
        application = make_outbox_app(
            EMAIL_BACKEND="resend",
            RESEND_BASE_URL=url,
            RESEND_API_KEY=fake_resend.api_key,
            EMAIL_TIMEOUT_SECONDS=1,
        )
        with application.app_context():
            queue_and_commit(2)
            before = utcnow()
            report = send_pending(db.session)
            emails = rows()

            assert len(fake_resend.requests) == 1, "the run stopped at the first 429"
            assert [email.status for email in emails] == [OutboxStatus.PENDING] * 2
            assert [email.attempts for email in emails] == [0, 0]
            assert "Resend 429 rate_limit_exceeded: Too many requests." in emails[0].last_error
            assert emails[1].last_error == ""
            for email in emails:
                assert abs(email.next_attempt_at - (before + wait)) < timedelta(seconds=5)
            assert (report.sent, report.retried, report.failed, report.held) == (0, 0, 0, 2)
            assert str(report) == "0 sent, 0 to retry, 0 failed, 2 held back"

            assert send_pending(db.session).total == 0, "not due before Retry-After"
            fake_resend.succeed()
            with time_machine.travel(before + wait + timedelta(seconds=5)):
                report = send_pending(db.session)
            emails = rows()

    assert report.sent == 2
    assert [email.attempts for email in emails] == [1, 1]
    assert len(fake_resend.requests) == 3
    assert fake_resend.emails_sent == 2


def test_a_wait_asked_for_never_makes_an_email_tried_before_miss_its_last_try(
    make_outbox_app, fake_resend
):
    """A 429 asking an hour's wait came 22 hours after an email's first (timed-out) try: it
    still gets its last try before its key's day is over, rather than failing unasked."""
    fake_resend.fail_with(429, "rate_limit_exceeded", "Too many requests.")
    with serving_with_headers(fake_resend, {"Retry-After": "3600"}) as url:
        application = make_outbox_app(
            EMAIL_BACKEND="resend",
            RESEND_BASE_URL=url,
            RESEND_API_KEY=fake_resend.api_key,
            EMAIL_TIMEOUT_SECONDS=1,
        )
        with application.app_context(), time_machine.travel(utcnow(), tick=False) as traveller:
            first_try = utcnow() - timedelta(hours=22)
            last_try = first_try + timedelta(hours=23) - timedelta(minutes=1)
            tried, new = queue_and_commit(2)
            db.session.execute(
                update(OutboxEmail)
                .where(OutboxEmail.id == tried)
                .values(
                    attempts=3,
                    tries_began_at=first_try,
                    last_error="Resend unreachable: timed out",
                    next_attempt_at=last_try,
                )
            )
            db.session.commit()

            assert send_pending(db.session).held == 1  # the new email, turned away
            assert {email.id: email.next_attempt_at for email in rows()}[tried] == last_try

            fake_resend.succeed()
            traveller.move_to(last_try)
            report = send_pending(db.session)
            emails = {email.id: email for email in rows()}

    assert report.sent == 1
    assert emails[tried].status is OutboxStatus.SENT
    assert emails[new].status is OutboxStatus.PENDING


def test_an_email_a_release_before_tried_is_retried_under_the_same_key(resend_app, fake_resend):
    """During a deploy the release before this one and this one send side by side: an email
    the other tried (its key made from when it was queued, no first try recorded) is tried
    again under that key, so Resend answers with the email it may have taken."""
    with resend_app.app_context():
        [email_id] = queue_and_commit(1)
        db.session.execute(
            update(OutboxEmail).values(attempts=1, last_error="Resend unreachable: timed out")
        )
        db.session.commit()
        send_pending(db.session)
        [email] = rows()

    assert email.status is OutboxStatus.SENT
    assert fake_resend.keys() == [idempotency_key(email_id, email.created_at)]


@pytest.mark.parametrize(
    ("status", "name"), [(401, "restricted_api_key"), (403, "invalid_api_key")]
)
def test_a_refused_api_key_stops_the_run_and_fails_nothing(
    resend_app, fake_resend, caplog, status, name
):
    fake_resend.fail_with(status, name, "API key is invalid")
    with resend_app.app_context(), caplog.at_level(logging.INFO):
        queue_and_commit(12)  # more than one batch
        before = utcnow()
        report = send_pending(db.session)
        assert send_pending(db.session).total == 0, "the outbox waits a while"
        emails = rows()

    assert (report.sent, report.retried, report.failed) == (0, 0, 0)
    assert report.held == 10  # the batch it was sending
    assert len(fake_resend.requests) == 1
    assert {email.status for email in emails} == {OutboxStatus.PENDING}
    assert {email.attempts for email in emails} == {0}
    assert f"Resend {status} {name}: API key is invalid" in emails[0].last_error
    assert {email.last_error for email in emails[1:]} == {""}
    for email in emails:  # the rest of the outbox too: every email would meet the same answer
        assert abs(email.next_attempt_at - (before + REFUSED_WAIT)) < timedelta(seconds=5)
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    [error] = errors
    assert "RESEND_API_KEY" in error.getMessage()


def test_an_email_held_back_by_a_revoked_key_for_days_is_sent_once_the_key_works(
    resend_app, fake_resend
):
    fake_resend.api_key = "re_the_new_key"  # Resend no longer knows the shop's key: 401
    with resend_app.app_context(), time_machine.travel(utcnow(), tick=False) as traveller:
        queue_and_commit(1)
        for _day in range(3):
            send_pending(db.session)
            assert rows()[0].status is OutboxStatus.PENDING
            traveller.shift(timedelta(days=1))
        email = rows()[0]
        assert email.status is OutboxStatus.PENDING
        assert "Resend 401 missing_api_key" in email.last_error

        fake_resend.api_key = resend_app.config["RESEND_API_KEY"]
        assert send_pending(db.session).sent == 1
        email = rows()[0]

    assert email.status is OutboxStatus.SENT
    assert email.attempts == 1
    assert len(fake_resend.requests) == 4
    assert fake_resend.emails_sent == 1


def retry_failed(application: Flask, *options: str) -> str:
    result = application.test_cli_runner().invoke(args=["emails", "retry-failed", *options])
    assert result.exit_code == 0, result.output
    return result.output


def test_retry_failed_sends_a_failed_email_on_the_next_pass_and_only_once(resend_app, fake_resend):
    fake_resend.fail_with(422, "validation_error", "Invalid `to` field.")
    with resend_app.app_context():
        chosen, other = queue_and_commit(2)
        assert send_pending(db.session).failed == 2
    fake_resend.succeed()

    output = retry_failed(resend_app, "--id", str(chosen), "--id", "999999")

    assert "Put back 1 failed email, to be sent on the next pass." in output
    assert "Left as they are (not failed, or withdrawn): 999999." in output
    with resend_app.app_context():
        assert send_pending(db.session).sent == 1
        assert send_pending(db.session).total == 0
        emails = {email.id: email for email in rows()}
        key = idempotency_key(chosen, emails[chosen].created_at)
    assert emails[chosen].status is OutboxStatus.SENT
    assert emails[other].status is OutboxStatus.FAILED
    assert "Put back 0 failed emails" in retry_failed(resend_app, "--id", str(chosen))
    with resend_app.app_context():
        assert send_pending(db.session).total == 0
    assert fake_resend.emails_sent == 1
    assert fake_resend.keys() == [key, idempotency_key(other, emails[other].created_at), key]


def test_retry_failed_sends_an_email_too_old_for_its_key_under_a_new_one(resend_app, fake_resend):
    """Resend forgets a key after 24 hours; a younger email keeps its key, so Resend would
    answer a repeat of one it did take with that email. Both keep when they were queued."""
    fake_resend.fail_with(422, "validation_error", "Invalid `to` field.")
    with resend_app.app_context(), time_machine.travel(utcnow(), tick=False) as traveller:
        [old] = queue_and_commit(1)
        send_pending(db.session)
        traveller.shift(timedelta(days=2))
        [young] = queue_and_commit(1)
        send_pending(db.session)
        queued = {email.id: email.created_at for email in rows()}
        began = {email.id: email.tries_began_at for email in rows()}
        fake_resend.succeed()

        output = retry_failed(resend_app, "--queued-within", "1d")
        assert "Put back 1 failed email, to be sent on the next pass." in output
        traveller.shift(timedelta(minutes=5))
        resent_at = utcnow()
        output = retry_failed(resend_app, "--all")
        assert "Put back 1 failed email, to be sent on the next pass (1 under a new" in output
        assert send_pending(db.session).sent == 2
        emails = {email.id: email for email in rows()}

    assert {email.id: email.created_at for email in emails.values()} == queued
    assert emails[young].tries_began_at == began[young]
    assert emails[young].key_made_at is None
    assert emails[old].tries_began_at == emails[old].key_made_at == resent_at
    sends = fake_resend.keys()[2:]
    assert idempotency_key(young, queued[young]) in sends
    assert idempotency_key(old, queued[old]) not in sends
    assert idempotency_key(old, resent_at) in sends


def test_retry_failed_must_be_told_which(console_app):
    result = console_app.test_cli_runner().invoke(args=["emails", "retry-failed"])

    assert result.exit_code == 2
    assert "Say which failed emails: --all, or --id and/or --queued-within." in result.output


def test_erase_sent_erases_only_what_emails_sent_long_ago_said(console_app):
    """Their bodies go; that each was sent, to whom and when stays (an order's timeline shows
    it, and its key keeps it from being queued and sent again)."""
    with console_app.app_context():
        old_sent, recent_sent, old_failed, old_pending = queue_and_commit(4)
        send_pending(db.session)
        long_ago = utcnow() - timedelta(days=200)
        for email_id, values in [
            (old_sent, {"sent_at": utcnow() - timedelta(days=91)}),
            (recent_sent, {"sent_at": utcnow() - timedelta(days=89)}),
            (old_failed, {"status": OutboxStatus.FAILED, "sent_at": None}),
            (old_pending, {"status": OutboxStatus.PENDING, "sent_at": None, "attempts": 0}),
        ]:
            db.session.execute(
                update(OutboxEmail)
                .where(OutboxEmail.id == email_id)
                .values(created_at=long_ago, **values)
            )
        db.session.commit()

    def erased() -> list[int]:
        with console_app.app_context():
            emails = rows()
            assert [email.id for email in emails] == [
                old_sent,
                recent_sent,
                old_failed,
                old_pending,
            ]
            return [email.id for email in emails if not email.body_text and not email.body_html]

    result = console_app.test_cli_runner().invoke(args=["emails", "erase-sent"])

    assert result.exit_code == 0, result.output
    assert "Erased 1 sent email (sent more than 90d ago)." in result.output
    assert erased() == [old_sent]

    runner = console_app.test_cli_runner()
    result = runner.invoke(args=["emails", "erase-sent", "--older-than", "30d"])

    assert "Erased 1 sent email (sent more than 30d ago)." in result.output
    assert erased() == [old_sent, recent_sent]


@pytest.mark.parametrize("hours", ["0", "24", "72"])
def test_the_give_up_age_must_stay_inside_resends_idempotency_window(hours, tmp_path):
    assert settings_from_environment({}, str(tmp_path))["EMAIL_GIVE_UP_AFTER_HOURS"] == 23
    with pytest.raises(ConfigurationError, match="EMAIL_GIVE_UP_AFTER_HOURS must be between"):
        settings_from_environment({"EMAIL_GIVE_UP_AFTER_HOURS": hours}, str(tmp_path))


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
    """Signed with the house's address as set (``HOUSE_ADDRESS``); every email ended with
    "[house address to come]" before."""
    console_app.config["HOUSE_ADDRESS"] = "ELYSIUM Fine Jewellery Ltd · 1 Hatton Garden, EC1N 8JY"
    with console_app.app_context():
        email = queue_test_email(context={"name": "Ada", "note": "Fish & chips"})
        assert email.body_html.startswith("<!doctype html>")
        assert "ELYSIUM" in email.body_html
        assert "<title>A test</title>" in email.body_html
        assert "Fish &amp; chips" in email.body_html
        assert "1 Hatton Garden, EC1N 8JY" in email.body_html
        assert "[" not in email.body_html
        assert "<table" not in email.body_html
        assert email.body_text.startswith("E L Y S I U M")
        assert "Fish & chips" in email.body_text
        assert "1 Hatton Garden, EC1N 8JY" in email.body_text
        assert "[" not in email.body_text
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


@contextmanager
def sigterm_once(ready: Callable[[], bool]) -> Iterator[list[float]]:
    """SIGTERM to this process (the worker's, run in it) once ``ready()`` says so, at most
    10 s on; yields a list that gets the monotonic time it was sent. The worker may be slow to
    start on a busy machine, so a timer could stop it before it has begun. Should the worker
    have stopped listening already, the signal doesn't end the tests."""
    previous = signal.signal(signal.SIGTERM, lambda _signum, _frame: None)
    sent_at: list[float] = []
    done = threading.Event()

    def wait_then_kill() -> None:
        deadline = time.monotonic() + 10
        while not done.is_set() and not ready() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not done.is_set():
            sent_at.append(time.monotonic())
            os.kill(os.getpid(), signal.SIGTERM)

    killer = threading.Thread(target=wait_then_kill)
    killer.start()
    try:
        yield sent_at
    finally:
        done.set()
        killer.join(15)
        signal.signal(signal.SIGTERM, previous)


def test_worker_keeps_going_until_sigterm(console_app):
    previous = signal.getsignal(signal.SIGTERM)
    with console_app.app_context():
        queue_and_commit(1)

    def sent() -> bool:
        with console_app.app_context():
            return rows()[0].status is OutboxStatus.SENT

    with sigterm_once(sent):
        result = console_app.test_cli_runner().invoke(
            args=["emails", "worker", "--interval", "0.05"]
        )

    assert result.exit_code == 0, result.output
    assert "SIGTERM received, stopping." in result.output
    assert "Email worker stopped." in result.output
    assert signal.getsignal(signal.SIGTERM) is previous
    with console_app.app_context():
        assert rows()[0].status is OutboxStatus.SENT


def test_sigterm_lets_the_worker_finish_the_current_email_only(resend_app, fake_resend):
    """SIGTERM was looked at only between passes: the worker sent the rest of its batch of
    ten first, which with Resend hanging (5 s to connect, 5 to read, each) outlasted the
    process manager's patience; killed, the emails it had claimed waited 10 minutes in
    "sending", counted as tried though never sent (found by review). Now it finishes the
    email being sent and hands the rest back, untried and due, to the next sender."""
    fake_resend.succeed(delay_seconds=0.5)
    with resend_app.app_context():
        queue_and_commit(10)

    with sigterm_once(lambda: bool(fake_resend.requests)) as sent_at:  # the first in flight
        result = resend_app.test_cli_runner().invoke(args=["emails", "worker"])
    took = time.monotonic() - sent_at[0]

    assert result.exit_code == 0, result.output
    assert "SIGTERM received, stopping." in result.output
    assert took < 3, (round(took, 1), result.output)
    assert "Emails: 1 sent, 0 to retry, 0 failed, 9 handed back." in result.output
    with resend_app.app_context():
        first, *unsent = rows()
        assert first.status is OutboxStatus.SENT
        assert {(e.status, e.attempts, e.tries_began_at) for e in unsent} == {
            (OutboxStatus.PENDING, 0, None)
        }
        fake_resend.succeed()
        again = send_pending(db.session)  # another worker, straight after
        assert (again.sent, again.handed_back) == (9, 0)
    assert fake_resend.emails_sent == 10


def test_sending_refuses_to_commit_unfinished_work(console_app):
    with console_app.app_context():
        queue_test_email()
        with pytest.raises(RuntimeError, match="commit or roll back"):
            send_pending(db.session)
        db.session.rollback()
        assert rows() == []


@pytest.mark.parametrize("whose", ["hers", "the_studios_about_her_commission"])
def test_an_email_being_sent_as_its_account_closes_is_never_tried_again(
    resend_app, fake_resend, whose
):
    """Grace's email (or the studio's notice of her commission, quoting her request) was with
    the provider (slow) as she closed her account; the try timed out and the email went back
    to wait, then out, order details or her words and all, after her account was gone (found
    by review). The try under way can't be stopped: nothing of the email is kept, and it is
    never tried again."""
    from elysium.models import User
    from elysium.models.engagement import BespokeLead
    from elysium.services import account_data
    from tests.conftest import PASSWORD, create_user

    fake_resend.hang(seconds=60)
    with resend_app.app_context():
        user_id = create_user("grace@example.com")
        if whose == "hers":
            queue_test_email(to="grace@example.com", user_id=user_id)
        else:
            lead = BespokeLead(
                name="Grace", email="grace@example.com", message="A ring", user_id=user_id
            )
            db.session.add(lead)
            db.session.flush()
            queue_test_email(to="studio@example.com", dedupe_key=f"bespoke:{lead.id}:notify")
        db.session.commit()
        db.session.remove()

    def worker() -> None:
        with resend_app.app_context():
            send_pending(db.session)
            db.session.remove()

    sending = threading.Thread(target=worker)
    sending.start()
    deadline = time.monotonic() + 10
    while not fake_resend.requests and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fake_resend.requests, "the worker never reached the provider"
    with resend_app.app_context():
        account_data.close_account(db.session, db.session.get(User, user_id), password=PASSWORD)
        db.session.commit()
    sending.join(30)

    fake_resend.succeed()
    with resend_app.app_context():
        make_due()
        send_pending(db.session)  # the account's closing is confirmed to her, and only that
        withdrawn, closed = rows()
        assert withdrawn.status is OutboxStatus.FAILED
        assert (withdrawn.to_address, withdrawn.body_text, withdrawn.user_id) == ("", "", None)
        assert closed.template == "account_closed"
    assert [request.json["subject"] for request in fake_resend.requests[1:]] == [closed.subject]

    # Put back by staff, it would wait for ever, "queued" on the order's timeline: it has no
    # address to go to (found by review).
    assert "Put back 0 failed emails" in retry_failed(resend_app, "--all")
    output = retry_failed(resend_app, "--id", str(withdrawn.id))
    assert f"Left as they are (not failed, or withdrawn): {withdrawn.id}." in output
    with resend_app.app_context():
        assert rows()[0].status is OutboxStatus.FAILED
