"""catalog changes kept until applied, collection hero images, order line images

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 14:00:00.000000

"""

import sqlalchemy as sa
from alembic import op


# revision identifiers, used by Alembic.
revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "catalog_changes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("document_id", sa.String(length=120), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_catalog_changes")),
        sa.UniqueConstraint("document_id", name=op.f("uq_catalog_changes_document_id")),
    )
    with op.batch_alter_table("catalog_changes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_catalog_changes_next_attempt_at"), ["next_attempt_at"], unique=False
        )
    with op.batch_alter_table("collections", schema=None) as batch_op:
        batch_op.add_column(sa.Column("image", sa.JSON(), nullable=True))
    with op.batch_alter_table("order_lines", schema=None) as batch_op:
        batch_op.add_column(sa.Column("image_url", sa.String(length=500), nullable=True))


def downgrade():
    with op.batch_alter_table("order_lines", schema=None) as batch_op:
        batch_op.drop_column("image_url")
    with op.batch_alter_table("collections", schema=None) as batch_op:
        batch_op.drop_column("image")
    with op.batch_alter_table("catalog_changes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_catalog_changes_next_attempt_at"))
    op.drop_table("catalog_changes")
