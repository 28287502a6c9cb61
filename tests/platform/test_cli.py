"""The onboarding runbook, as an operator runs it: one command makes a tenant with a user and a token."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid

import pytest


def run_cli(settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.update(
        RAPPIT_ENV="development",
        DATABASE_URL=settings.database_url,
        MIGRATION_DATABASE_URL=settings.migration_database_url,
        REDIS_URL=settings.redis_url,
    )
    return subprocess.run(
        [sys.executable, "-m", "rappit.app.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def code() -> str:
    return "C" + uuid.uuid4().hex[:6].upper()


async def test_org_create_prints_a_working_token_once(settings, client, code) -> None:
    proc = run_cli(
        settings, "org", "create", "--name", "Acme Corp", "--admin-email", "Owner@Acme.test", "--code", code
    )
    assert proc.returncode == 0, proc.stderr
    tokens = re.findall(r"rpt_[A-Za-z0-9_-]{40,}", proc.stdout)
    assert len(set(tokens)) == 1
    me = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {tokens[0]}"})
    assert me.status_code == 200 and me.json()["org_code"] == code and me.json()["role"] == "owner"

    added = run_cli(settings, "user", "add", "--org", code, "--email", "ops@acme.test", "--role", "staff")
    assert added.returncode == 0, added.stderr
    issued = run_cli(settings, "token", "create", "--org", code, "--name", "erp", "--role", "viewer")
    assert issued.returncode == 0, issued.stderr
    token = re.findall(r"rpt_[A-Za-z0-9_-]{40,}", issued.stdout)[0]
    me = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert me.json()["role"] == "viewer"
    users = await client.get("/api/v1/users", headers={"Authorization": f"Bearer {tokens[0]}"})
    assert sorted(u["email"] for u in users.json()) == ["ops@acme.test", "owner@acme.test"]


def test_duplicate_org_code_and_unknown_org_fail_with_a_message(settings, code) -> None:
    assert (
        run_cli(
            settings, "org", "create", "--name", "One", "--admin-email", "a@one.test", "--code", code
        ).returncode
        == 0
    )
    again = run_cli(settings, "org", "create", "--name", "Two", "--admin-email", "b@two.test", "--code", code)
    assert again.returncode == 1 and "is taken" in again.stderr
    missing = run_cli(settings, "token", "create", "--org", "ZZNOPE", "--name", "x")
    assert missing.returncode == 1 and "no organization with code ZZNOPE" in missing.stderr


async def test_reset_password_lets_the_user_sign_in_with_the_new_one_only(settings, client, code) -> None:
    created = run_cli(
        settings, "org", "create", "--name", "Reset", "--admin-email", "o@reset.test", "--code", code
    )
    assert created.returncode == 0, created.stderr
    old = re.search(r"o@reset.test / password (\S+)", created.stdout).group(1)

    chosen = run_cli(
        settings, "user", "reset-password", "--org", code, "--email", "O@Reset.test", "--password", "x" * 12
    )
    assert chosen.returncode == 0, chosen.stderr
    generated = run_cli(settings, "user", "reset-password", "--org", code, "--email", "o@reset.test")
    assert generated.returncode == 0, generated.stderr
    new = re.search(rf"New password for o@reset.test \({code}\): (\S+)", generated.stdout).group(1)
    assert new not in (old, "x" * 12)

    def login(password: str):
        return client.post(
            "/auth/login", json={"org_code": code, "email": "o@reset.test", "password": password}
        )

    assert (await login(old)).status_code == 401
    assert (await login("x" * 12)).status_code == 401
    assert (await login(new)).status_code == 200
    client.cookies.clear()

    missing = run_cli(settings, "user", "reset-password", "--org", code, "--email", "nobody@reset.test")
    assert missing.returncode == 1 and "no user nobody@reset.test" in missing.stderr
    weak = run_cli(
        settings, "user", "reset-password", "--org", code, "--email", "o@reset.test", "--password", "x"
    )
    assert weak.returncode == 1 and "at least 12 characters" in weak.stderr
