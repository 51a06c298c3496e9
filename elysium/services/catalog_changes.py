"""Changes Sanity announced (its webhook), kept in ``catalog_changes`` until they are applied.

The webhook only records the document id (:func:`record_change`) and answers; the change is
applied straight after the response (:func:`apply_change`), and whatever could not be applied
then — Sanity down or slow, the database busy, the worker killed — stays due, with a growing
delay, for ``flask catalog apply-changes`` (cron, every minute), so no announced change is
ever lost. Any number of appliers may run at once, on different hosts:

* an applier first claims the row with a conditional UPDATE of ``next_attempt_at`` (only the
  one whose UPDATE matched goes on; a claim lasts ``CLAIM_LEASE``, so a crashed applier's row
  is taken up again after it);
* applying a document twice changes nothing (the sync is idempotent), so a lost lease costs a
  fetch, never a wrong catalogue;
* a newer announcement of the same document bumps ``version`` and makes the row due now; the
  row is removed, or its failure recorded, only if its version is still the one applied.

A document Sanity answers but the shop can't use (malformed) is done with: the studio must
change it, which announces it again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from elysium.models.catalog import CatalogChange
from elysium.models.types import utcnow
from elysium.services import catalog_sync
from elysium.services.sql import AnySession

logger = logging.getLogger(__name__)

RETRY_BASE_DELAY = timedelta(seconds=30)
RETRY_MAX_DELAY = timedelta(hours=1)
CLAIM_LEASE = timedelta(minutes=5)
MAX_ERROR_LENGTH = 500
# As ``now`` for :func:`apply_due`: every recorded change is due, even one waiting for a retry.
EVERYTHING = datetime.max.replace(tzinfo=UTC)

Fetch = Callable[[str], "dict[str, Any] | None"]


@dataclass
class ApplyReport:
    applied: int = 0
    skipped: int = 0
    failed: int = 0

    @property
    def total(self) -> int:
        return self.applied + self.skipped + self.failed

    def __str__(self) -> str:
        return f"{self.applied} applied, {self.skipped} skipped, {self.failed} to retry"


def retry_delay(attempts: int) -> timedelta:
    """30 seconds after the first failed attempt, then 1, 2, 4 minutes … up to an hour."""
    return min(RETRY_BASE_DELAY * 2 ** min(max(attempts - 1, 0), 20), RETRY_MAX_DELAY)


def record_change(session: AnySession, document_id: str, *, deleted: bool) -> None:
    """Note that Sanity changed (or deleted) ``document_id``: due now. Flushed, not
    committed; concurrent announcements of one document end up as one row."""
    now = utcnow()
    dialect = session.get_bind(CatalogChange).dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(CatalogChange).values(
        document_id=document_id,
        deleted=deleted,
        version=1,
        attempts=0,
        received_at=now,
        next_attempt_at=now,
    )
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[CatalogChange.document_id],
            set_={
                "deleted": deleted,
                "version": CatalogChange.version + 1,
                "attempts": 0,
                "last_error": None,
                "received_at": now,
                "next_attempt_at": now,
            },
        )
    )


@dataclass(frozen=True)
class Due:
    """A recorded change as an applier saw it (plain values: they outlive the transaction)."""

    id: int
    document_id: str
    deleted: bool
    version: int
    next_attempt_at: datetime


DUE_COLUMNS = (
    CatalogChange.id,
    CatalogChange.document_id,
    CatalogChange.deleted,
    CatalogChange.version,
    CatalogChange.next_attempt_at,
)


def _claim(session: AnySession, change: Due) -> bool:
    """Take the row for ``CLAIM_LEASE``; False if another applier took it (or a newer
    announcement changed it) since it was read. Commits."""
    result = session.execute(
        update(CatalogChange)
        .where(
            CatalogChange.id == change.id,
            CatalogChange.version == change.version,
            CatalogChange.next_attempt_at == change.next_attempt_at,
        )
        .values(next_attempt_at=utcnow() + CLAIM_LEASE)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return result.rowcount == 1


def _done(session: AnySession, change_id: int, version: int) -> None:
    session.execute(
        delete(CatalogChange)
        .where(CatalogChange.id == change_id, CatalogChange.version == version)
        .execution_options(synchronize_session=False)
    )
    session.commit()


def _failed(session: AnySession, change_id: int, version: int, error: str) -> None:
    change = session.get(CatalogChange, change_id)
    if change is None or change.version != version:
        session.rollback()
        return
    attempts = change.attempts + 1
    session.execute(
        update(CatalogChange)
        .where(CatalogChange.id == change_id, CatalogChange.version == version)
        .values(
            attempts=attempts,
            last_error=error[:MAX_ERROR_LENGTH],
            next_attempt_at=utcnow() + retry_delay(attempts),
        )
        .execution_options(synchronize_session=False)
    )
    session.commit()


def apply_change(session: AnySession, change: Due, *, fetch: Fetch, currency: str) -> str | None:
    """Claim and apply one recorded change: fetch the document and sync it, or unpublish what
    Sanity no longer has. A change announced as a deletion is fetched too: Sanity decides, so
    a deletion announced late, out of order or replayed never hides a piece the studio still
    has. A document of which the shop holds another edit of the same second (which is the
    later can't be told from their stamps) is fetched once more: asked after the row was read,
    Sanity answers the later, written unless the row was written again meanwhile. A "gone"
    heard within the second of the edit the row holds hides nothing: the change is tried
    again later, and Sanity's next answer settles it. Returns what happened (``created``,
    ``updated``, ``unchanged``, ``unpublished``, ``skipped``, ``failed``), or None when
    another applier has it."""
    if not _claim(session, change):
        return None
    try:
        try:
            outcome = _fetched_and_applied(session, change.document_id, fetch, currency)
        except catalog_sync.SameSecondError as conflict:
            logger.info("Sanity document %s asked again: %s", change.document_id, conflict.reason)
            outcome = _fetched_and_applied(
                session, change.document_id, fetch, currency, conflict.row
            )
    except (
        catalog_sync.NotInTheShopYetError,
        catalog_sync.SameSecondError,
        catalog_sync.DeletedInTheSameSecondError,
    ) as error:
        # Its collection's own change is on its way, the row was written again while Sanity
        # was asked once more, or Sanity said "gone" within the second of the edit the row
        # holds: tried again, as after an outage, and Sanity's next answer settles it.
        session.rollback()
        logger.info("Sanity document %s waits: %s", change.document_id, error)
        _failed(session, change.id, change.version, str(error))
        return "failed"
    except catalog_sync.InvalidDocumentError as error:
        logger.warning("Sanity document %s skipped: %s", change.document_id, error.reason)
        outcome = "skipped"
    except Exception as error:
        session.rollback()
        logger.warning("Sanity document %s not applied, will retry: %s", change.document_id, error)
        _failed(session, change.id, change.version, f"{error.__class__.__name__}: {error}")
        return "failed"
    _done(session, change.id, change.version)
    logger.info("Sanity document %s: %s", change.document_id, outcome)
    return outcome


def _fetched_and_applied(
    session: AnySession,
    document_id: str,
    fetch: Fetch,
    currency: str,
    row_when_asked: catalog_sync.AsRead | None = None,
) -> str:
    """Ask Sanity for the document and sync what it answers, or unpublish it when Sanity no
    longer has it (``row_when_asked``: the row as it was read before Sanity was asked)."""
    asked_at = utcnow()
    document = fetch(document_id)
    if document is None:
        hidden = catalog_sync.unpublish_deleted(session, document_id, asked_at=asked_at)
        return "unpublished" if hidden else "unchanged"
    return catalog_sync.sync_document(
        session, document, currency=currency, row_when_asked=row_when_asked
    )


def due_changes(
    session: AnySession,
    *,
    limit: int = 100,
    now: datetime | None = None,
    document_id: str | None = None,
) -> list[Due]:
    """The recorded changes that are due, oldest first (only ``document_id``'s, if given)."""
    statement = (
        select(*DUE_COLUMNS)
        .where(CatalogChange.next_attempt_at <= (now or utcnow()))
        .order_by(CatalogChange.next_attempt_at, CatalogChange.id)
        .limit(limit)
    )
    if document_id is not None:
        statement = statement.where(CatalogChange.document_id == document_id)
    due = [Due(*row) for row in session.execute(statement)]
    session.commit()
    return due


def apply_due(
    session: AnySession,
    *,
    fetch: Fetch,
    currency: str,
    limit: int = 100,
    now: datetime | None = None,
) -> ApplyReport:
    """Apply the changes that are due, oldest first (at most ``limit``)."""
    report = ApplyReport()
    for change in due_changes(session, limit=limit, now=now):
        outcome = apply_change(session, change, fetch=fetch, currency=currency)
        if outcome == "failed":
            report.failed += 1
        elif outcome == "skipped":
            report.skipped += 1
        elif outcome is not None:
            report.applied += 1
    return report
