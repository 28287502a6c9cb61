"""callback lookup: a carrier callback finds its shipment by tracking number (GIN on the JSON array)
or by carrier shipment id, instead of scanning the org's shipments

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02 15:30:00
"""

from __future__ import annotations

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_shipments_carrier_ref", "shipments", ["carrier_shipment_id"])
    op.create_index(
        "ix_shipments_tracking",
        "shipments",
        ["tracking_numbers"],
        postgresql_using="gin",
        postgresql_ops={"tracking_numbers": "jsonb_path_ops"},
    )


def downgrade() -> None:
    op.drop_index("ix_shipments_tracking", table_name="shipments")
    op.drop_index("ix_shipments_carrier_ref", table_name="shipments")
