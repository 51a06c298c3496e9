"""an email's idempotency key is made from when it was queued, or renewed

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06 10:05:00.000000

Migration 0015 timed an email's retries from its first try and made its idempotency key from
that time too. During a deploy the release before it (which makes the key from when the email
was queued) and this one send side by side, and an email tried by one and retried by the other
went under two keys: sent twice. The key is made from when it was queued again, or from
``key_made_at`` once ``flask emails retry-failed`` gives an email past its key's day a new one.
An email already tried under 0015's release keeps the key it was tried under: its
``key_made_at`` is its ``tries_began_at`` (for one migrated by 0015 itself, that is when it was
queued, the key it always had).
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("outbox_emails", schema=None) as batch_op:
        batch_op.add_column(sa.Column("key_made_at", sa.DateTime(timezone=True), nullable=True))
    op.execute(
        "UPDATE outbox_emails SET key_made_at = tries_began_at WHERE tries_began_at IS NOT NULL"
    )


def downgrade():
    with op.batch_alter_table("outbox_emails", schema=None) as batch_op:
        batch_op.drop_column("key_made_at")
