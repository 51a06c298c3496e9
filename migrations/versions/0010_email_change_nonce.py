"""the one email-change link that may still be used

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 22:10:00.000000

Changing an account's email sends a link to the new address. Each new request names a new
nonce, and only the link that carries it works: a link sent to a mistyped address stops
working as soon as the right one is asked for, rather than staying usable for three days.
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("email_change_nonce", sa.String(length=64), nullable=True))


def downgrade():
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("email_change_nonce")
