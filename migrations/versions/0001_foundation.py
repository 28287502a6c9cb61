"""foundation: organizations, users, API tokens; the app role, RLS and the auth lookup functions

Revision ID: 0001
Revises:
Create Date: 2026-11-23 14:34:10.632967
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from rappit.tenancy.rls import definer_function_sql, grants_sql, policy_sql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    # PostgreSQL < 15 lets any role create objects in public, where they could shadow what the
    # SECURITY DEFINER functions below call; only the owner may.
    op.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    for stmt in grants_sql():
        op.execute(stmt)
    op.create_table(
        "organizations",
        sa.Column("code", sa.String(length=10), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("code ~ '^[A-Z][A-Z0-9]{1,9}$'", name=op.f("ck_organizations_code_format")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organizations")),
        sa.UniqueConstraint("code", name=op.f("uq_organizations_code")),
    )
    op.create_table(
        "users",
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("password_hash", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.CheckConstraint("role in ('owner','admin','staff','viewer')", name=op.f("ck_users_role_known")),
        sa.CheckConstraint("email = lower(email)", name=op.f("ck_users_email_lowercase")),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name=op.f("fk_users_org_id_organizations"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("org_id", "email", name=op.f("uq_users_org_id_email")),
        sa.UniqueConstraint("org_id", "id", name=op.f("uq_users_org_id_id")),
    )
    op.create_table(
        "api_tokens",
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.CheckConstraint(
            "role in ('owner','admin','staff','viewer')", name=op.f("ck_api_tokens_role_known")
        ),
        sa.ForeignKeyConstraint(
            ["org_id", "user_id"],
            ["users.org_id", "users.id"],
            name=op.f("fk_api_tokens_org_id_user_id_users"),
        ),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_api_tokens_org_id_organizations"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("org_id", "id", name=op.f("uq_api_tokens_org_id_id")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_tokens_token_hash")),
    )
    # The organizations row is visible to its own org only.
    for stmt in policy_sql("organizations", column="id"):
        op.execute(stmt)
    for table in ("users", "api_tokens"):
        for stmt in policy_sql(table):
            op.execute(stmt)
    for stmt in AUTH_FUNCTIONS:
        op.execute(stmt)


AUTH_FUNCTIONS = [
    *definer_function_sql(
        "rappit_auth_token(p_hash text)",
        "TABLE(token_id uuid, org_id uuid, org_code text, user_id uuid, role text)",
        """SELECT t.id, t.org_id, o.code::text, t.user_id, t.role::text
             FROM api_tokens t JOIN organizations o ON o.id = t.org_id
             LEFT JOIN users u ON u.org_id = t.org_id AND u.id = t.user_id
            WHERE t.token_hash = p_hash AND t.revoked_at IS NULL
              AND (t.expires_at IS NULL OR t.expires_at > now())
              AND (t.user_id IS NULL OR u.is_active)""",
    ),
    *definer_function_sql(
        "rappit_auth_user(p_user_id uuid)",
        "TABLE(user_id uuid, org_id uuid, org_code text, role text, is_active boolean)",
        """SELECT u.id, u.org_id, o.code::text, u.role::text, u.is_active
             FROM users u JOIN organizations o ON o.id = u.org_id WHERE u.id = p_user_id""",
    ),
    *definer_function_sql(
        "rappit_auth_login(p_org_code text, p_email text)",
        "TABLE(user_id uuid, org_id uuid, org_code text, role text, password_hash text, is_active boolean)",
        """SELECT u.id, u.org_id, o.code::text, u.role::text, u.password_hash::text, u.is_active
             FROM users u JOIN organizations o ON o.id = u.org_id
            WHERE o.code = p_org_code AND u.email = p_email""",
    ),
    *definer_function_sql(
        "rappit_org_by_code(p_code text)",
        "TABLE(id uuid, code text)",
        "SELECT o.id, o.code::text FROM organizations o WHERE o.code = p_code",
    ),
]


def downgrade() -> None:
    for fn in (
        "rappit_auth_token(text)",
        "rappit_auth_user(uuid)",
        "rappit_auth_login(text, text)",
        "rappit_org_by_code(text)",
    ):
        op.execute(f"DROP FUNCTION IF EXISTS {fn}")
    op.drop_table("api_tokens")
    op.drop_table("users")
    op.drop_table("organizations")
