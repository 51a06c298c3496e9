"""The email outbox: an email is queued inside the unit of work it is about; the worker sends it.

``queue_email`` only writes a row, so an email exists exactly when the transaction that
caused it commits. No request ever talks to the email provider: ``flask emails worker``
polls the outbox every second or so (and ``flask emails send-pending`` makes one pass, for
cron), so a slow or hung provider delays emails, never a page or a webhook. Sending is claim
→ send → record, each claim and record in its own short transaction so that any number of
senders can run at once on different hosts without sending an email twice:

* a claim moves a due row from ``pending`` to ``sending`` with a conditional UPDATE (on
  PostgreSQL the candidates are first locked with ``FOR UPDATE SKIP LOCKED`` so senders
  never wait for each other); only the sender whose UPDATE matched the row sends it;
* the provider is called outside any transaction, with the row's idempotency key, so even a
  sender that crashes after sending but before recording cannot cause a second email: the
  row is reclaimed once its claim is stale and the provider answers the repeat with the id
  of the email it already sent;
* the outcome is recorded only if the row is still claimed by this sender.
"""

from __future__ import annotations

import logging
import os
import socket
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import Flask, current_app, render_template
from sqlalchemy import ColumnElement, and_, event, or_, select, update
from sqlalchemy.orm import Session, SessionTransaction

from elysium.config import ConfigurationError
from elysium.integrations.email import (
    EmailBackend,
    EmailDeliveryError,
    OutgoingEmail,
    backend_from_config,
)
from elysium.models.outbox import OutboxEmail, OutboxStatus
from elysium.models.types import utcnow
from elysium.services.sql import AnySession, insert_unless_exists

logger = logging.getLogger(__name__)


# Set while the session holds a queued email that is not committed yet (see ``send_pending``).
QUEUED_KEY = "elysium.outbox.queued"

RETRY_BASE_DELAY = timedelta(minutes=1)
RETRY_MAX_DELAY = timedelta(hours=4)
# A claim older than this belongs to a sender that died (see ``stale_claim_after``).
STALE_CLAIM_AFTER = timedelta(minutes=10)
CLAIM_BATCH = 10
MAX_SUBJECT_LENGTH = 300
MAX_ADDRESS_LENGTH = 320


@dataclass
class SendReport:
    sent: int = 0
    failed: int = 0
    retried: int = 0

    @property
    def total(self) -> int:
        return self.sent + self.failed + self.retried

    def add(self, other: SendReport) -> None:
        self.sent += other.sent
        self.failed += other.failed
        self.retried += other.retried

    def __str__(self) -> str:
        return f"{self.sent} sent, {self.retried} to retry, {self.failed} failed"


@dataclass(frozen=True)
class _Claim:
    id: int
    to_address: str
    subject: str
    body_text: str
    body_html: str
    attempts: int
    claimed_at: datetime
    created_at: datetime


def idempotency_key(email_id: int, created_at: datetime) -> str:
    """The provider's ``Idempotency-Key`` for one outbox row.

    The creation time is part of it so that a reused id (SQLite after deletes, a restored
    backup, a staging database on the same Resend account) can never be mistaken for an
    email already sent in the provider's 24-hour window.
    """
    return f"elysium-outbox-{email_id}-{created_at:%Y%m%d%H%M%S%f}"


def retry_delay(attempts: int) -> timedelta:
    """1 minute after the first failed attempt, then 2, 4, 8 … up to ``RETRY_MAX_DELAY``."""
    return min(RETRY_BASE_DELAY * 2 ** min(max(attempts - 1, 0), 20), RETRY_MAX_DELAY)


def stale_claim_after(timeout_seconds: float) -> timedelta:
    """How old a claim must be before another sender may take the row over.

    Comfortably longer than one batch of sends can take (each send waits at most a connect
    and a read timeout), so a live sender is never overtaken.
    """
    return max(STALE_CLAIM_AFTER, timedelta(seconds=CLAIM_BATCH * 2 * timeout_seconds * 2))


def sender_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"[:120]


def queue_email(
    session: AnySession,
    *,
    to: str,
    subject: str,
    template: str,
    context: dict[str, Any],
    user_id: int | None = None,
    order_id: int | None = None,
    dedupe_key: str | None = None,
) -> OutboxEmail:
    """Render ``emails/<template>.txt`` and ``.html`` and add the email to the outbox.

    The row is flushed, not committed: the worker sends it once the caller commits. With a
    ``dedupe_key`` that is already in the outbox, the existing row is returned and nothing
    is added (concurrent callers with the same key end up with one row between them).
    """
    to = to.strip()
    if not to or len(to) > MAX_ADDRESS_LENGTH or "@" not in to or any(c.isspace() for c in to):
        raise ValueError(f"not an email address: {to!r}")
    subject = " ".join(subject.split())
    if len(subject) > MAX_SUBJECT_LENGTH:
        subject = subject[: MAX_SUBJECT_LENGTH - 1] + "…"

    if dedupe_key is not None:
        existing = _by_dedupe_key(session, dedupe_key)
        if existing is not None:
            return existing

    render_context = {"subject": subject, **context}
    values: dict[str, Any] = {
        "to_address": to,
        "subject": subject,
        "template": template,
        "body_text": render_template(f"emails/{template}.txt", **render_context),
        "body_html": render_template(f"emails/{template}.html", **render_context),
        "dedupe_key": dedupe_key,
        "user_id": user_id,
        "order_id": order_id,
    }
    if dedupe_key is not None:
        new_id = insert_unless_exists(session, OutboxEmail, values, OutboxEmail.dedupe_key)
        if new_id is None:
            row = _by_dedupe_key(session, dedupe_key)
            assert row is not None
            return row
        row = session.get_one(OutboxEmail, new_id)
    else:
        row = OutboxEmail(**values)
        session.add(row)
        session.flush()
    session.info[QUEUED_KEY] = True
    return row


