"""channels: sales channels with encrypted webhook secrets and API credentials

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 15:15:55.259889
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from rappit.tenancy.rls import policy_sql


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('channels',
    sa.Column('type', sa.String(length=20), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('address', sa.String(length=255), nullable=False),
    sa.Column('status', sa.String(length=20), server_default='active', nullable=False),
    sa.Column('webhook_secret', sa.LargeBinary(), nullable=False),
    sa.Column('api_credentials', sa.LargeBinary(), nullable=True),
    sa.Column('secret_rotated_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('disabled_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('org_id', sa.Uuid(), nullable=False),
    sa.CheckConstraint("status in ('active','disabled')", name=op.f('ck_channels_status_known')),
    sa.CheckConstraint("type in ('shopify','woocommerce')", name=op.f('ck_channels_type_known')),
    sa.ForeignKeyConstraint(['org_id'], ['organizations.id'], name=op.f('fk_channels_org_id_organizations'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_channels')),
    sa.UniqueConstraint('org_id', 'id', name=op.f('uq_channels_org_id_id')),
    sa.UniqueConstraint('org_id', 'type', 'address', name=op.f('uq_channels_org_id_type_address'))
    )
    for stmt in policy_sql("channels"):
        op.execute(stmt)


def downgrade() -> None:
    op.drop_table('channels')
