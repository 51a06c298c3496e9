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

What becomes of an email the provider did not take depends on what its answer was about:

* this email (a validation error): it fails at once;
* this try (a timeout, a 5xx): it is tried again, each delay twice the last (up to
  ``RETRY_MAX_DELAY``), until it is ``EMAIL_GIVE_UP_AFTER_HOURS`` old, then it fails. That
  age stays inside the 24 hours in which Resend recognises an idempotency key, so a retry of
  an email Resend did take is answered with that email, never sent twice;
* the shop (401/403: the API key or the sender; 429: a rate limit or a quota): the run stops
  and the email and the rest of its batch wait again with their attempt not spent; nothing
  waiting is due before the provider's ``Retry-After`` (at most ``REFUSED_MAX_WAIT``), or
  ``REFUSED_WAIT`` when it gives none, since every email would get the same answer.

An email never tried, or only ever turned away with the shop, cannot have been sent, so it
waits however long that takes. One tried before (a timeout: it may have been sent) still fails
a day after its first try, turned away or not: a try after that could send it twice. ``flask
emails retry-failed`` puts failed emails back.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
from collections.abc import Collection
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import Flask, current_app, render_template
from markupsafe import Markup, escape
from sqlalchemy import ColumnElement, and_, case, event, func, or_, select, update
from sqlalchemy.orm import Session, SessionTransaction

from elysium.config import ConfigurationError
from elysium.integrations.email import (
    EmailBackend,
    EmailDeliveryError,
    Failure,
    OutgoingEmail,
    backend_from_config,
)
from elysium.models.outbox import OutboxEmail, OutboxStatus
from elysium.models.types import utcnow
from elysium.services.sql import AnySession, insert_unless_exists

logger = logging.getLogger(__name__)


# Set while the session holds a queued email that is not committed yet (see ``send_pending``).
QUEUED_KEY = "elysium.outbox.queued"

# An email being sent when its account was closed: its address and words are erased (the
# closing can't stop the try under way), and it is never tried again (``_fail_withdrawn``).
WITHDRAWN_ADDRESS = ""
WITHDRAWN_REASON = "Withdrawn: the account was closed while it was being sent."
DEDUPE_KEY_MAX_LENGTH = 200  # ``OutboxEmail.dedupe_key``
RETRY_BASE_DELAY = timedelta(minutes=1)
RETRY_MAX_DELAY = timedelta(hours=4)
# How long the outbox waits when the provider turns the shop away without a Retry-After, and
# the longest it waits when one asks for more (a quota may name the next day).
REFUSED_WAIT = timedelta(minutes=1)
REFUSED_MAX_WAIT = timedelta(hours=1)
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
    # Claimed, then put back untried: the provider turned the shop away.
    held: int = 0
    # Claimed, then put back untried and due at once: the sender was asked to stop.
    handed_back: int = 0

    @property
    def total(self) -> int:
        return self.sent + self.failed + self.retried + self.held + self.handed_back

    def add(self, other: SendReport) -> None:
        self.sent += other.sent
        self.failed += other.failed
        self.retried += other.retried
        self.held += other.held
        self.handed_back += other.handed_back

    def __str__(self) -> str:
        held = f", {self.held} held back" if self.held else ""
        handed_back = f", {self.handed_back} handed back" if self.handed_back else ""
        return f"{self.sent} sent, {self.retried} to retry, {self.failed} failed{held}{handed_back}"


@dataclass(frozen=True)
class Requeued:
    ids: list[int]
    # Of those, how many were too old for their idempotency key and were given a new one.
    with_new_key: int


@dataclass(frozen=True)
class _Claim:
    id: int
    to_address: str
    subject: str
    body_text: str
    body_html: str
    attempts: int
    claimed_at: datetime
    tries_began_at: datetime
    key_from: datetime


