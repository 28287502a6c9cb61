"""Running alembic from code (CLI, local stack, tests)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config

from rappit.platform.settings import REPO_ROOT


def alembic_config(url: str) -> Config:
    config = Config(str(REPO_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(REPO_ROOT / "migrations"))
    config.attributes["url"] = url
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Synchronous (alembic's env runs its own event loop): call from a thread inside async code."""
    command.upgrade(alembic_config(url), revision)
