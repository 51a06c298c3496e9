"""The migrations build the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid

import pytest
from flask_migrate import downgrade, upgrade
from sqlalchemy import create_engine, inspect, select, text
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


def test_addresses_kept_before_are_composed_and_an_orders_put_in_lower_case(empty_database_url):
    """Migration 0029: an account whose address holds a combining accent is found by the
    address as it is now looked up (composed), and an order's and an email's address as
    accounts keep theirs; an account whose composed address another holds keeps its own.
    The links emailed before (a guest's order, an account's confirmation) still open."""
    from elysium.models import Order, User
    from elysium.models.outbox import OutboxEmail
    from elysium.services import accounts, orders
    from tests.conftest import link_in

    combining, composed = "zoe\u0308@example.com", "zo\u00eb@example.com"
    typed = "ZOE\u0308@Example.com"
    app = make_app(empty_database_url)
    with app.app_context():
        upgrade(revision="0028")
        order = Order(
            number="ELY-ZOE1",
            email=typed,
            currency="GBP",
            subtotal=100,
            shipping=0,
            total=100,
            shipping_address={},
            billing_address={},
        )
        db.session.add_all(
            [
                zoe := User(email=combining, first_name="Zoë", last_name="A"),
                User(email="jose\u0301@example.com", first_name="José", last_name="B"),
                User(email="jos\u00e9@example.com", first_name="José", last_name="C"),
                order,
                OutboxEmail(to_address=typed, subject="s", template="t", body_text="b"),
            ]
        )
        db.session.commit()
        emailed_link = f"/orders/ELY-ZOE1?token={orders.guest_link_token(order)}"
        accounts.send_confirmation(db.session, zoe)  # she has not confirmed her address yet
        db.session.commit()
        [confirmation] = db.session.scalars(
            select(OutboxEmail).where(OutboxEmail.user_id == zoe.id)
        )
        confirm_link = link_in(confirmation, "/auth/confirm/")

        upgrade()

        emails = db.session.scalars(select(User.email).order_by(User.id)).all()
        assert emails == [composed, "jose\u0301@example.com", "jos\u00e9@example.com"]
        assert db.session.scalars(select(Order.email)).one() == composed
        assert set(db.session.scalars(select(OutboxEmail.to_address))) == {composed}
        db.session.remove()
    assert app.test_client().get(emailed_link).status_code == 200
    opened = app.test_client().get(confirm_link)
    assert opened.status_code == 200
    assert "not valid any more" not in opened.get_data(as_text=True)
    with app.app_context():
        db.engine.dispose()


def test_what_was_sent_to_an_account_the_migration_leaves_stays_that_accounts(empty_database_url):
    """Migration 0029 leaves one person's two accounts, "rené" typed two ways, as they were.
    A guest order to the form it left was composed, and so became the other account's: its
    own export left it out, and closing it left the order's address behind; kept in its
    capitals, SQLite's lower() (ASCII only) never matched its "Ø" either (found by review)."""
    from elysium.models import Order, User
    from elysium.services import account_data

    combining, composed = "bj\u00f8rn.rene\u0301@example.com", "bj\u00f8rn.ren\u00e9@example.com"
    app = make_app(empty_database_url)
    with app.app_context():
        upgrade(revision="0028")
        first = User(email=combining, first_name="Bjørn", last_name="B")
        other = User(email=composed, first_name="Bjørn", last_name="C")
        order = Order(
            number="ELY-BJ1",
            email="BJ\u00d8RN.RENE\u0301@EXAMPLE.COM",
            currency="GBP",
            subtotal=100,
            shipping=0,
            total=100,
            shipping_address={"full_name": "Bjørn B"},
            billing_address={},
        )
        db.session.add_all([first, other, order])
        db.session.commit()

        upgrade()

        exported = [
            [row["number"] for row in account_data.export(db.session, user)["orders"]]
            for user in (first, other)
        ]
        assert exported == [["ELY-BJ1"], []]
        db.session.remove()
        db.engine.dispose()
