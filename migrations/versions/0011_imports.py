"""imports: bulk imports of stock levels and of the catalogue, with the uploaded file kept durably for
the job that runs a big one, its progress and its summary (every rejected line)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from rappit.tenancy.rls import policy_sql

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "imports",
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("content_type", sa.String(length=100), nullable=False),
        sa.Column("mode", sa.String(length=10), nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=True),
        sa.Column("size_bytes", sa.Integer(), server_default="0", nullable=False),
        sa.Column("total_rows", sa.Integer(), nullable=True),
        sa.Column("processed_rows", sa.Integer(), server_default="0", nullable=False),
        sa.Column("summary", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.CheckConstraint("kind in ('stock', 'skus')", name=op.f("ck_imports_kind_known")),
        sa.CheckConstraint(
            "status in ('queued', 'running', 'done', 'failed')", name=op.f("ck_imports_status_known")
        ),
        sa.CheckConstraint(
            "(status = 'done') = (summary is not null)", name=op.f("ck_imports_summary_iff_done")
        ),
        sa.CheckConstraint(
            "processed_rows >= 0 and attempts >= 0", name=op.f("ck_imports_counts_nonnegative")
        ),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_imports_org_id_organizations"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("org_id", "id", name=op.f("pk_imports")),
    )
    op.create_index(
        "ix_imports_unfinished",
        "imports",
        ["created_at"],
        unique=False,
        postgresql_where=sa.text("status in ('queued','running')"),
    )
    op.create_index("ix_imports_org_created", "imports", ["org_id", "created_at"], unique=False)
    for stmt in policy_sql("imports"):
        op.execute(stmt)


def downgrade() -> None:
    op.drop_index("ix_imports_org_created", table_name="imports")
    op.drop_index(
        "ix_imports_unfinished",
        table_name="imports",
        postgresql_where=sa.text("status in ('queued','running')"),
    )
    op.drop_table("imports")
