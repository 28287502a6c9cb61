from __future__ import annotations

import os
import subprocess
import sys

import pytest
from cryptography.fernet import Fernet

from rappit.app.factory import create_app
from rappit.platform.settings import DEV_ENCRYPTION_KEY, Settings, SettingsError

REQUIRED = [
    "SECRET_KEY",
    "ENCRYPTION_KEY",
    "DATABASE_URL",
    "MIGRATION_DATABASE_URL",
    "REDIS_URL",
    "CORS_ALLOWED_ORIGINS",
    "ADMIN_EMAILS",
]


def production_env(**overrides: str) -> dict[str, str]:
    env = {
        "RAPPIT_ENV": "production",
        "SECRET_KEY": "s" * 48,
        "ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "DATABASE_URL": "postgresql://rappit_app@db.internal/rappit",
        "MIGRATION_DATABASE_URL": "postgresql://rappit_owner@db.internal/rappit",
        "REDIS_URL": "redis://cache.internal:6379/0",
        "CORS_ALLOWED_ORIGINS": "https://app.rappit.io",
        "ADMIN_EMAILS": "ops@rappit.io",
    }
    env.update(overrides)
    return {k: v for k, v in env.items() if v != ""}


def test_production_with_nothing_set_names_every_missing_setting() -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env({"RAPPIT_ENV": "production"})
    text = str(err.value)
    for name in REQUIRED:
        assert f"{name} is required in production" in text
    assert len(err.value.problems) == len(REQUIRED)


def test_production_rejects_placeholders_short_secret_dev_key_and_wildcard_cors() -> None:
    env = production_env(
        SECRET_KEY="change-me",
        ENCRYPTION_KEY=DEV_ENCRYPTION_KEY,
        CORS_ALLOWED_ORIGINS="*",
        ADMIN_EMAILS="not-an-email",
        DATABASE_URL="postgresql://user:CHANGEME@db/rappit",
    )
    with pytest.raises(SettingsError) as err:
        Settings.from_env(env)
    problems = "\n".join(err.value.problems)
    assert "SECRET_KEY holds a placeholder" in problems
    assert "SECRET_KEY must be at least 32 characters" in problems
    assert "ENCRYPTION_KEY is the public development key" in problems
    assert "CORS_ALLOWED_ORIGINS may not be '*'" in problems
    assert "not an e-mail address" in problems
    assert "DATABASE_URL holds a placeholder" in problems


def test_invalid_fernet_key_bad_integer_log_level_and_owner_as_app_role_are_reported_together() -> None:
    env = production_env(ENCRYPTION_KEY="nope", PORT="eighty", LOG_LEVEL="LOUD")
    env["MIGRATION_DATABASE_URL"] = env["DATABASE_URL"]
    with pytest.raises(SettingsError) as err:
        Settings.from_env(env)
    problems = "\n".join(err.value.problems)
    assert "not a valid Fernet key" in problems and "PORT must be an integer" in problems
    assert "LOG_LEVEL must be" in problems and "row-level security does not bind" in problems


def test_database_timeouts_have_bounded_defaults_and_are_validated() -> None:
    defaults = Settings.from_env({})
    assert defaults.db_connect_timeout_seconds == 2 and defaults.db_pool_timeout_seconds == 5
    assert defaults.db_statement_timeout_ms == 5000
    env = {
        "DB_CONNECT_TIMEOUT_SECONDS": "soon",
        "DB_POOL_TIMEOUT_SECONDS": "0",
        "DB_STATEMENT_TIMEOUT_MS": "5",
    }
    with pytest.raises(SettingsError) as err:
        Settings.from_env(env)
    problems = "\n".join(err.value.problems)
    assert "DB_CONNECT_TIMEOUT_SECONDS must be an integer" in problems
    assert "DB_POOL_TIMEOUT_SECONDS must be at least 1" in problems
    assert "DB_STATEMENT_TIMEOUT_MS must be at least 100" in problems


async def test_serving_as_a_role_that_bypasses_rls_is_refused(engine, admin_engine) -> None:
    from rappit.platform.db import assert_rls_binds

    await assert_rls_binds(engine)  # the app role: fine
    with pytest.raises(RuntimeError, match="row-level security"):
        await assert_rls_binds(admin_engine)  # the superuser / table owner


def test_complete_production_settings_load() -> None:
    settings = Settings.from_env(production_env())
    assert settings.is_production and not settings.embedded
    assert settings.database_url == "postgresql+asyncpg://rappit_app@db.internal/rappit"
    assert settings.cors_allowed_origins == ("https://app.rappit.io",)


def test_development_needs_nothing() -> None:
    settings = Settings.from_env({})
    assert settings.env == "development" and settings.embedded


def test_create_app_fails_fast_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAPPIT_ENV", "production")
    for name in REQUIRED:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SettingsError) as err:
        create_app()
    assert len(err.value.problems) == len(REQUIRED)


@pytest.mark.parametrize("command", [["check"], ["serve"], ["worker"]])
def test_production_boot_exits_non_zero_listing_every_problem(command: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if k not in REQUIRED}
    env["RAPPIT_ENV"] = "production"
    proc = subprocess.run(
        [sys.executable, "-m", "rappit.app.cli", *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    for name in REQUIRED:
        assert name in proc.stderr


SYSTEM_URL = "postgresql://rappit_system@db.internal/rappit"


def test_worker_in_production_needs_the_system_database_url() -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env(production_env(), system_db="required")
    assert any("SYSTEM_DATABASE_URL is required" in p for p in err.value.problems)
    ok = Settings.from_env(production_env(SYSTEM_DATABASE_URL=SYSTEM_URL), system_db="required")
    assert ok.system_database_url == "postgresql+asyncpg://rappit_system@db.internal/rappit"


def test_api_in_production_refuses_to_hold_the_system_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env(production_env(SYSTEM_DATABASE_URL=SYSTEM_URL), system_db="forbidden")
    assert any("SYSTEM_DATABASE_URL must not be set for the API" in p for p in err.value.problems)
    for name, value in production_env(SYSTEM_DATABASE_URL=SYSTEM_URL).items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match="SYSTEM_DATABASE_URL"):
        create_app()  # the uvicorn factory path reads the environment itself


def test_system_database_url_must_be_its_own_role() -> None:
    env = production_env(SYSTEM_DATABASE_URL="postgresql://rappit_app@db.internal/rappit")
    with pytest.raises(SettingsError, match="its own role"):
        Settings.from_env(env, system_db="required")


def test_production_worker_command_exits_naming_the_system_database_url() -> None:
    env = {k: v for k, v in os.environ.items() if k != "SYSTEM_DATABASE_URL"}
    env.update(production_env())
    proc = subprocess.run(
        [sys.executable, "-m", "rappit.app.cli", "worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "SYSTEM_DATABASE_URL is required" in proc.stderr


def test_up_gives_the_system_url_to_the_worker_but_never_to_the_api(monkeypatch: pytest.MonkeyPatch) -> None:
    from rappit.app.cli import child_env

    monkeypatch.setenv("SYSTEM_DATABASE_URL", "postgresql://rappit_system@/exported-in-the-shell")
    live = Settings(database_url="postgresql+asyncpg://rappit_app@/x", system_database_url=SYSTEM_URL)
    assert "SYSTEM_DATABASE_URL" not in child_env(live, system=False)
    assert child_env(live, system=True)["SYSTEM_DATABASE_URL"] == SYSTEM_URL
