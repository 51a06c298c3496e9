"""email addresses kept in Unicode's composed form (NFC), and orders' in lower case

Revision ID: 0029
Revises: 0028
Create Date: 2026-12-07 10:30:00.000000

An address holding an accented letter can be typed as one character or as a letter and a
combining accent; the shop took the two for two addresses, so one person could hold two
accounts, and a guest's order to one form was not found as the account's. Addresses are
looked up and kept composed now (``accounts.normalise_email``): those already kept are
composed here. An order's, a commission's and an email's address is kept in lower case too,
as accounts' are: SQLite's ``lower()`` knows only ASCII letters, so "ZOË" typed at checkout
was never found as zoë's order, to export or to erase when her account closed. The links
already emailed for a guest's order carry its address as it was: they are compared as
accounts compare addresses (``orders.order_for_guest_token``), so they still open it. An
account whose composed address another account already holds keeps its own (renaming it
would break the unique address): both stay as they were, each found by
the form it was opened with (``accounts.user_by_email``), and the orders, commissions and
emails sent to the form left keep it too (in lower case), that account's to export and erase.
"""

import unicodedata

import sqlalchemy as sa
from alembic import op

revision = "0029"
down_revision = "0028"
branch_labels = None
depends_on = None

# Tables whose addresses are compared with an account's: the column, and whether it is unique.
COLUMNS = (
    ("users", "email", True),
    ("orders", "email", False),
    ("bespoke_leads", "email", False),
    ("outbox_emails", "to_address", False),
)


def upgrade():
    bind = op.get_bind()
    # Accounts left as they were: what was sent to their form stays theirs, as it was.
    left: set[str] = set()
    for table, column, unique in COLUMNS:
        rows = bind.execute(sa.text(f"SELECT id, {column} FROM {table}")).all()  # noqa: S608
        taken = {email for _, email in rows}
        for row_id, email in rows:
            composed = unicodedata.normalize("NFC", email.lower())
            if unique and composed != email and composed in taken:
                left.add(email)
            if not unique and email.lower() in left:
                composed = email.lower()  # that account's form, in lower case as the rest
            if composed == email or (unique and composed in taken):
                continue
            bind.execute(
                sa.text(f"UPDATE {table} SET {column} = :email WHERE id = :id"),  # noqa: S608
                {"email": composed, "id": row_id},
            )
            taken.add(composed)


def downgrade():
    pass  # the composed form is the same address
