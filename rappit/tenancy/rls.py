"""Row-level security, as migrations apply it.

The app connects as APP_ROLE, which owns no table, so these policies bind it: a query sees only
rows of `current_setting('app.org_id')` (set with SET LOCAL by the session hook); with no org set it
sees nothing. No other setting opens them: cross-org work connects as SYSTEM_ROLE (BYPASSRLS), whose
credentials only the worker and the CLI hold (`unscoped()`).
"""

from __future__ import annotations

from rappit.platform.db import APP_ROLE, SYSTEM_ROLE

__all__ = ["APP_ROLE", "SYSTEM_ROLE", "definer_function_sql", "grants_sql", "policy_sql", "system_role_sql"]

_ORG = "nullif(current_setting('app.org_id', true), '')::uuid"


def org_predicate(column: str = "org_id") -> str:
    return f"({column} = {_ORG})"


def policy_sql(table: str, column: str = "org_id") -> list[str]:
    predicate = org_predicate(column)
    return [
        f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY",
        f"CREATE POLICY org_isolation ON {table} USING {predicate} WITH CHECK {predicate}",
    ]


def grants_sql() -> list[str]:
    """Privileges for the app role on everything this (owner) role creates from now on."""
    return [
        f"""DO $$ BEGIN
              IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
                CREATE ROLE {APP_ROLE} NOLOGIN;
              END IF;
            END $$""",
        f"GRANT USAGE ON SCHEMA public TO {APP_ROLE}",
        "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO "
        f"{APP_ROLE}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {APP_ROLE}",
    ]


def system_role_sql() -> list[str]:
    """The role cross-org work runs as: a member of the app role (its privileges, nothing more) with
    BYPASSRLS. NOLOGIN here; the deployment (or the local stack) gives it LOGIN and a password.
    Creating a BYPASSRLS role needs a superuser: where migrations run as a plain owner, create it
    first (`CREATE ROLE rappit_system LOGIN BYPASSRLS PASSWORD '...'`) and this leaves it alone."""
    return [
        f"""DO $$ BEGIN
              IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{SYSTEM_ROLE}') THEN
                CREATE ROLE {SYSTEM_ROLE} NOLOGIN BYPASSRLS;
              END IF;
            END $$""",
        f"GRANT {APP_ROLE} TO {SYSTEM_ROLE}",
    ]


def definer_function_sql(signature: str, returns: str, body: str) -> list[str]:
    """A narrow cross-org read, run with the owner's rights (RLS does not bind them), for the app role."""
    return [
        f"""CREATE OR REPLACE FUNCTION {signature} RETURNS {returns}
            LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $fn$ {body} $fn$""",
        f"REVOKE ALL ON FUNCTION {signature} FROM PUBLIC",
        f"GRANT EXECUTE ON FUNCTION {signature} TO {APP_ROLE}",
    ]
