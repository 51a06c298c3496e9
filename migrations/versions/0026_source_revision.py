"""pieces and collections keep the revision of the studio's edit they were written from

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-07 06:30:00.000000

Sanity stamps ``_updatedAt`` to the second: a second publish of a document within the same
second as the first was taken for the edit already written and never applied (the shop kept
the first price). The revision (``_rev``) tells them apart. Rows written before keep none: a document of the
same time is taken for the edit they hold, as before, until the next edit writes one.
"""

import sqlalchemy as sa
from alembic import op

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None

TABLES = ("collections", "products")


def upgrade():
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("source_revision", sa.String(length=64), nullable=True))


def downgrade():
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("source_revision")
