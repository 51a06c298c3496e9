"""The migrations build the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid

import pytest
from flask_migrate import downgrade, upgrade
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from elysium.extensions import db
from tests.conftest import make_app


def test_flask_db_check_finds_no_drift_between_models_and_migrations(runner):
    result = runner.invoke(args=["db", "check"])
    assert result.exit_code == 0, result.output


@pytest.fixture
def empty_database_url(app, tmp_path):
    """A brand-new database of the same kind as the suite's."""
    url = make_url(app.config["SQLALCHEMY_DATABASE_URI"])
    if url.get_backend_name() == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrations.sqlite3'}"
        return
    name = f"elysium_migrations_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_migrations_upgrade_downgrade_and_upgrade_again_on_an_empty_database(
    empty_database_url,
):
    app = make_app(empty_database_url)
    with app.app_context():
        upgrade()
        tables = set(inspect(db.engine).get_table_names())
        assert {table.name for table in db.metadata.sorted_tables} <= tables
        downgrade(revision="base")
        assert set(inspect(db.engine).get_table_names()) <= {"alembic_version"}
        upgrade()
        assert {table.name for table in db.metadata.sorted_tables} <= set(
            inspect(db.engine).get_table_names()
        )
        db.engine.dispose()
