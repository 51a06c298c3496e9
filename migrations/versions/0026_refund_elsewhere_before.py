"""a refund keeps what was given back outside the shop when it was asked

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-07 06:00:00.000000

Stripe's report of a refund made in its dashboard, arriving while one of the shop's waits for
Stripe's answer, is taken for the shop's and tells the shopper nothing; once Stripe answers,
what it lists given back outside the shop beyond what was counted when the refund was asked
is told. A refund still waiting when this runs takes what its order counts now.
"""

import sqlalchemy as sa
from alembic import op

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("elsewhere_before", sa.BigInteger(), server_default="0", nullable=False)
        )
    op.execute(
        """
        UPDATE refunds SET elsewhere_before = (
            SELECT CASE WHEN counted > 0 THEN counted ELSE 0 END FROM (
                SELECT orders.refunded_amount - orders.charged_back_amount - COALESCE((
                    SELECT SUM(accepted.amount) FROM refunds AS accepted
                    WHERE accepted.order_id = orders.id AND accepted.status = 'succeeded'
                ), 0) AS counted
                FROM orders WHERE orders.id = refunds.order_id
            ) AS elsewhere
        )
        WHERE status = 'pending'
        """
    )


def downgrade():
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.drop_column("elsewhere_before")
