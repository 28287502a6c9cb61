"""inbox failures: a webhook event counts the runs that recorded a failure apart from the runs started,
so runs that died without an outcome (a killed worker, an expired lease) have a budget of their own

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-02 17:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("webhook_events", sa.Column("failures", sa.Integer(), server_default="0", nullable=False))
    # Events already failed or dead: their recorded failures are all the runs but unfinished ones,
    # which were not told apart before; count every run as a failure (the old rule).
    op.execute("UPDATE webhook_events SET failures = attempts WHERE status IN ('failed', 'dead')")
    op.create_check_constraint(
        op.f("ck_webhook_events_failures_within_attempts"),
        "webhook_events",
        "failures >= 0 and failures <= attempts",
    )


def downgrade() -> None:
    op.drop_constraint("ck_webhook_events_failures_within_attempts", "webhook_events", type_="check")
    op.drop_column("webhook_events", "failures")