def typed_lines(text: str) -> Markup:
    """Text someone typed on several lines (a commission's idea, a quote's description, a gift
    message), for an email's HTML: escaped, each line break a ``<br>``, which every mail
    client shows (some ignore CSS that keeps the breaks)."""
    return Markup("<br>\n").join(escape(line) for line in str(text).splitlines())


def idempotency_key(email_id: int, made_at: datetime) -> str:
    """The provider's ``Idempotency-Key`` for one outbox row: made from when it was queued,
    or from when it was given a new key (``key_made_at``: sent again after its key's day was
    over, :func:`retry_failed`).

    A time is part of it so that a reused id (SQLite after deletes, a restored backup, a
    staging database on the same Resend account) can never be mistaken for an email already
    sent in the provider's 24-hour window. It is never made from anything a try sets: two
    releases sending side by side during a deploy give a row the same key.
    """
    return f"elysium-outbox-{email_id}-{made_at:%Y%m%d%H%M%S%f}"


def retry_delay(attempts: int) -> timedelta:
    """1 minute after the first failed attempt, then 2, 4, 8 … up to ``RETRY_MAX_DELAY``."""
    return min(RETRY_BASE_DELAY * 2 ** min(max(attempts - 1, 0), 20), RETRY_MAX_DELAY)


def give_up_after() -> timedelta:
    """How long after its first try an email the provider may have taken can still be tried
    again (under the same key)."""
    return timedelta(hours=current_app.config["EMAIL_GIVE_UP_AFTER_HOURS"])


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
        dedupe_key = _fitting(dedupe_key)
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


def _fitting(dedupe_key: str) -> str:
    """The key as its column takes it: one made of a long outside id (a Stripe object's) is
    cut and ends in a digest of the whole, so it still names one email."""
    if len(dedupe_key) <= DEDUPE_KEY_MAX_LENGTH:
        return dedupe_key
    digest = hashlib.sha256(dedupe_key.encode()).hexdigest()[:40]
    return f"{dedupe_key[: DEDUPE_KEY_MAX_LENGTH - len(digest) - 1]}~{digest}"


def _by_dedupe_key(session: AnySession, dedupe_key: str) -> OutboxEmail | None:
    return session.scalar(select(OutboxEmail).where(OutboxEmail.dedupe_key == dedupe_key))


def send_pending(
    session: AnySession, *, limit: int = 100, stop: threading.Event | None = None
) -> SendReport:
    """Send up to ``limit`` due emails (new, due for a retry, or abandoned by a dead sender).

    Runs its own short transactions on ``session``: call it with no unfinished work there.
    Emails too old to be tried again (``give_up_after``) are marked failed and counted as such.
    Once ``stop`` is set (``flask emails worker`` or ``send-pending`` got SIGTERM), the email
    being sent is finished and the rest of those claimed are handed back untried, due at once
    for another sender: each send may wait its timeouts, and a batch left claimed waited
    ``STALE_CLAIM_AFTER`` when the process manager, tired of waiting, killed the sender.
    """
    _require_no_unfinished_work(session)
    report = SendReport(failed=_give_up_on_expired(session))
    report.add(_deliver(session, limit=limit, stop=stop or threading.Event()))
    return report


