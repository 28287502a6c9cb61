"""citus keys: every tenant table's primary key becomes (org_id, id)

Citus wants the distribution column (org_id) in every primary key and unique constraint of a
distributed table, and in every foreign key between distributed tables. The UNIQUE (org_id, id) that
org-qualified foreign keys pointed at becomes the primary key, so those foreign keys are dropped
first and recreated against it. api_tokens.token_hash becomes unique per org (plus a plain index for
the lookup before the org is known); users.id and channels.id keep a plain index for the same reason
(session auth, webhook ingress), which the old primary key used to give them.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 10:00:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Frozen here (not read from the models): a migration describes the schema as it was at this step.
TENANT_TABLES = (
    "users",
    "api_tokens",
    "idempotency_keys",
    "skus",
    "warehouses",
    "inventory_levels",
    "inventory_ledger",
    "reservations",
    "dead_letters",
    "order_counters",
    "channels",
    "orders",
    "webhook_events",
    "order_events",
    "order_lines",
)
WITHOUT_ORG_UNIQUE = ("inventory_ledger", "order_counters", "order_events")
"""Append-only tables that had no UNIQUE (org_id, id)."""

ORG_FKS = (
    # (table, column, referred table): FOREIGN KEY (org_id, column) REFERENCES referred (org_id, id)
    ("api_tokens", "user_id", "users"),
    ("inventory_levels", "sku_id", "skus"),
    ("inventory_levels", "warehouse_id", "warehouses"),
    ("inventory_ledger", "level_id", "inventory_levels"),
    ("reservations", "level_id", "inventory_levels"),
    ("channels", "warehouse_id", "warehouses"),
    ("orders", "channel_id", "channels"),
    ("webhook_events", "channel_id", "channels"),
    ("order_events", "order_id", "orders"),
    ("order_lines", "order_id", "orders"),
)


def _fk_name(table: str, column: str, referred: str) -> str:
    return f"fk_{table}_org_id_{column}_{referred}"


def _drop_org_fks() -> None:
    for table, column, referred in ORG_FKS:
        op.drop_constraint(_fk_name(table, column, referred), table, type_="foreignkey")


def _create_org_fks() -> None:
    for table, column, referred in ORG_FKS:
        op.create_foreign_key(
            _fk_name(table, column, referred), table, referred, ["org_id", column], ["org_id", "id"]
        )


def upgrade() -> None:
    # 1. Foreign keys depend on the unique index they reference: they go first.
    _drop_org_fks()
    # 2. The key moves from (id) to (org_id, id); the separate UNIQUE (org_id, id) is then redundant.
    for table in TENANT_TABLES:
        op.drop_constraint(f"pk_{table}", table, type_="primary")
        if table not in WITHOUT_ORG_UNIQUE:
            op.drop_constraint(f"uq_{table}_org_id_id", table, type_="unique")
        op.create_primary_key(f"pk_{table}", table, ["org_id", "id"])
    # 3. The one global unique of a tenant table becomes per org; lookups before the org is known
    #    keep an index.
    op.drop_constraint("uq_api_tokens_token_hash", "api_tokens", type_="unique")
    op.create_unique_constraint("uq_api_tokens_org_id_token_hash", "api_tokens", ["org_id", "token_hash"])
    op.create_index("ix_api_tokens_token_hash", "api_tokens", ["token_hash"])
    op.create_index("ix_users_id", "users", ["id"])
    op.create_index("ix_channels_id", "channels", ["id"])
    # 4. Org-qualified foreign keys again, now against the primary keys.
    _create_org_fks()


def downgrade() -> None:
    _drop_org_fks()
    op.drop_index("ix_channels_id", table_name="channels")
    op.drop_index("ix_users_id", table_name="users")
    op.drop_index("ix_api_tokens_token_hash", table_name="api_tokens")
    op.drop_constraint("uq_api_tokens_org_id_token_hash", "api_tokens", type_="unique")
    op.create_unique_constraint("uq_api_tokens_token_hash", "api_tokens", ["token_hash"])
    for table in TENANT_TABLES:
        op.drop_constraint(f"pk_{table}", table, type_="primary")
        op.create_primary_key(f"pk_{table}", table, ["id"])
        if table not in WITHOUT_ORG_UNIQUE:
            op.create_unique_constraint(f"uq_{table}_org_id_id", table, ["org_id", "id"])
    _create_org_fks()
