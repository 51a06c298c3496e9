"""the catalogue's version: a token every change to pieces, options, stock or collections renews

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 15:00:00.000000

Triggers renew ``catalog_version.token`` whenever a row of ``products``, ``product_options``,
``inventory`` or ``collections`` is inserted, updated or deleted, whoever writes it (the shop,
a command, a console). On PostgreSQL they are deferred constraint triggers: they run as the
writing transaction commits, so the one row is locked only while committing and two
checkouts never wait on each other for it. On SQLite (one writer at a time) they run at once.

A migration that rebuilds one of these tables on SQLite (batch mode copies the table and
drops the old one, and its triggers with it) must create its triggers again:
``tests/test_catalog_version.py`` fails when they are missing.
"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TABLES = ("products", "product_options", "inventory", "collections")
EVENTS = ("insert", "update", "delete")


def upgrade():
    op.create_table(
        "catalog_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_catalog_version")),
    )
    if op.get_context().dialect.name == "postgresql":
        op.execute(
            """
            CREATE FUNCTION catalog_version_renew() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                INSERT INTO catalog_version (id, token)
                VALUES (1, md5(random()::text || clock_timestamp()::text))
                ON CONFLICT (id) DO UPDATE SET token = EXCLUDED.token;
                RETURN NULL;
            END
            $$
            """
        )
        op.execute(
            "INSERT INTO catalog_version (id, token) "
            "VALUES (1, md5(random()::text || clock_timestamp()::text))"
        )
        for table in TABLES:
            op.execute(
                f"CREATE CONSTRAINT TRIGGER catalog_version_{table} "
                f"AFTER INSERT OR UPDATE OR DELETE ON {table} "
                "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
                "EXECUTE FUNCTION catalog_version_renew()"
            )
            op.execute(
                f"CREATE TRIGGER catalog_version_{table}_truncate AFTER TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION catalog_version_renew()"
            )
    else:
        op.execute("INSERT INTO catalog_version (id, token) VALUES (1, lower(hex(randomblob(16))))")
        for table in TABLES:
            for event in EVENTS:
                # Names from this module's constants, nothing from outside.
                op.execute(
                    f"CREATE TRIGGER catalog_version_{table}_{event} AFTER {event.upper()} "  # noqa: S608
                    f"ON {table} BEGIN "
                    "INSERT OR REPLACE INTO catalog_version (id, token) "
                    "VALUES (1, lower(hex(randomblob(16)))); END"
                )


def downgrade():
    if op.get_context().dialect.name == "postgresql":
        for table in TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS catalog_version_{table} ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS catalog_version_{table}_truncate ON {table}")
        op.execute("DROP FUNCTION IF EXISTS catalog_version_renew()")
    else:
        for table in TABLES:
            for event in EVENTS:
                op.execute(f"DROP TRIGGER IF EXISTS catalog_version_{table}_{event}")
    op.drop_table("catalog_version")
