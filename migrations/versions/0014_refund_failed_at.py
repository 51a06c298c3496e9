"""a refund that failed at Stripe keeps when Stripe said so

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 06:30:00.000000

Stripe's running total of a payment's refunds (``charge.refunded``) counts a refund until it
fails, and its reports come in any order. A report made before a failure still counts the
failed refund; one made after does not. The shop took every failure off every report, so a
refund made after one failed, of the same amount, was never counted. Each failure now keeps
the time of Stripe's ``refund.failed`` event, and only reports made before it are corrected.
A refund made in Stripe's dashboard that fails is kept too (a FAILED refund with no key of
the shop's). Failures recorded before this migration have no time: they are taken off every
report, as before.
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.add_column(sa.Column("failed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade():
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.drop_column("failed_at")
