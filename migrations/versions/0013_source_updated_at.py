"""pieces and collections keep when the content source last edited them

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 04:20:00.000000

The hourly sync writes a page of Sanity documents fetched before it writes them, and an applier
may get its answer late: a document written by the webhook meanwhile (a piece taken off sale,
a new price) was overwritten by the older copy. Each row now keeps the document's ``_updatedAt``
it was written from, and an older copy is not written.
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

TABLES = ("products", "collections")


def upgrade():
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("source_updated_at", sa.DateTime(timezone=True), nullable=True))


def downgrade():
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("source_updated_at")
