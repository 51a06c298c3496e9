"""a commission request keeps the form it was sent from, so a form sent twice is one request

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-06 21:40:00.000000

The same enquiry form sent twice (a double click, or sent again when its answer was lost)
made two requests, two references and four emails. Each drawn form now carries a nonce in its
signed start token; the request keeps it, once. Requests made before keep none.
"""

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("bespoke_leads", schema=None) as batch_op:
        batch_op.add_column(sa.Column("form_nonce", sa.String(length=32), nullable=True))
        batch_op.create_unique_constraint("uq_bespoke_leads_form_nonce", ["form_nonce"])


def downgrade():
    with op.batch_alter_table("bespoke_leads", schema=None) as batch_op:
        batch_op.drop_constraint("uq_bespoke_leads_form_nonce", type_="unique")
        batch_op.drop_column("form_nonce")
