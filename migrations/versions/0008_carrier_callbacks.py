"""carrier callbacks: the durable inbox of verified carrier callbacks (deduplicated per account on the
carrier's event id), and the narrow look-up of an account by id before its org is known

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from rappit.tenancy.rls import definer_function_sql, policy_sql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

STATUSES = "'pending','processed','ignored','failed','dead'"
LOOKUP = "rappit_carrier_callback_account(p_account_id uuid)"


def upgrade() -> None:
    op.create_index("ix_carrier_accounts_id", "carrier_accounts", ["id"], unique=False)
    op.create_table(
        "carrier_callback_events",
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("carrier", sa.String(length=30), nullable=False),
        sa.Column("carrier_event_id", sa.String(length=200), nullable=False),
        sa.Column("tracking_number", sa.String(length=100), nullable=False),
        sa.Column("reference", sa.String(length=100), nullable=True),
        sa.Column("tracking_status", sa.String(length=30), nullable=False),
        sa.Column("code", sa.String(length=30), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column("status", sa.String(length=20), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("shipment_id", sa.Uuid(), nullable=True),
        sa.Column("outcome", sa.String(length=40), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.CheckConstraint(f"status in ({STATUSES})", name=op.f("ck_carrier_callback_events_status_known")),
        sa.CheckConstraint(
            "(status in ('processed','ignored')) = (processed_at is not null)",
            name=op.f("ck_carrier_callback_events_processed_at_iff_done"),
        ),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_carrier_callback_events_attempts_nonnegative")),
        sa.ForeignKeyConstraint(
            ["org_id", "account_id"],
            ["carrier_accounts.org_id", "carrier_accounts.id"],
            name=op.f("fk_carrier_callback_events_org_id_account_id_carrier_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["org_id", "shipment_id"],
            ["shipments.org_id", "shipments.id"],
            name=op.f("fk_carrier_callback_events_org_id_shipment_id_shipments"),
        ),
        sa.PrimaryKeyConstraint("org_id", "id", name=op.f("pk_carrier_callback_events")),
        sa.UniqueConstraint(
            "org_id",
            "account_id",
            "carrier_event_id",
            name=op.f("uq_carrier_callback_events_org_id_account_id_carrier_event_id"),
        ),
    )
    op.create_index(
        "ix_carrier_callback_events_pending",
        "carrier_callback_events",
        ["received_at"],
        unique=False,
        postgresql_where=sa.text("status in ('pending','failed')"),
    )
    op.create_index(
        "ix_carrier_callback_events_shipment",
        "carrier_callback_events",
        ["org_id", "shipment_id"],
        unique=False,
    )
    for stmt in policy_sql("carrier_callback_events"):
        op.execute(stmt)
    # Callback ingress knows only the account id: this returns just what verifying a callback needs.
    for stmt in definer_function_sql(
        LOOKUP,
        "TABLE(org_id uuid, carrier text, status text, callback_secret bytea)",
        """SELECT a.org_id, a.carrier::text, a.status::text, a.callback_secret
             FROM carrier_accounts a WHERE a.id = p_account_id""",
    ):
        op.execute(stmt)


def downgrade() -> None:
    op.execute(f"DROP FUNCTION IF EXISTS {LOOKUP.replace('p_account_id ', '')}")
    op.drop_index("ix_carrier_callback_events_shipment", table_name="carrier_callback_events")
    op.drop_index(
        "ix_carrier_callback_events_pending",
        table_name="carrier_callback_events",
        postgresql_where=sa.text("status in ('pending','failed')"),
    )
    op.drop_table("carrier_callback_events")
    op.drop_index("ix_carrier_accounts_id", table_name="carrier_accounts")