def retry_failed(
    session: AnySession,
    *,
    ids: Collection[int] | None = None,
    queued_since: datetime | None = None,
) -> Requeued:
    """Make failed emails (all, or those with ``ids``, or queued since ``queued_since``) due
    again at once; the caller commits.

    One whose first try is younger than ``give_up_after`` keeps its idempotency key and its
    attempts, so if one of its tries did reach the provider, the provider answers with that
    email instead of sending it again. An older one may be past the 24 hours in which Resend
    recognises the key, so its tries start over under a new key: if one of its tries did
    reach the shopper, they get it twice. Either way it keeps the time it was queued.
    """
    now = utcnow()
    # One withdrawn as its account closed has no address left to go to (``_claimable``).
    chosen = [
        OutboxEmail.status == OutboxStatus.FAILED,
        OutboxEmail.to_address != WITHDRAWN_ADDRESS,
    ]
    if ids is not None:
        chosen.append(OutboxEmail.id.in_(ids))
    if queued_since is not None:
        chosen.append(OutboxEmail.created_at >= queued_since)
    too_old = now - give_up_after()
    renewed = session.scalars(
        update(OutboxEmail)
        .where(*chosen, OutboxEmail.tries_began_at < too_old)
        .values(
            status=OutboxStatus.PENDING,
            attempts=0,
            tries_began_at=None,
            key_made_at=now,
            next_attempt_at=now,
        )
        .returning(OutboxEmail.id)
        .execution_options(synchronize_session=False)
    ).all()
    kept = session.scalars(
        update(OutboxEmail)
        .where(*chosen, or_(OutboxEmail.tries_began_at >= too_old, _never_tried()))
        .values(status=OutboxStatus.PENDING, next_attempt_at=now)
        .returning(OutboxEmail.id)
        .execution_options(synchronize_session=False)
    ).all()
    return Requeued(ids=sorted([*renewed, *kept]), with_new_key=len(renewed))


def erase_sent_bodies(session: AnySession, *, sent_before: datetime) -> int:
    """Erase what the emails sent before ``sent_before`` said (their bodies hold names,
    addresses and what was bought); returns how many were erased. The record that each was
    sent stays: an order's timeline shows it, and its key keeps it from being sent twice."""
    return session.execute(
        update(OutboxEmail)
        .where(
            OutboxEmail.status == OutboxStatus.SENT,
            OutboxEmail.sent_at < sent_before,
            or_(OutboxEmail.body_text != "", OutboxEmail.body_html != ""),
        )
        .values(body_text="", body_html="")
        .execution_options(synchronize_session=False)
    ).rowcount


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
        OutboxEmail.to_address != WITHDRAWN_ADDRESS,
        or_(_never_tried(), OutboxEmail.tries_began_at >= now - give_up_after()),
        or_(
            and_(OutboxEmail.status == OutboxStatus.PENDING, OutboxEmail.next_attempt_at <= now),
            and_(
                OutboxEmail.status == OutboxStatus.SENDING,
                OutboxEmail.claimed_at < now - stale_claim_after(config["EMAIL_TIMEOUT_SECONDS"]),
            ),
        ),
    )


def _never_tried() -> ColumnElement[bool]:
    """Never tried under its current key: nothing of it can have reached the provider."""
    return OutboxEmail.tries_began_at.is_(None)


def _give_up_on_expired(session: AnySession) -> int:
    """Fail the emails the provider may have taken that are too old to try again: a dead
    sender's, or one whose next try came too late (a stopped worker, a shortened limit)."""
    now = utcnow()
    too_old = now - give_up_after()
    stale_before = now - stale_claim_after(current_app.config["EMAIL_TIMEOUT_SECONDS"])
    try:
        abandoned = session.execute(
            update(OutboxEmail)
            .where(
                OutboxEmail.tries_began_at < too_old,
                OutboxEmail.status == OutboxStatus.SENDING,
                OutboxEmail.claimed_at < stale_before,
            )
            .values(
                status=OutboxStatus.FAILED,
                last_error="The sender stopped during a try, and the email is too old to retry.",
            )
            .returning(OutboxEmail.id)
            .execution_options(synchronize_session=False)
        ).all()
        expired = session.execute(
            update(OutboxEmail)
            .where(
                OutboxEmail.tries_began_at < too_old,
                OutboxEmail.attempts > 0,
                OutboxEmail.status == OutboxStatus.PENDING,
            )
            .values(
                status=OutboxStatus.FAILED,
                last_error=OutboxEmail.last_error
                + f" (its first try was over {give_up_after() // timedelta(hours=1)} hours ago:"
                " not tried again under its key)",
            )
            .returning(OutboxEmail.id)
            .execution_options(synchronize_session=False)
        ).all()
        session.commit()
    except Exception:
        session.rollback()
        raise
    for (email_id,) in [*abandoned, *expired]:
        logger.error("Email %s is too old to retry and is marked failed", email_id)
    return len(abandoned) + len(expired)


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
                    tries_began_at=func.coalesce(OutboxEmail.tries_began_at, now),
                )
                .returning(
                    OutboxEmail.id,
                    OutboxEmail.to_address,
                    OutboxEmail.subject,
                    OutboxEmail.body_text,
                    OutboxEmail.body_html,
                    OutboxEmail.attempts,
                    OutboxEmail.tries_began_at,
                    OutboxEmail.key_made_at,
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
            tries_began_at=row.tries_began_at,
            key_from=row.key_made_at or row.created_at,
        )
        for row in rows
    ]
    return sorted(claims, key=lambda claim: claim.id)


