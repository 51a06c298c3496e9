"""an order keeps what the cardholder's bank took back, apart from what the shop refunded

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06 18:00:00.000000

A dispute lost counted in the order's refunded amount, as it must (nothing more can be
refunded of it), and so the shopper's page and cancellation email said the shop had
refunded it "to your original payment method": it was their bank. The order now keeps that
part apart. Disputes lost before this migration are not split out: their flag and timeline
still say so to staff.
"""

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("charged_back_amount", sa.BigInteger(), server_default="0", nullable=False)
        )
        batch_op.create_check_constraint(
            op.f("ck_orders_charged_back_not_negative"), "charged_back_amount >= 0"
        )


def downgrade():
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_orders_charged_back_not_negative"), type_="check")
        batch_op.drop_column("charged_back_amount")
