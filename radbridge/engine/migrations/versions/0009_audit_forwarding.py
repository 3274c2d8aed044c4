"""Audit forwarding: one cursor per syslog destination (audit_forwarding: the last
ledger sequence number sent, how many were sent, the lease of the node forwarding, the
last error), so that events wait in the ledger while a collector is away and go, in
order, when it is back.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""
from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('audit_forwarding',
    sa.Column('destination', sa.String(length=255), nullable=False),
    sa.Column('last_seq', sa.BigInteger(), nullable=False),
    sa.Column('forwarded', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('lease_owner', sa.String(length=128), nullable=True),
    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('last_error_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('destination', name=op.f('pk_audit_forwarding'))
    )


def downgrade() -> None:
    op.drop_table('audit_forwarding')