def _deliver(session: AnySession, *, limit: int, stop: threading.Event) -> SendReport:
    """Claim, send and record in batches; stop early if the provider seems to be down, and
    at once if it turns the shop away or ``stop`` is set."""
    config = current_app.config
    report = SendReport()
    sender = sender_identity()
    remaining = limit
    # Built before claiming, so a configuration error never strands rows in ``sending``.
    with closing(backend_from_config(config)) as backend:
        while remaining > 0 and not stop.is_set():
            claims = _claim(session, limit=min(CLAIM_BATCH, remaining), sender=sender)
            if not claims:
                break
            remaining -= len(claims)
            batch = SendReport()
            for index, claim in enumerate(claims):
                if stop.is_set():
                    batch.handed_back = _hand_back(session, claims[index:], sender)
                    break
                outcome = _send_one(backend, claim, config["EMAIL_FROM"])
                if isinstance(outcome, EmailDeliveryError) and outcome.refuses_the_shop:
                    batch.held = _hold(session, claims[index:], sender, outcome)
                    break
                _record(session, claim, sender, outcome, give_up_after(), batch)
            report.add(batch)
            if batch.held or batch.handed_back:
                break
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
        idempotency_key=idempotency_key(claim.id, claim.key_from),
    )
    try:
        return backend.send(email)
    except EmailDeliveryError as exc:
        return exc
    except Exception as exc:
        logger.exception("Unexpected error sending email %s", claim.id)
        return EmailDeliveryError(f"{type(exc).__name__}: {exc}", failure=Failure.TRANSIENT)


