"""a payment event kept until its order knows the payment keeps when Stripe made it

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-07 00:20:00.000000

Refunds made in Stripe's dashboard and their failures are now kept, as disputes were, when
they come before the order knows its payment (their objects name no order). A refund's
failure is weighed against Stripe's running total of refunds by when each was made, so the
kept event keeps that time too. Events kept before (disputes) keep none, and need none.
"""

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("processed_payment_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("held_made_at", sa.DateTime(timezone=True), nullable=True))


def downgrade():
    with op.batch_alter_table("processed_payment_events", schema=None) as batch_op:
        batch_op.drop_column("held_made_at")
