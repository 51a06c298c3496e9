"""SQL that both our databases (PostgreSQL and SQLite) speak, but SQLAlchemy spells per dialect."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import InstrumentedAttribute, Session, scoped_session

AnySession = Session | scoped_session[Session]


def insert_unless_exists(
    session: AnySession, model: type, values: dict[str, Any], unique_column: InstrumentedAttribute
) -> int | None:
    """``INSERT … ON CONFLICT (unique_column) DO NOTHING RETURNING id``.

    The new row's id, or None when a row with that key exists, even one another transaction
    has written but not yet committed (PostgreSQL waits for it, SQLite has one writer), so
    two callers racing with the same key can never both insert.
    """
    dialect = session.get_bind(model).dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = (
        insert(model)
        .values(**values)
        .on_conflict_do_nothing(index_elements=[unique_column])
        .returning(model.id)  # type: ignore[attr-defined]
    )
    return session.execute(statement).scalar_one_or_none()


def hold_row(session: AnySession, model: type, row_id: int) -> None:
    """Take one row's lock until the transaction ends (``SELECT … FOR UPDATE``; on SQLite the
    database's write lock first, :func:`take_turns_on_sqlite`): another request taking it
    waits, then reads what this one committed."""
    take_turns_on_sqlite(session, model, row_id)
    table = model.__table__  # type: ignore[attr-defined]
    session.execute(select(table.c.id).where(table.c.id == row_id).with_for_update())


def take_turns_on_sqlite(session: AnySession, model: type, row_id: int) -> None:
    """Before a ``SELECT … FOR UPDATE`` of one row: on SQLite, which ignores FOR UPDATE (and
    whose driver begins a transaction only at the first write), take the database's write
    lock first with an UPDATE that changes nothing. Two callers then take turns as they do
    on PostgreSQL, and the second reads what the first committed. Nothing on PostgreSQL."""
    if session.get_bind(model).dialect.name != "sqlite":
        return
    table = model.__table__  # type: ignore[attr-defined]
    # Every column set to itself that an UPDATE would otherwise stamp (``onupdate``).
    unchanged = {column.name: column for column in table.c if column.onupdate is not None}
    session.execute(update(table).where(table.c.id == row_id).values(id=table.c.id, **unchanged))


def storable(text: str) -> bool:
    """Whether a text column can hold ``text`` on either database: no NUL (PostgreSQL refuses
    it) and no lone surrogate (it can't be encoded as UTF-8: ``"\\ud800"`` in JSON reads as
    one). Text from outside that reaches a statement (a webhook's ids) is checked with it."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
