"""history: keyset-paging indexes for orders (newest first by created_at, id) and the indexes the
retention job deletes by (done webhook events, order events by age)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 12:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_orders_org_status_created", table_name="orders")
    op.create_index("ix_orders_org_status_created", "orders", ["org_id", "status", "created_at", "id"])
    op.create_index("ix_orders_org_created", "orders", ["org_id", "created_at", "id"])
    op.create_index("ix_orders_org_channel_created", "orders", ["org_id", "channel_id", "created_at", "id"])
    op.create_index("ix_order_events_created", "order_events", ["created_at"])
    op.create_index(
        "ix_webhook_events_done",
        "webhook_events",
        ["processed_at"],
        postgresql_where=sa.text("status in ('processed','ignored')"),
    )


def downgrade() -> None:
    op.drop_index("ix_webhook_events_done", table_name="webhook_events")
    op.drop_index("ix_order_events_created", table_name="order_events")
    op.drop_index("ix_orders_org_channel_created", table_name="orders")
    op.drop_index("ix_orders_org_created", table_name="orders")
    op.drop_index("ix_orders_org_status_created", table_name="orders")
    op.create_index("ix_orders_org_status_created", "orders", ["org_id", "status", "created_at"])
