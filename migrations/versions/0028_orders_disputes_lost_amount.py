"""an order keeps what the cardholder's bank took back in lost disputes, as the bank said

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-07 10:00:00.000000

What the order counts taken back by the bank (``charged_back_amount``) is capped by what its
refunds already gave back. A refund that failed at Stripe before the dispute (its failure
delivered after the dispute's close) freed that room, but the order no longer knew what the
bank had taken: it showed £450 taken where the bank took £650, and told staff to give back
again £200 the shopper already had. Orders keep the banks' own figure now; those whose
disputes were lost before this migration take the part they counted.
"""

import sqlalchemy as sa
from alembic import op

revision = "0028"
down_revision = "0027"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("disputes_lost_amount", sa.BigInteger(), server_default="0", nullable=False)
        )
        batch_op.create_check_constraint(
            op.f("ck_orders_disputes_lost_not_negative"), "disputes_lost_amount >= 0"
        )
    op.execute("UPDATE orders SET disputes_lost_amount = charged_back_amount")


def downgrade():
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_orders_disputes_lost_not_negative"), type_="check")
        batch_op.drop_column("disputes_lost_amount")
