"""an account's Stripe customer keeps the email address Stripe was last given

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06 15:00:00.000000

A Stripe customer is made with the account's email at its first checkout and reused after.
Once the account's email changed, Stripe went on prefilling the old address on the payment
page and sending its receipts there. The address Stripe holds is kept beside the customer, so
the next checkout after a change tells Stripe the new one. An account that has a customer
today is not known to have given Stripe its present address (it may have changed since), so
it starts with none kept: its next checkout tells Stripe, once.
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("stripe_customer_email", sa.String(320), nullable=True))


def downgrade():
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("stripe_customer_email")