def _record(
    session: AnySession,
    claim: _Claim,
    sender: str,
    outcome: str | EmailDeliveryError | None,
    give_up_after: timedelta,
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
        permanent = outcome.failure is Failure.PERMANENT
        # A minute before the limit, so the last try is not overtaken by the give-up pass.
        last_try_at = claim.tries_began_at + give_up_after - RETRY_BASE_DELAY
        if permanent or now >= last_try_at:
            if not permanent:
                hours = give_up_after // timedelta(hours=1)
                error = f"{error} (gave up after {claim.attempts} attempts in {hours} hours)"
            values = {"status": OutboxStatus.FAILED, "last_error": error}
            report.failed += 1
            logger.error("Email %s failed for good: %s", claim.id, error)
        else:
            values = {
                "status": OutboxStatus.PENDING,
                "last_error": error,
                "next_attempt_at": min(now + retry_delay(claim.attempts), last_try_at),
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
        _fail_withdrawn(session, [claim.id])
        session.commit()
    except Exception:
        session.rollback()
        raise
    if recorded is None:
        logger.warning(
            "Email %s was reclaimed by another sender before its outcome was saved", claim.id
        )


def _fail_withdrawn(session: AnySession, ids: list[int]) -> None:
    """Of these emails, those withdrawn while being sent (their account closed: address and
    words erased, ``WITHDRAWN_ADDRESS``) and put back to wait are failed: never tried again."""
    session.execute(
        update(OutboxEmail)
        .where(
            OutboxEmail.id.in_(ids),
            OutboxEmail.to_address == WITHDRAWN_ADDRESS,
            OutboxEmail.status == OutboxStatus.PENDING,
        )
        .values(status=OutboxStatus.FAILED, last_error=WITHDRAWN_REASON)
        .execution_options(synchronize_session=False)
    )


def _put_back_untried(
    session: AnySession, claims: list[_Claim], sender: str, **values: Any
) -> list[int]:
    """Put ``claims`` back to wait as if they had never been claimed (their attempt not
    spent; never tried, their tries and their key's day begin at the next), if this sender
    still holds them, with ``values`` set too; the caller commits. Returns their ids."""
    released = session.scalars(
        update(OutboxEmail)
        .where(
            OutboxEmail.id.in_([claim.id for claim in claims]),
            OutboxEmail.status == OutboxStatus.SENDING,
            OutboxEmail.claimed_by == sender,
            # One claim time for the whole batch (see ``_claim``).
            OutboxEmail.claimed_at == claims[0].claimed_at,
        )
        .values(
            status=OutboxStatus.PENDING,
            attempts=OutboxEmail.attempts - 1,
            tries_began_at=case(
                (OutboxEmail.attempts == 1, None), else_=OutboxEmail.tries_began_at
            ),
            **values,
        )
        .returning(OutboxEmail.id)
        .execution_options(synchronize_session=False)
    ).all()
    _fail_withdrawn(session, [claim.id for claim in claims])
    return list(released)


def _hand_back(session: AnySession, claims: list[_Claim], sender: str) -> int:
    """Put back ``claims`` untried, due when they were, for another sender to take at once:
    this one is stopping. Returns how many were put back."""
    try:
        released = _put_back_untried(session, claims, sender)
        session.commit()
    except Exception:
        session.rollback()
        raise
    logger.info("Email sender stopping: %s claimed emails handed back untried", len(released))
    return len(released)


def _hold(
    session: AnySession, claims: list[_Claim], sender: str, refusal: EmailDeliveryError
) -> int:
    """Put back ``claims`` (the refused one first, then the rest of its batch) untried, their
    attempt not spent, and make nothing that waits due before the provider takes email again.
    Returns how many were put back."""
    wait = REFUSED_WAIT if refusal.retry_after is None else refusal.retry_after
    wait = min(wait, REFUSED_MAX_WAIT)
    due_at = utcnow() + wait
    refused = claims[0]
    try:
        released = _put_back_untried(
            session,
            claims,
            sender,
            next_attempt_at=due_at,
            last_error=case(
                (OutboxEmail.id == refused.id, str(refusal)), else_=OutboxEmail.last_error
            ),
        )
        session.commit()
        # Apart, so that two senders turned away at once each lock only waiting rows, in the
        # same order, and never wait for each other's released ones.
        # An email tried before whose last try falls before then keeps it: it is not made to
        # miss it (and fail for its age) by a wait it never asked for.
        last_try_before = due_at - give_up_after() + RETRY_BASE_DELAY
        session.execute(
            update(OutboxEmail)
            .where(
                OutboxEmail.status == OutboxStatus.PENDING,
                OutboxEmail.next_attempt_at < due_at,
                or_(_never_tried(), OutboxEmail.tries_began_at >= last_try_before),
            )
            .values(next_attempt_at=due_at)
            .execution_options(synchronize_session=False)
        )
        session.commit()
    except Exception:
        session.rollback()
        raise
    if refusal.failure is Failure.UNAUTHORISED:
        logger.error(
            "Email provider refuses the shop (%s): check RESEND_API_KEY and EMAIL_FROM. "
            "No email is sent until it is fixed; one tried before that is a day past its "
            "first try fails then.",
            refusal,
        )
    else:
        logger.warning(
            "Email provider asks the shop to wait (%s); trying again in %s", refusal, wait
        )
    return len(released)
