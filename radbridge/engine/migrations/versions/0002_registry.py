"""The registry: patients, encounters, orders with their status history, and studies.

Fed by HL7 ADT and order messages (radbridge.engine.registry). `registry_applied` keeps
the uid of every message applied so that applying one again changes nothing.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('patients',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('identifier', sa.String(length=64), nullable=False),
    sa.Column('issuer', sa.String(length=64), nullable=False),
    sa.Column('merged_into_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('name', sa.String(length=255), nullable=True),
    sa.Column('birth_date', sa.Date(), nullable=True),
    sa.Column('sex', sa.String(length=8), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['merged_into_id'], ['patients.id'], name=op.f('fk_patients_merged_into_id_patients')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_patients')),
    sa.UniqueConstraint('identifier', 'issuer', name=op.f('uq_patients_identifier_issuer'))
    )
    with op.batch_alter_table('patients', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_patients_merged_into_id'), ['merged_into_id'], unique=False)

    op.create_table('registry_applied',
    sa.Column('message_uid', sa.String(length=32), nullable=False),
    sa.Column('message_type', sa.String(length=16), nullable=False),
    sa.Column('applied_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('message_uid', name=op.f('pk_registry_applied'))
    )
    op.create_table('encounters',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('patient_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('visit_number', sa.String(length=64), nullable=False),
    sa.Column('visit_issuer', sa.String(length=64), nullable=False),
    sa.Column('patient_class', sa.String(length=8), nullable=True),
    sa.Column('location', sa.String(length=255), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('admitted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('discharged_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_message_uid', sa.String(length=32), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['patient_id'], ['patients.id'], name=op.f('fk_encounters_patient_id_patients')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_encounters')),
    sa.UniqueConstraint('visit_number', 'visit_issuer', name=op.f('uq_encounters_visit_number_visit_issuer'))
    )
    with op.batch_alter_table('encounters', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_encounters_patient_id'), ['patient_id'], unique=False)

    op.create_table('orders',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('patient_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('placer_number', sa.String(length=64), nullable=True),
    sa.Column('filler_number', sa.String(length=64), nullable=True),
    sa.Column('accession', sa.String(length=64), nullable=True),
    sa.Column('accession_issuer', sa.String(length=64), nullable=True),
    sa.Column('study_uid', sa.String(length=64), nullable=True),
    sa.Column('procedure_code', sa.String(length=64), nullable=True),
    sa.Column('procedure_system', sa.String(length=64), nullable=True),
    sa.Column('procedure_display', sa.String(length=255), nullable=True),
    sa.Column('modality', sa.String(length=16), nullable=True),
    sa.Column('priority', sa.String(length=16), nullable=True),
    sa.Column('ordering_provider_id', sa.String(length=64), nullable=True),
    sa.Column('ordering_provider_name', sa.String(length=255), nullable=True),
    sa.Column('scheduled_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('last_message_uid', sa.String(length=32), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['patient_id'], ['patients.id'], name=op.f('fk_orders_patient_id_patients')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_orders'))
    )
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_orders_accession'), ['accession'], unique=False)
        batch_op.create_index(batch_op.f('ix_orders_filler_number'), ['filler_number'], unique=False)
        batch_op.create_index(batch_op.f('ix_orders_patient_id'), ['patient_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_orders_placer_number'), ['placer_number'], unique=False)
        batch_op.create_index(batch_op.f('ix_orders_study_uid'), ['study_uid'], unique=False)

    op.create_table('studies',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('study_uid', sa.String(length=64), nullable=False),
    sa.Column('accession', sa.String(length=64), nullable=True),
    sa.Column('patient_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['patient_id'], ['patients.id'], name=op.f('fk_studies_patient_id_patients')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_studies')),
    sa.UniqueConstraint('study_uid', name=op.f('uq_studies_study_uid'))
    )
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_studies_accession'), ['accession'], unique=False)
        batch_op.create_index(batch_op.f('ix_studies_patient_id'), ['patient_id'], unique=False)

    op.create_table('order_status_history',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('order_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('from_status', sa.String(length=16), nullable=True),
    sa.Column('to_status', sa.String(length=16), nullable=False),
    sa.Column('control_code', sa.String(length=2), nullable=False),
    sa.Column('message_uid', sa.String(length=32), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['order_id'], ['orders.id'], name=op.f('fk_order_status_history_order_id_orders'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_order_status_history'))
    )
    with op.batch_alter_table('order_status_history', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_order_status_history_order_id_id'), ['order_id', 'id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('order_status_history', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_order_status_history_order_id_id'))

    op.drop_table('order_status_history')
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_studies_patient_id'))
        batch_op.drop_index(batch_op.f('ix_studies_accession'))

    op.drop_table('studies')
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_orders_study_uid'))
        batch_op.drop_index(batch_op.f('ix_orders_placer_number'))
        batch_op.drop_index(batch_op.f('ix_orders_patient_id'))
        batch_op.drop_index(batch_op.f('ix_orders_filler_number'))
        batch_op.drop_index(batch_op.f('ix_orders_accession'))

    op.drop_table('orders')
    with op.batch_alter_table('encounters', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_encounters_patient_id'))

    op.drop_table('encounters')
    op.drop_table('registry_applied')
    with op.batch_alter_table('patients', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_patients_merged_into_id'))

    op.drop_table('patients')
