"""row-level security with no bypass setting; cross-org work runs as a BYPASSRLS system role

Every policy accepted `current_setting('app.bypass_rls', true) = 'on'`, which any SQL running as the
app role could set: the logged `unscoped()` bypass was enforced only by Python. The policies now read
the org id alone, and cross-org work (sweeper, expiry, reconciliation, purge) connects as
`rappit_system` (BYPASSRLS, a member of the app role), whose URL only the worker and the CLI hold.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 08:00:00
"""

from __future__ import annotations

from alembic import op

from rappit.tenancy.rls import system_role_sql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_ORG = "nullif(current_setting('app.org_id', true), '')::uuid"
_BYPASS = "current_setting('app.bypass_rls', true) = 'on'"

# Every table with a policy when this was written (0001-0003), and its org column. Frozen here, not
# read from the models, so this revision means the same thing whatever comes after it.
POLICIES = {
    "organizations": "id",
    "users": "org_id",
    "api_tokens": "org_id",
    "idempotency_keys": "org_id",
    "skus": "org_id",
    "warehouses": "org_id",
    "inventory_levels": "org_id",
    "inventory_ledger": "org_id",
    "reservations": "org_id",
    "dead_letters": "org_id",
    "order_counters": "org_id",
    "channels": "org_id",
    "orders": "org_id",
    "webhook_events": "org_id",
    "order_events": "org_id",
    "order_lines": "org_id",
}

# Any other policy that still reads the bypass setting (a table added by a revision this one does
# not know) fails the upgrade loudly rather than staying open.
_NO_BYPASS_LEFT = """DO $$ DECLARE t text; BEGIN
  SELECT string_agg(tablename, ', ') INTO t FROM pg_policies
   WHERE schemaname = 'public'
     AND (coalesce(qual, '') || coalesce(with_check, '')) LIKE '%app.bypass_rls%';
  IF t IS NOT NULL THEN
    RAISE EXCEPTION 'policies still read app.bypass_rls on: %', t;
  END IF;
END $$"""


def _recreate(table: str, predicate: str) -> list[str]:
    return [
        f"DROP POLICY IF EXISTS org_isolation ON {table}",
        f"CREATE POLICY org_isolation ON {table} USING {predicate} WITH CHECK {predicate}",
    ]


def upgrade() -> None:
    for stmt in system_role_sql():
        op.execute(stmt)
    for table, column in POLICIES.items():
        for stmt in _recreate(table, f"({column} = {_ORG})"):
            op.execute(stmt)
    op.execute(_NO_BYPASS_LEFT)


def downgrade() -> None:
    # The role is cluster-wide (other databases may use it): it stays, as the app role does.
    for table, column in POLICIES.items():
        for stmt in _recreate(table, f"({column} = {_ORG} OR {_BYPASS})"):
            op.execute(stmt)
