"""Ready for Citus, checked in the migrated catalog rather than claimed: a tenant table (one with an
`org_id` column) has `org_id` in its primary key, in every unique constraint or unique index, and in
every foreign key to another tenant table (mapped onto the target's `org_id`); every other table is
a listed global one. The checker runs on the real schema and on a deliberately broken one."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from rappit.app.citus import citus_ddl, readme_block
from rappit.app.models_registry import metadata

GLOBAL_TABLES = {
    "organizations": "the tenants themselves: a Citus reference table, copied to every node",
    "alembic_version": "migration bookkeeping: stays a local table on the coordinator",
}
"""Tables that are not tenant-scoped. Anything else without org_id fails the check."""

_TABLES = text(
    """select c.oid, c.relname,
              a.attnum as org_attnum,
              c.relrowsecurity as rls,
              exists(select 1 from pg_policy p where p.polrelid = c.oid) as has_policy
         from pg_class c
         left join pg_attribute a on a.attrelid = c.oid and a.attname = 'org_id' and not a.attisdropped
        where c.relnamespace = cast(:schema as regnamespace) and c.relkind in ('r', 'p')"""
)
_KEYS = text(
    """select c.conrelid as table_oid, c.conname, c.contype::text as contype, c.conkey, c.confrelid, c.confkey
         from pg_constraint c
        where c.connamespace = cast(:schema as regnamespace) and c.contype in ('p', 'u', 'f')"""
)
_UNIQUE_INDEXES = text(
    """select i.indrelid as table_oid, x.relname as index_name,
       string_to_array(i.indkey::text, ' ')::int[] as cols
         from pg_index i join pg_class x on x.oid = i.indexrelid
        where x.relnamespace = cast(:schema as regnamespace) and i.indisunique
          and not exists (select 1 from pg_constraint c where c.conindid = i.indexrelid and c.contype
            in ('p','u'))"""
)


async def catalog_violations(
    conn: AsyncConnection, schema: str = "public", global_tables: set[str] | dict[str, str] = GLOBAL_TABLES
) -> list[str]:
    """Every way the tables of `schema` would not distribute by org_id, as readable lines."""
    params = {"schema": schema}
    tables = {r.oid: r for r in (await conn.execute(_TABLES, params)).all()}
    org_col = {oid: r.org_attnum for oid, r in tables.items() if r.org_attnum is not None}
    problems: list[str] = []
    for oid, t in sorted(tables.items(), key=lambda kv: kv[1].relname):
        if oid in org_col:
            if t.relname in global_tables:
                problems.append(f"{t.relname}: listed as global but has org_id")
            if not (t.rls and t.has_policy):
                problems.append(f"{t.relname}: tenant table without row-level security")
        elif t.relname not in global_tables:
            problems.append(f"{t.relname}: neither tenant-scoped (no org_id) nor a listed global table")
    has_pk = set()
    for k in (await conn.execute(_KEYS, params)).all():
        table = tables.get(k.table_oid)
        if table is None:
            continue
        name = table.relname
        if k.contype == "p":
            has_pk.add(k.table_oid)
        if k.table_oid not in org_col:
            if k.contype == "f" and k.confrelid in org_col:
                problems.append(f"{name}: foreign key {k.conname} from a global table to a tenant table")
            continue
        org = org_col[k.table_oid]
        if k.contype in ("p", "u") and org not in k.conkey:
            kind = "primary key" if k.contype == "p" else "unique constraint"
            problems.append(f"{name}: {kind} {k.conname} lacks org_id")
        if k.contype == "f" and k.confrelid in org_col:
            pairs = set(zip(k.conkey, k.confkey, strict=True))
            if (org, org_col[k.confrelid]) not in pairs:
                problems.append(
                    f"{name}: foreign key {k.conname} to a tenant table does not match org_id to org_id"
                )
    for oid in sorted(set(org_col) - has_pk, key=lambda o: tables[o].relname):
        problems.append(f"{tables[oid].relname}: tenant table without a primary key")
    for ix in (await conn.execute(_UNIQUE_INDEXES, params)).all():
        if ix.table_oid in org_col and org_col[ix.table_oid] not in ix.cols:
            problems.append(f"{tables[ix.table_oid].relname}: unique index {ix.index_name} lacks org_id")
    return sorted(problems)


async def test_migrated_schema_is_ready_to_distribute_by_org(admin_engine: Any) -> None:
    async with admin_engine.connect() as conn:
        assert await catalog_violations(conn) == []


async def test_tenant_primary_keys_are_org_id_then_id(admin_engine: Any) -> None:
    async with admin_engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    """select c.conrelid::regclass::text as table_name,
                       pg_get_constraintdef(c.oid) as definition
                         from pg_constraint c join pg_attribute a on a.attrelid = c.conrelid and
                           a.attname = 'org_id'
                        where c.contype = 'p' and c.connamespace = 'public'::regnamespace"""
                )
            )
        ).all()
    assert {r.table_name for r in rows} == {t.name for t in metadata.sorted_tables if "org_id" in t.c}
    assert {r.definition for r in rows} == {"PRIMARY KEY (org_id, id)"}


async def test_checker_flags_each_kind_of_violation(admin_engine: Any) -> None:
    """A broken schema made in a transaction that is rolled back: the checker must name every fault,
    and nothing on the one well-formed table."""
    async with admin_engine.connect() as conn:
        trans = await conn.begin()
        try:
            for stmt in [
                "CREATE SCHEMA catalog_probe",
                "CREATE TABLE catalog_probe.orgs (id uuid PRIMARY KEY)",
                # Well formed: key (org_id, id), RLS, an org-qualified FK to itself, a unique with org_id.
                """CREATE TABLE catalog_probe.good (org_id uuid NOT NULL REFERENCES
                   catalog_probe.orgs, id uuid NOT NULL,
                     parent_id uuid, code text, PRIMARY KEY (org_id, id), UNIQUE (org_id, code),
                     FOREIGN KEY (org_id, parent_id) REFERENCES catalog_probe.good (org_id, id))""",
                # The old shape: key (id) beside UNIQUE (org_id, id), and a global unique.
                """CREATE TABLE catalog_probe.old_key (org_id uuid NOT NULL, id uuid PRIMARY KEY, token text,
                     UNIQUE (org_id, id), CONSTRAINT old_key_token_global UNIQUE (token))""",
                # FKs into a tenant table that leave org_id out, or cross it with another column.
                """CREATE TABLE catalog_probe.child (org_id uuid NOT NULL, id uuid
                   NOT NULL, old_id uuid, good_id uuid,
                     PRIMARY KEY (org_id, id),
                     CONSTRAINT child_by_id FOREIGN KEY (old_id) REFERENCES catalog_probe.old_key (id),
                     CONSTRAINT child_crossed FOREIGN KEY (good_id, org_id) REFERENCES
                       catalog_probe.good (org_id, id))""",
                "CREATE UNIQUE INDEX child_old_id_unique ON catalog_probe.child (old_id)",
                "CREATE TABLE catalog_probe.keyless (org_id uuid NOT NULL, id uuid)",
                "CREATE TABLE catalog_probe.stray (id uuid PRIMARY KEY, good_org uuid, good_id uuid,"
                " CONSTRAINT stray_to_tenant FOREIGN KEY (good_org, good_id) REFERENCES "
                "catalog_probe.good (org_id, id))",
                *[
                    f"ALTER TABLE catalog_probe.{t} ENABLE ROW LEVEL SECURITY; "
                    f"CREATE POLICY org_isolation ON catalog_probe.{t} USING (true)"
                    for t in ("good", "old_key", "child", "keyless")
                ],
                "ALTER TABLE catalog_probe.keyless DISABLE ROW LEVEL SECURITY",
            ]:
                for part in stmt.split("; "):
                    await conn.execute(text(part))
            found = await catalog_violations(conn, "catalog_probe", global_tables={"orgs"})
        finally:
            await trans.rollback()
    assert found == sorted(
        [
            "old_key: primary key old_key_pkey lacks org_id",
            "old_key: unique constraint old_key_token_global lacks org_id",
            "child: foreign key child_by_id to a tenant table does not match org_id to org_id",
            "child: foreign key child_crossed to a tenant table does not match org_id to org_id",
            "child: unique index child_old_id_unique lacks org_id",
            "keyless: tenant table without a primary key",
            "keyless: tenant table without row-level security",
            "stray: neither tenant-scoped (no org_id) nor a listed global table",
            "stray: foreign key stray_to_tenant from a global table to a tenant table",
        ]
    ), found
    async with admin_engine.connect() as conn:  # the probe really is gone
        assert (await conn.execute(text("select to_regnamespace('catalog_probe')"))).scalar() is None


def test_citus_ddl_covers_every_table_once() -> None:
    statements = citus_ddl()
    named = [re.search(r"\('(\w+)'", s).group(1) for s in statements]  # type: ignore[union-attr]
    assert sorted(named) == sorted(metadata.tables)
    reference = {n for n, s in zip(named, statements, strict=True) if "create_reference_table" in s}
    assert reference == {t.name for t in metadata.sorted_tables if "org_id" not in t.c} == {"organizations"}
    assert reference <= set(GLOBAL_TABLES)
    # A parent is distributed before any table whose foreign key points at it.
    position = {n: i for i, n in enumerate(named)}
    for table in metadata.sorted_tables:
        for fk in table.foreign_key_constraints:
            assert position[fk.referred_table.name] < position[table.name], (
                table.name,
                fk.referred_table.name,
            )


def test_readme_citus_block_is_the_generated_ddl(repo_root: Any) -> None:
    readme = (repo_root / "README.md").read_text()
    match = re.search(r"<!-- citus:begin -->\n(.*?)\n<!-- citus:end -->", readme, re.S)
    assert match, "README.md lacks the <!-- citus:begin --> ... <!-- citus:end --> block"
    assert match.group(1) == readme_block(), (
        "README.md's Citus block differs from the models: paste `python -m rappit.app.citus` between "
        "the markers"
    )
