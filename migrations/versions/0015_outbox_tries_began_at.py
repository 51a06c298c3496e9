"""an email's tries are timed from the first, not from when it was queued

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06 09:10:00.000000

The outbox now retries an email until its first try is about a day old (the provider knows
its idempotency key for 24 hours), not a fixed number of times, and an email the operator
sends again after that starts under a new key. Both are timed from ``tries_began_at``. An
email already tried keeps its key, which was made from the time it was queued; one never
tried gets its time at its first try.
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("outbox_emails", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tries_began_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE outbox_emails SET tries_began_at = created_at WHERE attempts > 0")


def downgrade():
    with op.batch_alter_table("outbox_emails", schema=None) as batch_op:
        batch_op.drop_column("tries_began_at")
