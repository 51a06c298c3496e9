"""a staff note's form sent twice is one note

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-07 00:50:00.000000

The note forms on an order's and a commission's page carry a key drawn with the form; the
note keeps it, once per order (or commission), so the same form sent twice (a double click
without JavaScript, or sent again when its answer was lost) adds one note. Notes written
before keep none.
"""

import sqlalchemy as sa
from alembic import op

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None

TIMELINES = (("order_events", "order_id"), ("lead_events", "lead_id"))


def upgrade():
    for table, owner in TIMELINES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("request_key", sa.String(length=64), nullable=True))
            batch_op.create_unique_constraint(
                f"uq_{table}_{owner}_request_key", [owner, "request_key"]
            )


def downgrade():
    for table, owner in TIMELINES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(f"uq_{table}_{owner}_request_key", type_="unique")
            batch_op.drop_column("request_key")