def _by_dedupe_key(session: AnySession, dedupe_key: str) -> OutboxEmail | None:
    return session.scalar(select(OutboxEmail).where(OutboxEmail.dedupe_key == dedupe_key))


def send_pending(session: AnySession, *, limit: int = 100) -> SendReport:
    """Send up to ``limit`` due emails (new, due for a retry, or abandoned by a dead sender).

    Runs its own short transactions on ``session``: call it with no unfinished work there.
    Emails that have used up ``EMAIL_MAX_ATTEMPTS`` are marked failed and counted as such.
    """
    _require_no_unfinished_work(session)
    report = SendReport(failed=_give_up_on_exhausted(session))
    report.add(_deliver(session, limit=limit))
    return report


# The settings naming the house's own inboxes: the shop emails them from its main paths (a
# piece running low at checkout, a dispute's webhook, a bespoke request).
HOUSE_ADDRESSES = ("STAFF_EMAIL", "BESPOKE_NOTIFY_EMAIL")


def init_app(app: Flask) -> None:
    """Refuse to start when an address the shop writes to is not one address (a display name,
    a list, nothing): every checkout that runs a piece low would answer 500 with it. Warn when
    a production app would only print its emails."""
    for name in HOUSE_ADDRESSES:
        value = str(app.config.get(name) or "").strip()
        if not _is_one_address(value):
            raise ConfigurationError(
                f"{name} must be one email address, such as atelier@example.com, not {value!r}"
            )
    if app.config.get("ELYSIUM_ENV") == "production" and app.config["EMAIL_BACKEND"] == "console":
        app.logger.warning("EMAIL_BACKEND is 'console': emails are printed, not sent.")


def _is_one_address(value: str) -> bool:
    return (
        0 < len(value) <= MAX_ADDRESS_LENGTH
        and value.count("@") == 1
        and not any(c.isspace() or c in '<>,;"' for c in value)
    )


@event.listens_for(Session, "after_transaction_end")
def _forget_queued_emails(session: Session, transaction: SessionTransaction) -> None:
    """Once the outermost transaction ends (commit, rollback or ``close()``), nothing queued
    is unfinished any more; a released or rolled-back SAVEPOINT does not end it."""
    if transaction.parent is None:
        session.info.pop(QUEUED_KEY, None)


def _require_no_unfinished_work(session: AnySession) -> None:
    if session.new or session.dirty or session.deleted or session.info.get(QUEUED_KEY):
        raise RuntimeError("commit or roll back the unit of work before sending the outbox")


def _claimable(now: datetime) -> ColumnElement[bool]:
    config = current_app.config
    return and_(
        OutboxEmail.attempts < config["EMAIL_MAX_ATTEMPTS"],
        or_(
            and_(OutboxEmail.status == OutboxStatus.PENDING, OutboxEmail.next_attempt_at <= now),
            and_(
                OutboxEmail.status == OutboxStatus.SENDING,
                OutboxEmail.claimed_at < now - stale_claim_after(config["EMAIL_TIMEOUT_SECONDS"]),
            ),
        ),
    )


def _give_up_on_exhausted(session: AnySession) -> int:
    """Fail rows that may not be tried again: a dead sender's last attempt, or a lowered cap."""
    now = utcnow()
    max_attempts = current_app.config["EMAIL_MAX_ATTEMPTS"]
    stale_before = now - stale_claim_after(current_app.config["EMAIL_TIMEOUT_SECONDS"])
    try:
        abandoned = session.execute(
            update(OutboxEmail)
            .where(
                OutboxEmail.attempts >= max_attempts,
                OutboxEmail.status == OutboxStatus.SENDING,
                OutboxEmail.claimed_at < stale_before,
            )
            .values(
                status=OutboxStatus.FAILED,
                last_error="The sender stopped during the last allowed attempt; not retried.",
            )
            .returning(OutboxEmail.id)
            .execution_options(synchronize_session=False)
        ).all()
        capped = session.execute(
            update(OutboxEmail)
            .where(
                OutboxEmail.attempts >= max_attempts,
                OutboxEmail.status == OutboxStatus.PENDING,
            )
            .values(status=OutboxStatus.FAILED)
            .returning(OutboxEmail.id)
            .execution_options(synchronize_session=False)
        ).all()
        session.commit()
    except Exception:
        session.rollback()
        raise
    for (email_id,) in [*abandoned, *capped]:
        logger.error("Email %s has used all its attempts and is marked failed", email_id)
    return len(abandoned) + len(capped)


