"""a dispute that comes before its order knows the payment is kept until one does

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-06 18:55:00.000000

A dispute finds its order by the payment, which the order learns from its payment's own
report. One that came first (that report retried, or lost until the sweeper found the
payment) matched no order, was acknowledged and dropped: staff never heard of it, and a
dispute lost never counted. The processed event now keeps the payment it waits for and its
object, and the order applies it once it knows that payment.
"""

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("processed_payment_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("held_for_payment", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("held_object", sa.JSON(), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_processed_payment_events_held_for_payment"),
            ["held_for_payment"],
            unique=False,
        )


def downgrade():
    with op.batch_alter_table("processed_payment_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_processed_payment_events_held_for_payment"))
        batch_op.drop_column("held_object")
        batch_op.drop_column("held_for_payment")
