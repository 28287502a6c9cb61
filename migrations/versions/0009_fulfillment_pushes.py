"""fulfillment pushes: the outbox that tells a sales channel a shipment left (one per shipment)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from rappit.tenancy.rls import policy_sql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fulfillment_pushes",
        sa.Column("shipment_id", sa.Uuid(), nullable=False),
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("channel_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(length=20), server_default="pending", nullable=False),
        sa.Column("tracking_number", sa.String(length=100), nullable=False),
        sa.Column("carrier", sa.String(length=30), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("external_ref", sa.String(length=100), nullable=True),
        sa.Column("pushed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.CheckConstraint(
            "status in ('pending','pushed','failed')", name=op.f("ck_fulfillment_pushes_status_known")
        ),
        sa.CheckConstraint(
            "(status = 'pushed') = (pushed_at is not null)",
            name=op.f("ck_fulfillment_pushes_pushed_at_iff_pushed"),
        ),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_fulfillment_pushes_attempts_nonnegative")),
        sa.ForeignKeyConstraint(
            ["org_id", "shipment_id"],
            ["shipments.org_id", "shipments.id"],
            name=op.f("fk_fulfillment_pushes_org_id_shipment_id_shipments"),
        ),
        sa.ForeignKeyConstraint(
            ["org_id", "order_id"],
            ["orders.org_id", "orders.id"],
            name=op.f("fk_fulfillment_pushes_org_id_order_id_orders"),
        ),
        sa.ForeignKeyConstraint(
            ["org_id", "channel_id"],
            ["channels.org_id", "channels.id"],
            name=op.f("fk_fulfillment_pushes_org_id_channel_id_channels"),
        ),
        sa.PrimaryKeyConstraint("org_id", "id", name=op.f("pk_fulfillment_pushes")),
        # One push per shipment: a second hand-over record of the same shipment cannot add another.
        sa.UniqueConstraint("org_id", "shipment_id", name=op.f("uq_fulfillment_pushes_org_id_shipment_id")),
    )
    op.create_index("ix_fulfillment_pushes_order", "fulfillment_pushes", ["org_id", "order_id"], unique=False)
    op.create_index(
        "ix_fulfillment_pushes_pending",
        "fulfillment_pushes",
        ["created_at"],
        unique=False,
        postgresql_where=sa.text("status = 'pending'"),
    )
    for stmt in policy_sql("fulfillment_pushes"):
        op.execute(stmt)


def downgrade() -> None:
    op.drop_index(
        "ix_fulfillment_pushes_pending",
        table_name="fulfillment_pushes",
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.drop_index("ix_fulfillment_pushes_order", table_name="fulfillment_pushes")
    op.drop_table("fulfillment_pushes")
