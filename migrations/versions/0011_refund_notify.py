"""a refund keeps whether its shopper is to be emailed

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 22:25:00.000000

A refund Stripe never confirmed is retried from the order's page, by whoever is there then;
the choice made on the first form ("Email the customer") is kept on the refund, so the
retry that finally succeeds tells the shopper as asked.
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("notify", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade():
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.drop_column("notify")
