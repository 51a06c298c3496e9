"""an order line keeps the day its made-to-order piece was promised to ship by

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-06 18:10:00.000000

The checkout page says when a made-to-order piece ships ("ships in about 6 weeks, by 17
January"); the confirmation and the order's page said nothing of it, so a shopper who paid for
a piece weeks away was never reminded. The line now keeps that day. Lines bought before this
migration keep none.
"""

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("order_lines", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ships_by", sa.Date(), nullable=True))


def downgrade():
    with op.batch_alter_table("order_lines", schema=None) as batch_op:
        batch_op.drop_column("ships_by")
