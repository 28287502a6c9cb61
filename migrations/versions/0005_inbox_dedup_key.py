"""webhook inbox: deduplicate on what identifies the change, never on a delivery id alone

WooCommerce's delivery id is a hash of the webhook id and the current second, so two orders sent
in one second share it: UNIQUE (org, channel, delivery_id) stored the second as a duplicate.
Every row now carries the adapter's dedup key (Shopify: the event id; WooCommerce: topic, order id
and date_modified_gmt) and that is the one unique key.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Rows stored before had a NULL key (Shopify): their delivery id was what made them unique.
    op.execute("UPDATE webhook_events SET dedup_key = 'legacy:' || delivery_id WHERE dedup_key IS NULL")
    op.alter_column("webhook_events", "dedup_key", nullable=False)
    op.drop_constraint("uq_webhook_events_org_id_channel_id_delivery_id", "webhook_events", type_="unique")


def downgrade() -> None:
    op.create_unique_constraint(
        "uq_webhook_events_org_id_channel_id_delivery_id",
        "webhook_events",
        ["org_id", "channel_id", "delivery_id"],
    )
    op.alter_column("webhook_events", "dedup_key", nullable=True)
