"""Fixtures: one migrated database per run (SQLite by default, PostgreSQL when
``TEST_DATABASE_URL`` says so), emptied after every test; an app with CSRF on.

The suite never sees the developer's world: no ``.env`` (the app factory reads none), none of
the shop's settings from the shell (removed for the whole run), never ``DATABASE_URL``.
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache as once
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask_migrate import upgrade
from sqlalchemy import event, select, text
from sqlalchemy.pool import NullPool

from elysium import create_app
from elysium.config import normalise_database_url
from elysium.extensions import db, limiter
from elysium.services.seeding import load_demo_catalogue, seed_catalogue
from elysium.web.fragments import forget_kept
from tests.html import csrf_token

pytest_plugins = ["tests.support.checkout"]

WEBHOOK_SECRET = "whsec_test_elysium"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Argon2id at its cheapest: the tests check what a hash does, not how long it takes.
CHEAP_PASSWORD_HASHING = {
    "PASSWORD_HASH_TIME_COST": 1,
    "PASSWORD_HASH_MEMORY_KIB": 8,
    "PASSWORD_HASH_PARALLELISM": 1,
}


def app_settings() -> set[str]:
    """Every setting the app reads from the environment: each is in ``.env.example`` (commented
    out or not), and the factory also reads ``ELYSIUM_INSTANCE_PATH``."""
    names = re.findall(
        r"^#?\s*([A-Z][A-Z0-9_]*)=", (PROJECT_ROOT / ".env.example").read_text(), re.M
    )
    return {*names, "ELYSIUM_INSTANCE_PATH"}


@pytest.fixture(scope="session", autouse=True)
def _no_settings_from_the_shell(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Run as if the developer had exported nothing (a ``EMAIL_BACKEND=resend`` in the shell
    must not reach Resend); ``TEST_DATABASE_URL`` is the suite's own, read by database_url().
    The instance folder is a temporary one, so no test writes into the checkout's, and the
    processes a test starts (``flask``, ``gunicorn wsgi:app``) skip ``.env`` too."""
    with pytest.MonkeyPatch.context() as patch:
        for name in app_settings() - {"TEST_DATABASE_URL"}:
            patch.delenv(name, raising=False)
        patch.setenv("ELYSIUM_INSTANCE_PATH", str(tmp_path_factory.mktemp("instance")))
        patch.setenv("FLASK_SKIP_DOTENV", "1")
        yield


def database_url(tmp_dir: Path) -> str:
    """``TEST_DATABASE_URL``, or a throwaway SQLite file: never ``DATABASE_URL``, since the
    suite drops every table of the database it uses."""
    url = os.environ.get("TEST_DATABASE_URL")
    return normalise_database_url(url) if url else f"sqlite:///{tmp_dir / 'test.sqlite3'}"


def make_app(url: str, pooled: bool = False, **overrides) -> Flask:
    """An app on the test database. Only the suite's own app keeps a connection pool: the
    others, dropped by their tests, would otherwise leave connections for the garbage collector.
    """
    config = {
        "TESTING": True,
        "ELYSIUM_ENV": "testing",
        "SECRET_KEY": "test-secret-key-not-for-production",
        "SQLALCHEMY_DATABASE_URI": url,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        **CHEAP_PASSWORD_HASHING,
        **overrides,
    }
    if not pooled:
        config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", {"poolclass": NullPool})
    app = create_app(config)
    app.test_client_class = ShopClient
    return app


def drop_everything(app: Flask) -> None:
    """Start from nothing, so a developer's PostgreSQL test database is always fresh."""
    with app.app_context():
        db.drop_all()
        with db.engine.begin() as connection:
            connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
            if connection.dialect.name == "postgresql":
                # What migrations create besides tables (the catalogue version's trigger).
                connection.execute(text("DROP FUNCTION IF EXISTS catalog_version_renew CASCADE"))


def without_waiting_for_the_disk(engine) -> None:
    """Commits on the throwaway test database don't wait for the WAL to reach the disk (every
    connection opened from now on, the shop processes' too): a crash can lose the last commits
    of a test database, never its consistency. Needs the database's owner; otherwise skipped."""
    with engine.begin() as connection:
        owner = connection.scalar(
            text(
                "SELECT pg_get_userbyid(datdba) = current_user OR rolsuper FROM pg_database,"
                " pg_roles WHERE datname = current_database() AND rolname = current_user"
            )
        )
        if owner:
            name = connection.scalar(text("SELECT current_database()"))
            connection.execute(text(f'ALTER DATABASE "{name}" SET synchronous_commit = off'))
    engine.dispose()


@pytest.fixture(scope="session")
def app(
    _no_settings_from_the_shell: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Flask]:
    url = database_url(tmp_path_factory.mktemp("db"))
    application = make_app(url, pooled=True)
    drop_everything(application)
    with application.app_context():
        upgrade()
        if db.engine.dialect.name == "postgresql":
            without_waiting_for_the_disk(db.engine)
    yield application
    with application.app_context():
        db.engine.dispose()


@pytest.fixture(autouse=True)
def _empty_database_after_test(app: Flask) -> Iterator[None]:
    yield
    limiter.reset()
    with app.app_context():
        forget_kept()  # what one test's pages cached (trending pieces) never reaches the next
        db.session.remove()
        with db.engine.begin() as connection:
            # DELETE, not TRUNCATE: on tables this small it is several times faster. Ids start
            # again from 1 as on a fresh database (references like B00001 are made from them).
            for table in reversed(db.metadata.sorted_tables):
                connection.execute(table.delete())
            if connection.dialect.name == "postgresql":
                connection.execute(text(restart_ids_statement()))


