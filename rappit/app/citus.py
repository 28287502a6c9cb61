"""The Citus DDL that distributes the schema, generated from the models so it cannot drift.

Run after the migrations on a Citus coordinator: tables without `org_id` (organizations) become
reference tables, copied to every node; tenant tables are distributed by `org_id`, all in one
colocation group, so a tenant's rows of every table share a node and joins and foreign keys on
`(org_id, ...)` stay local. README.md's "Running in production" section carries this output; a test
compares the two. `python -m rappit.app.citus` prints it.
"""

from __future__ import annotations

from sqlalchemy import MetaData

from rappit.app.models_registry import metadata as app_metadata

DISTRIBUTION_COLUMN = "org_id"
COLOCATION_ANCHOR = "users"
"""Every distributed table colocates with this one. Named, not derived from the table order, so a new
table joins the existing group on a running cluster instead of becoming the anchor of a new one."""


def citus_ddl(metadata: MetaData = app_metadata) -> list[str]:
    """One statement per table: reference tables first (distributed tables' foreign keys point at
    them), then the colocation anchor, then the other distributed tables parents before children."""
    tables = metadata.sorted_tables  # dependency order, ties by name: deterministic
    reference = [t for t in tables if DISTRIBUTION_COLUMN not in t.c]
    distributed = [t for t in tables if DISTRIBUTION_COLUMN in t.c]
    distributed.sort(key=lambda t: t.name != COLOCATION_ANCHOR)  # stable: the anchor first, order kept
    if distributed and distributed[0].name != COLOCATION_ANCHOR:
        raise ValueError(f"no table {COLOCATION_ANCHOR!r} to colocate the distributed tables with")
    statements = [f"SELECT create_reference_table('{t.name}');" for t in reference]
    for table in distributed:
        colocate = "none" if table.name == COLOCATION_ANCHOR else COLOCATION_ANCHOR
        statements.append(
            f"SELECT create_distributed_table('{table.name}', '{DISTRIBUTION_COLUMN}', colocate_with "
            f"=> '{colocate}');"
        )
    return statements


def readme_block(metadata: MetaData = app_metadata) -> str:
    """The fenced block README.md keeps between `<!-- citus:begin -->` and `<!-- citus:end -->`."""
    return "```sql\n" + "\n".join(citus_ddl(metadata)) + "\n```"


if __name__ == "__main__":
    print(readme_block())
