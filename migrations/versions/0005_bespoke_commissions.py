"""bespoke commissions: statuses, timeline, quotes and deposits; product view indexes

``bespoke_leads`` had no writer before this revision (no page or command created a lead), so
it is rebuilt in its new shape rather than altered: the status values change, and a CHECK
constraint on a non-native enum can't be altered the same way on SQLite and PostgreSQL. The
rebuild refuses to run if the table holds any row, so no lead is ever dropped.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 08:35:05.110466

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


LEAD_STATUSES = ('new', 'contacted', 'consultation', 'quoted', 'won', 'lost')
OLD_LEAD_STATUSES = ('new', 'contacted', 'designing', 'quoted', 'won', 'closed')


def _refuse_if_leads_exist():
    if op.get_bind().execute(sa.text('SELECT COUNT(*) FROM bespoke_leads')).scalar():
        raise RuntimeError(
            'bespoke_leads holds rows: this revision rebuilds the table and would drop them'
        )


def _drop_leads():
    with op.batch_alter_table('bespoke_leads', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_bespoke_leads_status'))
        batch_op.drop_index(batch_op.f('ix_bespoke_leads_created_at'))
    op.drop_table('bespoke_leads')


def upgrade():
    _refuse_if_leads_exist()
    _drop_leads()
    op.create_table('bespoke_leads',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('phone', sa.String(length=40), nullable=False),
    sa.Column('category', sa.String(length=40), nullable=False),
    sa.Column('preferred_metal', sa.String(length=40), nullable=False),
    sa.Column('budget', sa.String(length=80), nullable=False),
    sa.Column('wanted_by', sa.Date(), nullable=True),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('product_id', sa.Integer(), nullable=True),
    sa.Column('configuration', sa.JSON(), nullable=False),
    sa.Column('contact_consent', sa.Boolean(), nullable=False),
    sa.Column('status', sa.Enum(*LEAD_STATUSES, name='lead_status', native_enum=False, create_constraint=True, length=12), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('assigned_to_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['assigned_to_id'], ['users.id'], name=op.f('fk_bespoke_leads_assigned_to_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['product_id'], ['products.id'], name=op.f('fk_bespoke_leads_product_id_products'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_bespoke_leads_user_id_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_bespoke_leads'))
    )
    with op.batch_alter_table('bespoke_leads', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_bespoke_leads_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_bespoke_leads_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_bespoke_leads_user_id'), ['user_id'], unique=False)

    op.create_table('bespoke_quotes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('lead_id', sa.Integer(), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('price', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('deposit_percent', sa.Integer(), nullable=False),
    sa.Column('deposit_amount', sa.BigInteger(), nullable=False),
    sa.Column('valid_until', sa.Date(), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('withdrawn_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('paid_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint('deposit_amount > 0', name=op.f('ck_bespoke_quotes_deposit_amount_positive')),
    sa.CheckConstraint('deposit_percent BETWEEN 1 AND 100', name=op.f('ck_bespoke_quotes_deposit_percent_range')),
    sa.CheckConstraint('price > 0', name=op.f('ck_bespoke_quotes_price_positive')),
    sa.ForeignKeyConstraint(['created_by_id'], ['users.id'], name=op.f('fk_bespoke_quotes_created_by_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['lead_id'], ['bespoke_leads.id'], name=op.f('fk_bespoke_quotes_lead_id_bespoke_leads'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_bespoke_quotes'))
    )
    with op.batch_alter_table('bespoke_quotes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_bespoke_quotes_lead_id'), ['lead_id'], unique=False)

    op.create_table('lead_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('lead_id', sa.Integer(), nullable=False),
    sa.Column('from_status', sa.Enum('new', 'contacted', 'consultation', 'quoted', 'won', 'lost', name='lead_from_status', native_enum=False, create_constraint=True), nullable=True),
    sa.Column('to_status', sa.Enum('new', 'contacted', 'consultation', 'quoted', 'won', 'lost', name='lead_to_status', native_enum=False, create_constraint=True), nullable=True),
    sa.Column('actor', sa.String(length=120), nullable=False),
    sa.Column('actor_user_id', sa.Integer(), nullable=True),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['actor_user_id'], ['users.id'], name=op.f('fk_lead_events_actor_user_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['lead_id'], ['bespoke_leads.id'], name=op.f('fk_lead_events_lead_id_bespoke_leads'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_lead_events'))
    )
    with op.batch_alter_table('lead_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_lead_events_lead_id'), ['lead_id'], unique=False)

    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.add_column(sa.Column('bespoke_quote_id', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_orders_bespoke_quote_id'), ['bespoke_quote_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_orders_bespoke_quote_id_bespoke_quotes'), 'bespoke_quotes', ['bespoke_quote_id'], ['id'], ondelete='SET NULL')

    with op.batch_alter_table('product_views', schema=None) as batch_op:
        batch_op.create_index('ix_product_views_user_viewed', ['user_id', 'viewed_at'], unique=False)
        batch_op.create_index('ix_product_views_viewed_at', ['viewed_at'], unique=False)
        batch_op.create_index('ix_product_views_visitor_viewed', ['visitor', 'viewed_at'], unique=False)

    # ### end Alembic commands ###


def downgrade():
    # ### commands auto generated by Alembic - please adjust! ###
    with op.batch_alter_table('product_views', schema=None) as batch_op:
        batch_op.drop_index('ix_product_views_visitor_viewed')
        batch_op.drop_index('ix_product_views_viewed_at')
        batch_op.drop_index('ix_product_views_user_viewed')

    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_orders_bespoke_quote_id_bespoke_quotes'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_orders_bespoke_quote_id'))
        batch_op.drop_column('bespoke_quote_id')

    with op.batch_alter_table('lead_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_lead_events_lead_id'))

    op.drop_table('lead_events')
    with op.batch_alter_table('bespoke_quotes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_bespoke_quotes_lead_id'))

    op.drop_table('bespoke_quotes')
    _refuse_if_leads_exist()
    with op.batch_alter_table('bespoke_leads', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_bespoke_leads_user_id'))
    _drop_leads()
    op.create_table('bespoke_leads',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('phone', sa.String(length=40), nullable=False),
    sa.Column('category', sa.String(length=40), nullable=False),
    sa.Column('budget', sa.String(length=80), nullable=False),
    sa.Column('preferred_metal', sa.String(length=40), nullable=False),
    sa.Column('occasion_date', sa.String(length=40), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('marketing_consent', sa.Boolean(), nullable=False),
    sa.Column('status', sa.Enum(*OLD_LEAD_STATUSES, name='lead_status', native_enum=False, create_constraint=True), nullable=False),
    sa.Column('staff_notes', sa.Text(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('assigned_to_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['assigned_to_id'], ['users.id'], name=op.f('fk_bespoke_leads_assigned_to_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_bespoke_leads_user_id_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_bespoke_leads'))
    )
    with op.batch_alter_table('bespoke_leads', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_bespoke_leads_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_bespoke_leads_status'), ['status'], unique=False)
    # ### end Alembic commands ###
