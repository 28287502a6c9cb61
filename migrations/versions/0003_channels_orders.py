"""channels (encrypted secrets), the webhook inbox, orders with numbering and timeline, dead letters

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 15:28:58.259491
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from rappit.tenancy.rls import definer_function_sql, policy_sql

TABLES = (
    "dead_letters",
    "order_counters",
    "channels",
    "orders",
    "webhook_events",
    "order_events",
    "order_lines",
)

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dead_letters",
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("ref_id", sa.Uuid(), nullable=False),
        sa.Column("job_name", sa.String(length=100), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column(
            "first_failed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column(
            "last_failed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("retried_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("retried_by", sa.String(length=100), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.CheckConstraint("status in ('dead','retried')", name=op.f("ck_dead_letters_status_known")),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_dead_letters_org_id_organizations"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dead_letters")),
        sa.UniqueConstraint("org_id", "id", name=op.f("uq_dead_letters_org_id_id")),
        sa.UniqueConstraint("org_id", "kind", "ref_id", name=op.f("uq_dead_letters_org_id_kind_ref_id")),
    )
    op.create_index(
        "ix_dead_letters_org_status", "dead_letters", ["org_id", "status", "last_failed_at"], unique=False
    )
    op.create_table(
        "order_counters",
        sa.Column("source", sa.String(length=1), nullable=False),
        sa.Column("last_value", sa.BigInteger(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.CheckConstraint("last_value > 0", name=op.f("ck_order_counters_positive")),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_order_counters_org_id_organizations"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_order_counters")),
        sa.UniqueConstraint("org_id", "source", name=op.f("uq_order_counters_org_id_source")),
    )
    op.create_table(
        "channels",
        sa.Column("type", sa.String(length=20), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("address", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=20), server_default="active", nullable=False),
        sa.Column("webhook_secret", sa.LargeBinary(), nullable=False),
        sa.Column("api_credentials", sa.LargeBinary(), nullable=True),
        sa.Column("secret_rotated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("warehouse_id", sa.Uuid(), nullable=True),
        sa.Column("reconciled_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.CheckConstraint("status in ('active','disabled')", name=op.f("ck_channels_status_known")),
        sa.CheckConstraint(
            "(status = 'disabled') = (disabled_at is not null)",
            name=op.f("ck_channels_disabled_at_iff_disabled"),
        ),
        sa.CheckConstraint("type in ('shopify','woocommerce')", name=op.f("ck_channels_type_known")),
        sa.ForeignKeyConstraint(
            ["org_id", "warehouse_id"],
            ["warehouses.org_id", "warehouses.id"],
            name=op.f("fk_channels_org_id_warehouse_id_warehouses"),
        ),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_channels_org_id_organizations"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_channels")),
        sa.UniqueConstraint("org_id", "id", name=op.f("uq_channels_org_id_id")),
        sa.UniqueConstraint("org_id", "type", "address", name=op.f("uq_channels_org_id_type_address")),
    )
    op.create_table(
        "orders",
        sa.Column("number", sa.String(length=40), nullable=False),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("channel_id", sa.Uuid(), nullable=True),
        sa.Column("external_id", sa.String(length=100), nullable=True),
        sa.Column("external_name", sa.String(length=100), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("hold_reason", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("external_updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.CheckConstraint(
            "(source = 'manual') = (channel_id is null)", name=op.f("ck_orders_channel_iff_not_manual")
        ),
        sa.CheckConstraint(
            "(status = 'on_hold') = (hold_reason is not null)", name=op.f("ck_orders_hold_reason_iff_on_hold")
        ),
        sa.CheckConstraint(
            "(status = 'cancelled') = (cancelled_at is not null)",
            name=op.f("ck_orders_cancelled_at_iff_cancelled"),
        ),
        sa.CheckConstraint(
            "source in ('shopify','woocommerce','manual')", name=op.f("ck_orders_source_known")
        ),
        sa.CheckConstraint("status in ('open','on_hold','cancelled')", name=op.f("ck_orders_status_known")),
        sa.ForeignKeyConstraint(
            ["org_id", "channel_id"],
            ["channels.org_id", "channels.id"],
            name=op.f("fk_orders_org_id_channel_id_channels"),
        ),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name=op.f("fk_orders_org_id_organizations"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_orders")),
        sa.UniqueConstraint(
            "org_id", "channel_id", "external_id", name=op.f("uq_orders_org_id_channel_id_external_id")
        ),
        sa.UniqueConstraint("org_id", "id", name=op.f("uq_orders_org_id_id")),
        sa.UniqueConstraint("org_id", "number", name=op.f("uq_orders_org_id_number")),
    )
    op.create_index(
        "ix_orders_org_status_created", "orders", ["org_id", "status", "created_at"], unique=False
    )
    op.create_table(
        "webhook_events",
        sa.Column("channel_id", sa.Uuid(), nullable=False),
        sa.Column("topic", sa.String(length=100), nullable=False),
        sa.Column("delivery_id", sa.String(length=200), nullable=False),
        sa.Column("dedup_key", sa.String(length=300), nullable=True),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("triggered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column("status", sa.String(length=20), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("order_id", sa.Uuid(), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.CheckConstraint(
            "status in ('pending','processed','ignored','failed','dead')",
            name=op.f("ck_webhook_events_status_known"),
        ),
        sa.CheckConstraint(
            "(status in ('processed','ignored')) = (processed_at is not null)",
            name=op.f("ck_webhook_events_processed_at_iff_done"),
        ),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_webhook_events_attempts_nonnegative")),
        sa.ForeignKeyConstraint(
            ["org_id", "channel_id"],
            ["channels.org_id", "channels.id"],
            name=op.f("fk_webhook_events_org_id_channel_id_channels"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_events")),
        sa.UniqueConstraint(
            "org_id", "channel_id", "dedup_key", name=op.f("uq_webhook_events_org_id_channel_id_dedup_key")
        ),
        sa.UniqueConstraint(
            "org_id",
            "channel_id",
            "delivery_id",
            name=op.f("uq_webhook_events_org_id_channel_id_delivery_id"),
        ),
        sa.UniqueConstraint("org_id", "id", name=op.f("uq_webhook_events_org_id_id")),
    )
    op.create_index(
        "ix_webhook_events_channel", "webhook_events", ["org_id", "channel_id", "received_at"], unique=False
    )
    op.create_index(
        "ix_webhook_events_pending",
        "webhook_events",
        ["received_at"],
        unique=False,
        postgresql_where=sa.text("status in ('pending','failed')"),
    )
    op.create_table(
        "order_events",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("detail", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("webhook_event_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id", "order_id"],
            ["orders.org_id", "orders.id"],
            name=op.f("fk_order_events_org_id_order_id_orders"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_order_events")),
    )
    op.create_index("ix_order_events_order", "order_events", ["org_id", "order_id", "id"], unique=False)
    op.create_table(
        "order_lines",
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("external_line_id", sa.String(length=100), nullable=True),
        sa.Column("sku", sa.String(length=100), nullable=True),
        sa.Column("title", sa.String(length=500), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("unit_price_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.CheckConstraint("quantity >= 0", name=op.f("ck_order_lines_quantity_nonnegative")),
        sa.CheckConstraint(
            "version >= 1 and position >= 1", name=op.f("ck_order_lines_version_position_positive")
        ),
        sa.CheckConstraint("unit_price_minor >= 0", name=op.f("ck_order_lines_price_nonnegative")),
        sa.ForeignKeyConstraint(
            ["org_id", "order_id"],
            ["orders.org_id", "orders.id"],
            name=op.f("fk_order_lines_org_id_order_id_orders"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_order_lines")),
        sa.UniqueConstraint("org_id", "id", name=op.f("uq_order_lines_org_id_id")),
        sa.UniqueConstraint(
            "org_id",
            "order_id",
            "version",
            "position",
            name=op.f("uq_order_lines_org_id_order_id_version_position"),
        ),
    )
    for table in TABLES:
        for stmt in policy_sql(table):
            op.execute(stmt)
    # Webhook ingress knows only the channel id: this returns just what verifying a delivery needs.
    for stmt in definer_function_sql(
        "rappit_webhook_channel(p_channel_id uuid)",
        "TABLE(org_id uuid, org_code text, type text, status text, address text, webhook_secret bytea)",
        """SELECT c.org_id, o.code::text, c.type::text, c.status::text, c.address::text, c.webhook_secret
             FROM channels c JOIN organizations o ON o.id = c.org_id WHERE c.id = p_channel_id""",
    ):
        op.execute(stmt)


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS rappit_webhook_channel(uuid)")
    op.drop_table("order_lines")
    op.drop_index("ix_order_events_order", table_name="order_events")
    op.drop_table("order_events")
    op.drop_index(
        "ix_webhook_events_pending",
        table_name="webhook_events",
        postgresql_where=sa.text("status in ('pending','failed')"),
    )
    op.drop_index("ix_webhook_events_channel", table_name="webhook_events")
    op.drop_table("webhook_events")
    op.drop_index("ix_orders_org_status_created", table_name="orders")
    op.drop_table("orders")
    op.drop_table("channels")
    op.drop_table("order_counters")
    op.drop_index("ix_dead_letters_org_status", table_name="dead_letters")
    op.drop_table("dead_letters")
