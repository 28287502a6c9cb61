"""webhook inbox: each applied event names the channel's order id it carried

A WooCommerce order.deleted carries only the order id. Processed before the order's create (the
create's job was killed and waits out arq's in-progress key), it found no order and was ignored; the
create then made an open order that held stock for good (the chaos soak found five in one run). The
deletion now leaves the order id on its event, and a create finding such an event makes the order
cancelled.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("webhook_events", sa.Column("external_id", sa.String(100), nullable=True))
    op.create_index(
        "ix_webhook_events_external_id",
        "webhook_events",
        ["org_id", "channel_id", "external_id"],
        postgresql_where=sa.text("external_id is not null"),
    )


def downgrade() -> None:
    op.drop_index("ix_webhook_events_external_id", "webhook_events")
    op.drop_column("webhook_events", "external_id")
