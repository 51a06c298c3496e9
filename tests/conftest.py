"""Fixtures: one migrated database per run (SQLite by default, PostgreSQL when
``TEST_DATABASE_URL`` says so), emptied after every test; an app with CSRF on."""

from __future__ import annotations

import html
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask_migrate import upgrade
from sqlalchemy import event, text

from elysium import create_app
from elysium.config import normalise_database_url
from elysium.extensions import db
from elysium.services.seeding import load_demo_catalogue, seed_catalogue

CSRF_META = re.compile(r'"X-CSRFToken": "([^"]+)"')


def database_url(tmp_dir: Path) -> str:
    url = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    return normalise_database_url(url) if url else f"sqlite:///{tmp_dir / 'test.sqlite3'}"


def make_app(url: str, **overrides) -> Flask:
    config = {
        "TESTING": True,
        "ELYSIUM_ENV": "testing",
        "SECRET_KEY": "test-secret-key-not-for-production",
        "SQLALCHEMY_DATABASE_URI": url,
        **overrides,
    }
    return create_app(config)


def drop_everything(app: Flask) -> None:
    """Start from nothing, so a developer's PostgreSQL test database is always fresh."""
    with app.app_context():
        db.drop_all()
        with db.engine.begin() as connection:
            connection.execute(text("DROP TABLE IF EXISTS alembic_version"))


@pytest.fixture(scope="session")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    url = database_url(tmp_path_factory.mktemp("db"))
    application = make_app(url)
    drop_everything(application)
    with application.app_context():
        upgrade()
    yield application
    with application.app_context():
        db.engine.dispose()


@pytest.fixture(autouse=True)
def _empty_database_after_test(app: Flask) -> Iterator[None]:
    yield
    with app.app_context():
        db.session.remove()
        with db.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                names = ", ".join(table.name for table in db.metadata.sorted_tables)
                connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
            else:
                for table in reversed(db.metadata.sorted_tables):
                    connection.execute(table.delete())


@pytest.fixture
def app_context(app: Flask) -> Iterator[None]:
    with app.app_context():
        yield
        db.session.remove()


@pytest.fixture
def catalogue(app: Flask) -> dict:
    """The demo catalogue, seeded; returns the data it was seeded from."""
    data = load_demo_catalogue()
    with app.app_context():
        seed_catalogue(db.session, data)
        db.session.commit()
        db.session.remove()
    return data


def page_text(response) -> str:
    """The response body with HTML entities decoded, for asserting on what a shopper reads."""
    return html.unescape(response.get_data(as_text=True))


class ShopClient(FlaskClient):
    """A test client that sends the CSRF token the way the browser does (from the page)."""

    csrf_token: str | None = None

    def open(self, *args, **kwargs):
        response = super().open(*args, **kwargs)
        if response.mimetype == "text/html":
            match = CSRF_META.search(response.get_data(as_text=True))
            if match:
                self.csrf_token = match.group(1)
        return response

    def htmx(self, method: str, url: str, **kwargs):
        headers = {"HX-Request": "true", **kwargs.pop("headers", {})}
        if method.upper() != "GET" and self.csrf_token:
            headers.setdefault("X-CSRFToken", self.csrf_token)
        return self.open(url, method=method, headers=headers, **kwargs)


@pytest.fixture
def client(app: Flask) -> ShopClient:
    app.test_client_class = ShopClient
    return app.test_client()  # type: ignore[return-value]


@pytest.fixture
def runner(app: Flask):
    return app.test_cli_runner()


@contextmanager
def count_queries(app: Flask) -> Iterator[list[str]]:
    """Collect every SQL statement the app runs inside the block."""
    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


@pytest.fixture
def queries(app: Flask):
    return lambda: count_queries(app)
