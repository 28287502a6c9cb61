"""shipping: carrier accounts (encrypted credentials), shipments with a database-enforced state machine,
and the shipment timeline

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 09:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from rappit.tenancy.rls import policy_sql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# Frozen here (a migration describes the schema as it was at this step).
CARRIERS = "'fedex','dhl_express'"
STATUSES = "'pending','label_purchased','in_transit','delivered','voided','void_requested','failed'"
TABLES = ("carrier_accounts", "shipments", "shipment_events")


SKU_CUSTOMS_CHECKS = {
    "hs_code_format": "hs_code is null or hs_code ~ '^[0-9]{6,10}$'",
    "country_of_origin_format": "country_of_origin is null or country_of_origin ~ '^[A-Z]{2}$'",
    "customs_value_has_currency": "(customs_value_minor is null) = (customs_currency is null)",
    "customs_value_positive": "customs_value_minor is null or customs_value_minor > 0",
    "weight_positive": "weight_grams is null or weight_grams > 0",
}


def upgrade() -> None:
    # Customs facts per SKU (all nullable: unknown until the merchant sets them).
    op.add_column("skus", sa.Column("hs_code", sa.String(length=10), nullable=True))
    op.add_column("skus", sa.Column("country_of_origin", sa.String(length=2), nullable=True))
    op.add_column("skus", sa.Column("customs_value_minor", sa.BigInteger(), nullable=True))
    op.add_column("skus", sa.Column("customs_currency", sa.String(length=3), nullable=True))
    op.add_column("skus", sa.Column("weight_grams", sa.Integer(), nullable=True))
    for name, check in SKU_CUSTOMS_CHECKS.items():
        op.create_check_constraint(op.f(f"ck_skus_{name}"), "skus", check)
    op.create_table(
        "carrier_accounts",
        sa.Column("carrier", sa.String(length=30), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("account_number", sa.String(length=50), nullable=False),
        sa.Column("base_url", sa.String(length=500), nullable=True),
        sa.Column("credentials", sa.LargeBinary(), nullable=False),
        sa.Column("callback_secret", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.String(length=20), server_default="active", nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.CheckConstraint(f"carrier in ({CARRIERS})", name=op.f("ck_carrier_accounts_carrier_known")),
        sa.CheckConstraint("status in ('active','disabled')", name=op.f("ck_carrier_accounts_status_known")),
        sa.CheckConstraint(
            "(status = 'disabled') = (disabled_at is not null)",
            name=op.f("ck_carrier_accounts_disabled_at_iff_disabled"),
        ),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_carrier_accounts_org_id_organizations"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("org_id", "id", name=op.f("pk_carrier_accounts")),
        sa.UniqueConstraint("org_id", "name", name=op.f("uq_carrier_accounts_org_id_name")),
    )
    op.create_table(
        "shipments",
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("carrier_account_id", sa.Uuid(), nullable=False),
        sa.Column("carrier", sa.String(length=30), nullable=False),
        sa.Column("service", sa.String(length=60), nullable=False),
        sa.Column("status", sa.String(length=20), server_default="pending", nullable=False),
        sa.Column("ship_date", sa.Date(), nullable=False),
        sa.Column("request", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("lines", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("carrier_shipment_id", sa.String(length=100), nullable=True),
        sa.Column("tracking_numbers", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("label_document", sa.LargeBinary(), nullable=True),
        sa.Column("label_format", sa.String(length=10), nullable=True),
        sa.Column("cost_minor", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.CheckConstraint(f"status in ({STATUSES})", name=op.f("ck_shipments_status_known")),
        sa.CheckConstraint(
            "(status in ('pending','failed')) = (carrier_shipment_id is null)",
            name=op.f("ck_shipments_label_iff_purchased"),
        ),
        sa.CheckConstraint(
            "cost_minor is null or cost_minor >= 0", name=op.f("ck_shipments_cost_nonnegative")
        ),
        sa.ForeignKeyConstraint(
            ["org_id", "order_id"],
            ["orders.org_id", "orders.id"],
            name=op.f("fk_shipments_org_id_order_id_orders"),
        ),
        sa.ForeignKeyConstraint(
            ["org_id", "carrier_account_id"],
            ["carrier_accounts.org_id", "carrier_accounts.id"],
            name=op.f("fk_shipments_org_id_carrier_account_id_carrier_accounts"),
        ),
        sa.PrimaryKeyConstraint("org_id", "id", name=op.f("pk_shipments")),
        sa.UniqueConstraint("org_id", "idempotency_key", name=op.f("uq_shipments_org_id_idempotency_key")),
    )
    op.create_index("ix_shipments_order", "shipments", ["org_id", "order_id", "created_at"], unique=False)
    op.create_index(
        "ix_shipments_pending",
        "shipments",
        ["created_at"],
        unique=False,
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_table(
        "shipment_events",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("shipment_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("from_status", sa.String(length=20), nullable=True),
        sa.Column("to_status", sa.String(length=20), nullable=True),
        sa.Column("detail", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id", "shipment_id"],
            ["shipments.org_id", "shipments.id"],
            name=op.f("fk_shipment_events_org_id_shipment_id_shipments"),
        ),
        sa.PrimaryKeyConstraint("org_id", "id", name=op.f("pk_shipment_events")),
    )
    op.create_index(
        "ix_shipment_events_shipment", "shipment_events", ["org_id", "shipment_id", "id"], unique=False
    )
    for table in TABLES:
        for stmt in policy_sql(table):
            op.execute(stmt)


def downgrade() -> None:
    op.drop_index("ix_shipment_events_shipment", table_name="shipment_events")
    op.drop_table("shipment_events")
    op.drop_index(
        "ix_shipments_pending", table_name="shipments", postgresql_where=sa.text("status = 'pending'")
    )
    op.drop_index("ix_shipments_order", table_name="shipments")
    op.drop_table("shipments")
    op.drop_table("carrier_accounts")
    for name in SKU_CUSTOMS_CHECKS:
        op.drop_constraint(op.f(f"ck_skus_{name}"), "skus", type_="check")
    for column in ("weight_grams", "customs_currency", "customs_value_minor", "country_of_origin", "hs_code"):
        op.drop_column("skus", column)
