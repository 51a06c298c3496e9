"""product images: the Sanity CDN image URLs (and alt text) of a piece

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 09:25:00.000000

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("products", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("images", sa.JSON(), server_default=sa.text("'[]'"), nullable=False)
        )


def downgrade():
    with op.batch_alter_table("products", schema=None) as batch_op:
        batch_op.drop_column("images")
