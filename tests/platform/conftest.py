"""A database of its own for tests that make the demo organization (its code, DEMO, is one per database)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy.engine import make_url

from rappit.platform import migrate
from rappit.platform.db import APP_ROLE, SYSTEM_ROLE
from rappit.platform.localstack import drop_database, ensure_database, with_database


@dataclass(frozen=True)
class OwnDatabase:
    admin_url: str
    app_url: str
    system_url: str


@pytest.fixture
def own_database(stack) -> Iterator[OwnDatabase]:
    """A fresh, migrated database on the test server, dropped after the test."""
    database = f"rappit_demo_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    ensure_database(stack.admin_url, database)
    admin = with_database(stack.admin_url, database)
    try:
        migrate.upgrade(admin)
        url = make_url(admin)
        yield OwnDatabase(
            admin_url=admin,
            app_url=url.set(username=APP_ROLE).render_as_string(hide_password=False),
            system_url=url.set(username=SYSTEM_ROLE).render_as_string(hide_password=False),
        )
    finally:
        drop_database(stack.admin_url, database)