def _claim(session: AnySession, *, limit: int, sender: str) -> list[_Claim]:
    now = utcnow()
    condition = _claimable(now)
    # SQLite ignores FOR UPDATE; there the conditional UPDATE alone decides who wins a row.
    candidates = (
        select(OutboxEmail.id)
        .where(condition)
        .order_by(OutboxEmail.next_attempt_at, OutboxEmail.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    try:
        candidate_ids = session.scalars(candidates).all()
        rows = []
        if candidate_ids:
            rows = session.execute(
                update(OutboxEmail)
                .where(OutboxEmail.id.in_(candidate_ids), condition)
                .values(
                    status=OutboxStatus.SENDING,
                    claimed_at=now,
                    claimed_by=sender,
                    attempts=OutboxEmail.attempts + 1,
                )
                .returning(
                    OutboxEmail.id,
                    OutboxEmail.to_address,
                    OutboxEmail.subject,
                    OutboxEmail.body_text,
                    OutboxEmail.body_html,
                    OutboxEmail.attempts,
                    OutboxEmail.created_at,
                )
                .execution_options(synchronize_session=False)
            ).all()
        session.commit()
    except Exception:
        session.rollback()
        raise
    claims = [
        _Claim(
            id=row.id,
            to_address=row.to_address,
            subject=row.subject,
            body_text=row.body_text,
            body_html=row.body_html,
            attempts=row.attempts,
            claimed_at=now,
            created_at=row.created_at,
        )
        for row in rows
    ]
    return sorted(claims, key=lambda claim: claim.id)


def _deliver(session: AnySession, *, limit: int) -> SendReport:
    """Claim, send and record in batches; stop early if the provider seems to be down."""
    config = current_app.config
    report = SendReport()
    sender = sender_identity()
    remaining = limit
    # Built before claiming, so a configuration error never strands rows in ``sending``.
    with closing(backend_from_config(config)) as backend:
        while remaining > 0:
            claims = _claim(session, limit=min(CLAIM_BATCH, remaining), sender=sender)
            if not claims:
                break
            remaining -= len(claims)
            batch = SendReport()
            for claim in claims:
                outcome = _send_one(backend, claim, config["EMAIL_FROM"])
                _record(session, claim, sender, outcome, config["EMAIL_MAX_ATTEMPTS"], batch)
            report.add(batch)
            if batch.retried and not batch.sent:
                logger.warning("Email provider failing; leaving the rest for the next run")
                break
    return report


def _send_one(backend: EmailBackend, claim: _Claim, sender: str) -> str | EmailDeliveryError | None:
    email = OutgoingEmail(
        sender=sender,
        to=claim.to_address,
        subject=claim.subject,
        text=claim.body_text,
        html=claim.body_html,
        idempotency_key=idempotency_key(claim.id, claim.created_at),
    )
    try:
        return backend.send(email)
    except EmailDeliveryError as exc:
        return exc
    except Exception as exc:
        logger.exception("Unexpected error sending email %s", claim.id)
        return EmailDeliveryError(f"{type(exc).__name__}: {exc}", permanent=False)


def _record(
    session: AnySession,
    claim: _Claim,
    sender: str,
    outcome: str | EmailDeliveryError | None,
    max_attempts: int,
    report: SendReport,
) -> None:
    now = utcnow()
    values: dict[str, Any]
    if not isinstance(outcome, EmailDeliveryError):
        values = {
            "status": OutboxStatus.SENT,
            "sent_at": now,
            "provider_message_id": outcome,
            "last_error": "",
        }
        report.sent += 1
        # By id: the address is in the outbox row (erased with the account), never in a log.
        logger.info("Email %s sent", claim.id)
    else:
        error = str(outcome)
        permanent = outcome.permanent
        if permanent or claim.attempts >= max_attempts:
            if not permanent:
                error = f"{error} (gave up after {claim.attempts} attempts)"
            values = {"status": OutboxStatus.FAILED, "last_error": error}
            report.failed += 1
            logger.error("Email %s failed for good: %s", claim.id, error)
        else:
            values = {
                "status": OutboxStatus.PENDING,
                "last_error": error,
                "next_attempt_at": now + retry_delay(claim.attempts),
            }
            report.retried += 1
            logger.warning("Email %s not sent (attempt %s): %s", claim.id, claim.attempts, error)
    try:
        recorded = session.execute(
            update(OutboxEmail)
            .where(
                OutboxEmail.id == claim.id,
                OutboxEmail.status == OutboxStatus.SENDING,
                OutboxEmail.claimed_by == sender,
                OutboxEmail.claimed_at == claim.claimed_at,
            )
            .values(**values)
            .returning(OutboxEmail.id)
            .execution_options(synchronize_session=False)
        ).first()
        session.commit()
    except Exception:
        session.rollback()
        raise
    if recorded is None:
        logger.warning(
            "Email %s was reclaimed by another sender before its outcome was saved", claim.id
        )
