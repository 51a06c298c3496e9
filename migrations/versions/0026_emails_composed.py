"""an email address is kept composed (NFC), so one address is one account

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-07 03:00:00.000000

An address with an accent typed as a letter and a combining mark ("e" + U+0301) and the same
address typed with the accented letter ("é") were two addresses: two accounts, and a guest's
order not found as the account's. Addresses are now composed (NFC) as they are stored and
looked up; this composes those stored before. Only rows with a character beyond ASCII can
change, and are read. An account whose composed address another account already has keeps
its own (both exist: staff merge them by hand) and is named in the migration's output.
"""

import unicodedata

import sqlalchemy as sa
from alembic import op

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None

# (table, column): users' addresses are lower-cased as well (``normalise_email``); the others
# keep the case they were typed in.
ADDRESSES = (("users", "email"), ("orders", "email"), ("bespoke_leads", "email"))


def upgrade():
    connection = op.get_bind()
    for table, column in ADDRESSES:
        rows = connection.execute(
            sa.text(f"SELECT id, {column} FROM {table} WHERE {column} IS NOT NULL")  # noqa: S608
        ).all()
        for row_id, address in rows:
            if address.isascii():
                continue
            composed = unicodedata.normalize("NFC", address)
            if composed == address:
                continue
            if table == "users":
                taken = connection.execute(
                    sa.text("SELECT id FROM users WHERE email = :email"), {"email": composed}
                ).first()
                if taken is not None:
                    print(f"users {row_id} and {taken[0]} have one address: {composed!r}")
                    continue
            connection.execute(
                sa.text(f"UPDATE {table} SET {column} = :address WHERE id = :id"),  # noqa: S608
                {"address": composed, "id": row_id},
            )


def downgrade():
    """Composed addresses are the same addresses: nothing to undo."""
