"""an account's id is never given to another on SQLite

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 03:40:00.000000

SQLite gives a new row the highest id in use plus one, so an account closed while it held the
highest id left that id to the next account registered: a copy of the closed account's session
or remember cookie (``"<id>:<session version>"``, a new account starting at version 1) signed
in as the newcomer, and the Stripe Customer made under the key ``customer-user-<id>`` within
Stripe's day of keys was the closed account's. With ``AUTOINCREMENT`` SQLite never gives an id
twice, as PostgreSQL's sequences never do. SQLite can't change that on a table: it is made
again (``recreate="always"``), its rows copied; PostgreSQL is left as it is.
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def _users_autoincrement(on: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table(
        "users", recreate="always", table_kwargs={"sqlite_autoincrement": on}
    ):
        pass


def upgrade():
    _users_autoincrement(True)


def downgrade():
    _users_autoincrement(False)
