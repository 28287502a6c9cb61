"""inbox wake-up outside the insert: drop the statement trigger that NOTIFYed `rappit_inbox` in every
transaction storing webhook events

A transaction with a pending NOTIFY takes a database-wide lock in its pre-commit and holds it until its
commit record is flushed (PostgreSQL's async.c: "serialize writers"), so the ingress batches, each a
transaction with the trigger's NOTIFY, committed one at a time, one WAL flush each. Ingress now wakes
the claim loops with a coalesced `pg_notify` in a transaction of its own after the rows are committed
(`rappit.channels.ingest.InboxWaker`); the loops still poll, so a row stored any other way is claimed
within the poll interval.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-03 09:30:00
"""

from __future__ import annotations

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS webhook_events_notify ON webhook_events")
    op.execute("DROP FUNCTION IF EXISTS rappit_inbox_notify()")


def downgrade() -> None:
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
