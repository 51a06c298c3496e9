"""bag lines, saved addresses and wishlist pieces never take a removed one's id on SQLite

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-07 01:10:00.000000

SQLite gives a new row the highest id in use plus one. A bag page left open in another tab
names its lines by id: when the line with the highest id was removed in one tab and a piece
added, the new line took its id, and the first tab's quantity change or removal then changed
the new piece. A saved address deleted the same way deleted another. Made with
``AUTOINCREMENT``, as the accounts' table is (0012): SQLite can't change that on a table, so
each is made again (``recreate="always"``), its rows copied; PostgreSQL's sequences never give
an id twice and are left as they are. The addresses' partial unique indexes (one default each)
are made again with their conditions.
"""

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None

TABLES = ("cart_lines", "addresses", "wishlist_items")
DEFAULTS = ("shipping", "billing")


def _autoincrement(on: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in TABLES:
        with op.batch_alter_table(
            table, recreate="always", table_kwargs={"sqlite_autoincrement": on}
        ):
            pass
    # Reflection may not carry an index's WHERE: each "one default" index is made again whole.
    for kind in DEFAULTS:
        op.execute(sa.text(f"DROP INDEX IF EXISTS uq_addresses_default_{kind}"))
        op.execute(
            sa.text(
                f"CREATE UNIQUE INDEX uq_addresses_default_{kind} ON addresses (user_id) "
                f"WHERE is_default_{kind}"
            )
        )


def upgrade():
    _autoincrement(True)


def downgrade():
    _autoincrement(False)
