"""webhook ingress: a channel version for per-process caches, and one statement that stores a batch

Ingress keeps each channel's verification data (org, type, status, address, decrypted secret) in a
per-process cache. `channels.ingress_version` is raised by a trigger whenever what verification
depends on changes (the secret, the status, the address, the type), whoever changes it; ingress
stores deliveries through `rappit_webhook_ingest`, which writes a delivery only if its channel is
still active at the version the delivery was verified against. A delivery checked with a rotated-out
secret, or for a channel disabled since it was cached, is never stored: the process reloads the
channel and checks it again.

`rappit_webhook_ingest` is SECURITY DEFINER (the app role cannot write another org's rows through
RLS): it takes the deliveries of several channels (and orgs) as arrays, derives each row's org from
its channel, never from the caller, and inserts them with one statement (ON CONFLICT DO NOTHING:
the dedup key), answering per delivery 'accepted', 'duplicate' or 'stale'.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from rappit.tenancy.rls import APP_ROLE, definer_function_sql

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_BUMP = """CREATE OR REPLACE FUNCTION rappit_channel_ingress_version() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
  -- Whatever the caller wrote to ingress_version is ignored: only this trigger moves it.
  NEW.ingress_version := OLD.ingress_version
    + CASE WHEN NEW.webhook_secret IS DISTINCT FROM OLD.webhook_secret
             OR NEW.status IS DISTINCT FROM OLD.status
             OR NEW.address IS DISTINCT FROM OLD.address
             OR NEW.type IS DISTINCT FROM OLD.type
           THEN 1 ELSE 0 END;
  RETURN NEW;
END $fn$"""

_INGEST_SIGNATURE = (
    "rappit_webhook_ingest(p_channel uuid[], p_version bigint[], p_id uuid[], p_topic text[], "
    "p_delivery text[], p_dedup text[], p_payload bytea[], p_triggered timestamptz[], p_request text[])"
)

_INGEST = f"""CREATE OR REPLACE FUNCTION {_INGEST_SIGNATURE}
RETURNS TABLE(n bigint, outcome text)
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp AS $fn$
  WITH i AS (
    SELECT * FROM unnest(p_channel, p_version, p_id, p_topic, p_delivery, p_dedup, p_payload, p_triggered,
                         p_request)
      WITH ORDINALITY AS i(channel_id, version, id, topic, delivery_id, dedup_key, payload, triggered_at,
                           request_id, n)
  ), ok AS MATERIALIZED (
    SELECT i.*, c.org_id FROM i
      JOIN channels c ON c.id = i.channel_id AND c.status = 'active' AND c.ingress_version = i.version
  ), ins AS (
    INSERT INTO webhook_events (id, org_id, channel_id, topic, delivery_id, dedup_key, payload,
                                triggered_at, request_id, status, attempts)
    SELECT ok.id, ok.org_id, ok.channel_id, left(ok.topic, 100), left(ok.delivery_id, 200),
           left(ok.dedup_key, 300), ok.payload, ok.triggered_at, left(ok.request_id, 128), 'pending', 0
      FROM ok ORDER BY ok.n
    ON CONFLICT DO NOTHING
    RETURNING webhook_events.id
  )
  SELECT i.n,
         CASE WHEN ins.id IS NOT NULL THEN 'accepted' WHEN ok.n IS NOT NULL THEN 'duplicate' ELSE 'stale' END
    FROM i LEFT JOIN ok ON ok.n = i.n LEFT JOIN ins ON ins.id = i.id
   ORDER BY i.n
$fn$"""


def upgrade() -> None:
    op.add_column(
        "channels", sa.Column("ingress_version", sa.BigInteger(), server_default="1", nullable=False)
    )
    op.execute(_BUMP)
    op.execute(
        "CREATE TRIGGER channels_ingress_version BEFORE UPDATE ON channels "
        "FOR EACH ROW EXECUTE FUNCTION rappit_channel_ingress_version()"
    )
    # The look-up now also answers the version (a new return type: drop, then create).
    op.execute("DROP FUNCTION IF EXISTS rappit_webhook_channel(uuid)")
    for stmt in definer_function_sql(
        "rappit_webhook_channel(p_channel_id uuid)",
        "TABLE(org_id uuid, org_code text, type text, status text, address text, webhook_secret bytea, "
        "ingress_version bigint)",
        """SELECT c.org_id, o.code::text, c.type::text, c.status::text, c.address::text, c.webhook_secret,
                  c.ingress_version
             FROM channels c JOIN organizations o ON o.id = c.org_id WHERE c.id = p_channel_id""",
    ):
        op.execute(stmt)
    op.execute(_INGEST)
    op.execute(f"REVOKE ALL ON FUNCTION {_INGEST_SIGNATURE} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {_INGEST_SIGNATURE} TO {APP_ROLE}")


def downgrade() -> None:
    op.execute(f"DROP FUNCTION IF EXISTS {_INGEST_SIGNATURE}")
    op.execute("DROP FUNCTION IF EXISTS rappit_webhook_channel(uuid)")
    for stmt in definer_function_sql(
        "rappit_webhook_channel(p_channel_id uuid)",
        "TABLE(org_id uuid, org_code text, type text, status text, address text, webhook_secret bytea)",
        """SELECT c.org_id, o.code::text, c.type::text, c.status::text, c.address::text, c.webhook_secret
             FROM channels c JOIN organizations o ON o.id = c.org_id WHERE c.id = p_channel_id""",
    ):
        op.execute(stmt)
    op.execute("DROP TRIGGER IF EXISTS channels_ingress_version ON channels")
    op.execute("DROP FUNCTION IF EXISTS rappit_channel_ingress_version()")
    op.drop_column("channels", "ingress_version")
