"""Operations: alert incidents (alert_incidents), one row per incident an `alerts`
channel's rules found, open (open_key set, unique) or resolved, with the messages that
announced its raise and its resolution.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""
from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('alert_incidents',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('alert_channel', sa.String(length=63), nullable=False),
    sa.Column('rule', sa.String(length=32), nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('open_key', sa.String(length=255), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('summary', sa.Text(), nullable=False),
    sa.Column('channel', sa.String(length=63), nullable=True),
    sa.Column('destination', sa.String(length=63), nullable=True),
    sa.Column('peer', sa.String(length=255), nullable=True),
    sa.Column('figures', sa.JSON(), nullable=False),
    sa.Column('node', sa.String(length=128), nullable=False),
    sa.Column('first_seen', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen', sa.DateTime(timezone=True), nullable=False),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('raised_message_id', sa.BigInteger(), nullable=True),
    sa.Column('resolved_message_id', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_alert_incidents')),
    sa.UniqueConstraint('open_key', name=op.f('uq_alert_incidents_open_key'))
    )
    with op.batch_alter_table('alert_incidents', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_alert_incidents_alert_channel_state'), ['alert_channel', 'state'], unique=False)
        batch_op.create_index(batch_op.f('ix_alert_incidents_key_id'), ['key', 'id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('alert_incidents', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_alert_incidents_key_id'))
        batch_op.drop_index(batch_op.f('ix_alert_incidents_alert_channel_state'))

    op.drop_table('alert_incidents')
