"""Initial schema: messages, their stages, the outbox, and the hash-chained audit ledger.

The audit ledger is one hash chain per writer; `audit_head` holds each chain's last event.

Revision ID: 0001
Revises: 
Create Date: 2026-11-24
"""
from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('audit_events',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('chain', sa.String(length=128), server_default='default', nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=128), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('channel', sa.String(length=63), nullable=True),
    sa.Column('message_id', sa.BigInteger(), nullable=True),
    sa.Column('patient_id', sa.String(length=64), nullable=True),
    sa.Column('accession', sa.String(length=64), nullable=True),
    sa.Column('study_uid', sa.String(length=64), nullable=True),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_audit_events'))
    )
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_events_accession_seq'), ['accession', 'seq'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_events_actor_seq'), ['actor', 'seq'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_events_at'), ['at'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_events_chain_seq'), ['chain', 'seq'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_events_channel_seq'), ['channel', 'seq'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_events_message_id'), ['message_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_events_patient_id_seq'), ['patient_id', 'seq'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_events_study_uid_seq'), ['study_uid', 'seq'], unique=False)

    op.create_table('audit_head',
    sa.Column('chain', sa.String(length=128), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.Column('count', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('chain', name=op.f('pk_audit_head'))
    )
    op.create_table('messages',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('uid', sa.String(length=32), nullable=False),
    sa.Column('channel', sa.String(length=63), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('generation', sa.Integer(), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('source', sa.String(length=255), nullable=False),
    sa.Column('content_type', sa.String(length=127), nullable=False),
    sa.Column('dedup_key', sa.String(length=255), nullable=True),
    sa.Column('patient_id', sa.String(length=64), nullable=True),
    sa.Column('accession', sa.String(length=64), nullable=True),
    sa.Column('study_uid', sa.String(length=64), nullable=True),
    sa.Column('metadata', sa.JSON(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_messages')),
    sa.UniqueConstraint('channel', 'dedup_key', name=op.f('uq_messages_channel_dedup_key')),
    sa.UniqueConstraint('uid', name=op.f('uq_messages_uid'))
    )
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_messages_accession'), ['accession'], unique=False)
        batch_op.create_index(batch_op.f('ix_messages_channel_status_id'), ['channel', 'status', 'id'], unique=False)
        batch_op.create_index(batch_op.f('ix_messages_patient_id'), ['patient_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_messages_received_at'), ['received_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_messages_status_id'), ['status', 'id'], unique=False)
        batch_op.create_index(batch_op.f('ix_messages_study_uid'), ['study_uid'], unique=False)

    op.create_table('message_stages',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('message_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('generation', sa.Integer(), nullable=False),
    sa.Column('stage', sa.String(length=16), nullable=False),
    sa.Column('destination', sa.String(length=63), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('content_type', sa.String(length=127), nullable=True),
    sa.Column('content', sa.LargeBinary(), nullable=True),
    sa.Column('content_sha256', sa.String(length=64), nullable=True),
    sa.Column('content_size', sa.BigInteger(), nullable=True),
    sa.Column('in_blob', sa.Boolean(), nullable=False),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['message_id'], ['messages.id'], name=op.f('fk_message_stages_message_id_messages'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_message_stages'))
    )
    with op.batch_alter_table('message_stages', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_message_stages_content_sha256'), ['content_sha256'], unique=False)
        batch_op.create_index(batch_op.f('ix_message_stages_message_id_id'), ['message_id', 'id'], unique=False)

    op.create_table('deliveries',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('message_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('channel', sa.String(length=63), nullable=False),
    sa.Column('destination', sa.String(length=63), nullable=False),
    sa.Column('generation', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('lease_owner', sa.String(length=128), nullable=True),
    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('ordering_key', sa.String(length=255), nullable=True),
    sa.Column('idempotency_key', sa.String(length=255), nullable=False),
    sa.Column('content_stage_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['content_stage_id'], ['message_stages.id'], name=op.f('fk_deliveries_content_stage_id_message_stages'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['message_id'], ['messages.id'], name=op.f('fk_deliveries_message_id_messages'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_deliveries')),
    sa.UniqueConstraint('idempotency_key', name=op.f('uq_deliveries_idempotency_key'))
    )
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_deliveries_channel_destination_ordering_key_id'), ['channel', 'destination', 'ordering_key', 'id'], unique=False)
        batch_op.create_index(batch_op.f('ix_deliveries_channel_destination_status_next_attempt_at'), ['channel', 'destination', 'status', 'next_attempt_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_deliveries_message_id'), ['message_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_deliveries_status_lease_expires_at'), ['status', 'lease_expires_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_deliveries_status_lease_expires_at'))
        batch_op.drop_index(batch_op.f('ix_deliveries_message_id'))
        batch_op.drop_index(batch_op.f('ix_deliveries_channel_destination_status_next_attempt_at'))
        batch_op.drop_index(batch_op.f('ix_deliveries_channel_destination_ordering_key_id'))

    op.drop_table('deliveries')
    with op.batch_alter_table('message_stages', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_message_stages_message_id_id'))
        batch_op.drop_index(batch_op.f('ix_message_stages_content_sha256'))

    op.drop_table('message_stages')
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_messages_study_uid'))
        batch_op.drop_index(batch_op.f('ix_messages_status_id'))
        batch_op.drop_index(batch_op.f('ix_messages_received_at'))
        batch_op.drop_index(batch_op.f('ix_messages_patient_id'))
        batch_op.drop_index(batch_op.f('ix_messages_channel_status_id'))
        batch_op.drop_index(batch_op.f('ix_messages_accession'))

    op.drop_table('messages')
    op.drop_table('audit_head')
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_events_study_uid_seq'))
        batch_op.drop_index(batch_op.f('ix_audit_events_patient_id_seq'))
        batch_op.drop_index(batch_op.f('ix_audit_events_message_id'))
        batch_op.drop_index(batch_op.f('ix_audit_events_channel_seq'))
        batch_op.drop_index(batch_op.f('ix_audit_events_chain_seq'))
        batch_op.drop_index(batch_op.f('ix_audit_events_at'))
        batch_op.drop_index(batch_op.f('ix_audit_events_actor_seq'))
        batch_op.drop_index(batch_op.f('ix_audit_events_accession_seq'))

    op.drop_table('audit_events')
