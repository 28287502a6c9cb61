"""imports.body stored uncompressed (STORAGE EXTERNAL): the uploaded file of a big import is written
once by the API and read once by the job; pglz compressing tens of MiB of CSV inside the upload
request cost seconds of CPU (and the 5 s statement budget once, under load), for space the row gives
back when the import is done (the file is dropped then).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02 16:05:00
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE imports ALTER COLUMN body SET STORAGE EXTERNAL")


def downgrade() -> None:
    op.execute("ALTER TABLE imports ALTER COLUMN body SET STORAGE EXTENDED")
