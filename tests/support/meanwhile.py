"""Races made to happen: run something else at the moment a request reaches a statement."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

from flask import Flask
from sqlalchemy import event, text

from elysium.extensions import db


@contextlib.contextmanager
def meanwhile(
    app: Flask, starts_with: str | Callable[[str], bool], then: Callable[[], None]
) -> Iterator[list[bool]]:
    """Run ``then()`` once, in this thread, just before this thread's first statement that
    starts with ``starts_with`` (or that it says yes to, given a function) is sent to the
    database. The list it yields holds True once that happened, so a test can tell the race
    was run as it means."""
    matches = starts_with if callable(starts_with) else lambda sql: sql.startswith(starts_with)
    with app.app_context():
        engine = db.engine
    here = threading.get_ident()
    done: list[bool] = []

    def before(conn, cursor, statement, parameters, context, executemany) -> None:
        if not done and threading.get_ident() == here and matches(statement):
            done.append(True)
            then()

    event.listen(engine, "before_cursor_execute", before)
    try:
        yield done
    finally:
        event.remove(engine, "before_cursor_execute", before)


def in_another_window(action: Callable[[], None]) -> None:
    """``action()`` in a thread of its own (another browser window), waited for."""
    thread = threading.Thread(target=action)
    thread.start()
    thread.join(30)


class WorkerStoppedError(Exception):
    """The request stops where it is, as a worker killed there: what it had not committed
    is rolled back."""


def stop() -> None:
    """For ``meanwhile``: the worker stops here."""
    raise WorkerStoppedError


def waiting_for_a_lock(app: Flask) -> int:
    """How many connections to the test database (PostgreSQL) wait for a lock another holds:
    a test's sign that the race it set up has reached the point it means."""
    with app.app_context(), db.engine.connect() as connection:
        waiting = connection.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        ).scalar_one()
    return int(waiting or 0)
