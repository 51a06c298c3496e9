"""A pooled PostgreSQL connection is checked as a request takes it (``elysium.db_pool``): one
the database has ended is replaced before any statement meets it, and a healthy one taken again
at once costs no round trip."""

from __future__ import annotations

import time

import pytest
from flask import Flask
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool

from elysium.extensions import db

pytestmark = pytest.mark.postgres_only


@pytest.fixture
def engine(app: Flask) -> Engine:
    """The app's own engine, its pool emptied: the next connection it hands out is new."""
    if not app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        pytest.skip("an SQLite connection is a file: no server can end it")
    with app.app_context():
        engine = db.engine
    engine.dispose()
    return engine


@pytest.fixture
def admin(app: Flask):
    """A connection of its own, outside the app's pool, to watch and end the app's."""
    watcher = create_engine(app.config["SQLALCHEMY_DATABASE_URI"], poolclass=NullPool)
    with watcher.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        yield connection
    watcher.dispose()


def pooled_connection_that_last_ran(engine: Engine, marker: str) -> int:
    """Take a connection, run ``marker`` on it outside a transaction, give it back; its
    server process's id."""
    raw = engine.raw_connection()
    try:
        connection = raw.driver_connection
        connection.autocommit = True
        connection.execute(marker)
        connection.autocommit = False
        return connection.info.backend_pid
    finally:
        raw.close()


def last_statement(admin, pid: int) -> str | None:
    return admin.scalar(text("SELECT query FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid})


def test_a_connection_taken_again_at_once_costs_no_round_trip(engine: Engine, admin):
    pid = pooled_connection_that_last_ran(engine, "SELECT 'pooled'")
    assert last_statement(admin, pid) == "SELECT 'pooled'"

    raw = engine.raw_connection()  # the pool's only connection, taken again
    try:
        assert raw.driver_connection.info.backend_pid == pid
        # Nothing was sent to ask whether it is alive (pre-ping's "SELECT 1").
        assert last_statement(admin, pid) == "SELECT 'pooled'"
    finally:
        raw.close()


def test_a_connection_the_database_ended_is_replaced_before_a_page_uses_it(
    app: Flask, engine: Engine, admin, catalogue
):
    pid = pooled_connection_that_last_ran(engine, "SELECT 'pooled'")
    assert admin.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    deadline = time.monotonic() + 5
    while last_statement(admin, pid) is not None:
        assert time.monotonic() < deadline, "the server process never ended"
        time.sleep(0.01)

    client = app.test_client()
    # A page reading without a transaction, then one with its own (the product page).
    listing = client.get("/shop")
    assert listing.status_code == 200
    assert "Aurelia Solitaire Ring" in listing.get_data(as_text=True)
    assert client.get("/shop/aurelia-solitaire-ring").status_code == 200

    raw = engine.raw_connection()
    try:
        assert raw.driver_connection.info.backend_pid != pid
    finally:
        raw.close()
