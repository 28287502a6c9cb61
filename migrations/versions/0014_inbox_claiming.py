"""inbox claiming: workers claim pending webhook events themselves (fairly, per org) instead of one
arq job per event. `next_attempt_at` is both the claim's lease (a claimed event is not claimed again
before it, so a worker that dies leaves it to the next claim once the lease runs out) and the retry's
backoff; the claim index is per org, so a claim round can visit every org with pending events; a
statement-level trigger wakes the workers (LISTEN rappit_inbox) when events are stored.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02 15:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("webhook_events", sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True))
    op.drop_index("ix_webhook_events_pending", table_name="webhook_events")
    op.create_index(
        "ix_webhook_events_claim",
        "webhook_events",
        ["org_id", "received_at"],
        postgresql_where=sa.text("status in ('pending','failed')"),
    )
    op.execute(
        """CREATE FUNCTION rappit_inbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN
             PERFORM pg_notify('rappit_inbox', '');
             RETURN NULL;
           END $$"""
    )
    op.execute(
        """CREATE TRIGGER webhook_events_notify AFTER INSERT ON webhook_events
           FOR EACH STATEMENT EXECUTE FUNCTION rappit_inbox_notify()"""
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS webhook_events_notify ON webhook_events")
    op.execute("DROP FUNCTION IF EXISTS rappit_inbox_notify()")
    op.drop_index("ix_webhook_events_claim", table_name="webhook_events")
    op.create_index(
        "ix_webhook_events_pending",
        "webhook_events",
        ["received_at"],
        postgresql_where=sa.text("status in ('pending','failed')"),
    )
    op.drop_column("webhook_events", "next_attempt_at")