@once
def restart_ids_statement() -> str:
    """One statement setting every table's id sequence back to 1 (PostgreSQL)."""
    calls = [
        f"setval(pg_get_serial_sequence('{table.name}', 'id'), 1, false)"
        for table in db.metadata.sorted_tables
        if "id" in table.columns
        and table.columns["id"].autoincrement in (True, "auto")
        and table.columns["id"].primary_key
    ]
    return "SELECT " + ", ".join(calls)


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
        write_seeded_rows(data)
        db.session.remove()
    return data


# The rows the run's first seed of the demo catalogue wrote, table by table (parents first).
SEEDED_ROWS: dict[str, list[dict]] = {}


def write_seeded_rows(data: dict) -> None:
    """Seed ``data`` (the demo catalogue) as ``seed_catalogue`` does, the first time through it,
    and from then on by writing the rows that first seed wrote, one statement a table: the
    same rows and ids, the catalogue's version renewed by its triggers as any write renews it.
    About 1,500 tests start from the catalogue, and seeding it through the ORM each time cost
    the suite minutes on PostgreSQL."""
    tables = [t for t in db.metadata.sorted_tables if t.name != "catalog_version"]
    if not SEEDED_ROWS:
        keys = {t.name: list(t.primary_key.columns) for t in tables}
        before = {t.name: set(db.session.execute(select(*keys[t.name])).all()) for t in tables}
        seed_catalogue(db.session, data)
        db.session.commit()
        for table in tables:
            rows = [
                row._asdict()
                for row in db.session.execute(table.select())
                if tuple(getattr(row, c.name) for c in keys[table.name]) not in before[table.name]
            ]
            if rows:
                SEEDED_ROWS[table.name] = rows
        return
    with db.engine.begin() as connection:
        for table in tables:
            if rows := SEEDED_ROWS.get(table.name):
                connection.execute(table.insert(), rows)
        if connection.dialect.name == "postgresql":
            connection.execute(text(sequences_after_seeding_statement()))


@once
def sequences_after_seeding_statement() -> str:
    """One statement setting the id sequence of each table the seed wrote past its rows."""
    calls = [
        f"setval(pg_get_serial_sequence('{name}', 'id'), {max(row['id'] for row in rows)})"
        for name, rows in SEEDED_ROWS.items()
        if "id" in rows[0]
    ]
    return "SELECT " + ", ".join(calls)


def page_text(response) -> str:
    """The response body with HTML entities decoded, for asserting on what a shopper reads."""
    return html.unescape(response.get_data(as_text=True))


class ShopClient(FlaskClient):
    """A test client that sends the CSRF token the way the browser does (from the page)."""

    csrf_token: str | None = None

    def open(self, *args, **kwargs):
        response = super().open(*args, **kwargs)
        if response.mimetype == "text/html" and (token := csrf_token(response)):
            self.csrf_token = token
        return response

    def submit(self, page: str, data: dict, action: str | None = None, **kwargs):
        """Open a form's page, then post the form to its action with the page's CSRF token."""
        self.get(page)
        return self.post(action or page, data={"csrf_token": self.csrf_token, **data}, **kwargs)

    def htmx(self, method: str, url: str, **kwargs):
        headers = {"HX-Request": "true", **kwargs.pop("headers", {})}
        if method.upper() != "GET" and self.csrf_token:
            headers.setdefault("X-CSRFToken", self.csrf_token)
        return self.open(url, method=method, headers=headers, **kwargs)


@pytest.fixture
def client(app: Flask) -> ShopClient:
    return app.test_client()  # type: ignore[return-value]


PASSWORD = "correct horse battery staple"


def create_user(
    email: str = "ada@example.com",
    password: str | None = PASSWORD,
    *,
    verified: bool = True,
    **fields,
) -> int:
    """A user straight in the database (the registration flow has its own tests)."""
    from elysium.models import CustomerProfile, User
    from elysium.models.types import utcnow
    from elysium.services.passwords import hash_password

    user = User(
        email=email,
        password_hash=hash_password(password) if password else None,
        email_verified_at=utcnow() if verified else None,
        first_name=fields.pop("first_name", "Ada"),
        last_name=fields.pop("last_name", "Lovelace"),
        **fields,
    )
    user.profile = CustomerProfile()
    db.session.add(user)
    db.session.commit()
    return user.id


class AuthActions:
    """Sign in and out through the real forms, as a shopper would."""

    def __init__(self, app: Flask, client: ShopClient):
        self.app = app
        self.client = client

    def create_user(self, email: str = "ada@example.com", password: str | None = PASSWORD, **kw):
        with self.app.app_context():
            return create_user(email, password, **kw)

    def login(self, email: str = "ada@example.com", password: str = PASSWORD, **extra):
        return self.client.submit("/auth/login", {"email": email, "password": password, **extra})

    def logout(self):
        return self.client.submit("/account", {}, action="/auth/logout")


@pytest.fixture
def auth(app: Flask, client: ShopClient) -> AuthActions:
    return AuthActions(app, client)


def sent_emails(app: Flask, to: str | None = None) -> list:
    """Emails in the outbox, oldest first, whatever their status (the worker sends them later)."""
    from elysium.models import OutboxEmail

    with app.app_context():
        stmt = db.select(OutboxEmail).order_by(OutboxEmail.id)
        if to:
            stmt = stmt.where(OutboxEmail.to_address == to)
        emails = db.session.scalars(stmt).all()
        db.session.expunge_all()
        return list(emails)


def link_in(email, path_prefix: str) -> str:
    """The path of the first link in an email's text that starts with ``path_prefix``."""
    match = re.search(r"https?://[^/\s]+(" + re.escape(path_prefix) + r"[^\s]*)", email.body_text)
    assert match, f"no {path_prefix} link in: {email.body_text}"
    return match.group(1)


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
