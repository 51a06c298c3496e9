"""an order that ended unpaid keeps when its money came anyway

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 09:30:00.000000

A payment that arrives after its order was cancelled (or after its bank payment failed)
leaves the order as it is and flags it for staff, who refund it or sell the piece again.
The shopper's page and emails said "nothing was charged" meanwhile. The order now keeps when
the money came, so they say what is so. Orders paid late before this migration are not
marked: their flag and timeline still say so to staff.
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("late_payment_at", sa.DateTime(timezone=True), nullable=True))


def downgrade():
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_column("late_payment_at")
