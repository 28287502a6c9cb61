"""webhook_events.payload compressed with lz4 instead of pglz, where the server has lz4: a Shopify
order body is 2-4 KiB, past PostgreSQL's TOAST threshold, so every stored delivery was compressed
with pglz inside the ingress statement (about 17 us of server CPU per 3.4 KiB body here, against 3 us
with lz4, measured on this machine's PostgreSQL 15) and decompressed again by the worker. Rows already
stored keep their compression; a server built without lz4 keeps pglz.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-03 07:45:00
"""

from __future__ import annotations

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

_HAS_LZ4 = (
    "EXISTS (SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression' AND 'lz4' = ANY(enumvals))"
)


def upgrade() -> None:
    op.execute(
        f"""DO $$ BEGIN
              IF {_HAS_LZ4} THEN
                ALTER TABLE webhook_events ALTER COLUMN payload SET COMPRESSION lz4;
              END IF;
            END $$"""
    )


def downgrade() -> None:
    op.execute("ALTER TABLE webhook_events ALTER COLUMN payload SET COMPRESSION default")
