"""an order keeps Stripe's latest report of what it has refunded, and when Stripe made it

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-07 07:00:00.000000

Stripe delivers events in no order. A refund's failure delivered after the report of a later
refund (made after the failure, so leaving it out) was taken off that report's total too: an
order showed less given back than Stripe had, and staff would refund it again. Orders keep
the latest report, so a failure it already leaves out takes nothing more off. Orders whose
reports came before this keep none until their next one.
"""

import sqlalchemy as sa
from alembic import op

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("refunds_reported", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("refunds_reported_at", sa.DateTime(timezone=True), nullable=True))


def downgrade():
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_column("refunds_reported_at")
        batch_op.drop_column("refunds_reported")
