"""The real stack, once per run: PostgreSQL and Redis (embedded unless TEST_DATABASE_URL / TEST_REDIS_URL
are set), a fresh database created and migrated for this run and dropped after it, the app in process.
The embedded servers' files under .data/test are deleted after the run unless KEEP_TEST_DATA=1.

Every test gets its own organizations from `make_org`, so tests never depend on one another.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

from rappit.app.factory import create_app
from rappit.platform import migrate
from rappit.platform.db import make_engine, make_sessionmaker, provide_session
from rappit.platform.localstack import (
    TEST_TUNING,
    EmbeddedPostgres,
    EmbeddedRedis,
    drop_database,
    ensure_database,
)
from rappit.platform.settings import REPO_ROOT, Settings
from rappit.tenancy.rls import APP_ROLE, SYSTEM_ROLE
from rappit.tenancy.scoping import install_scoping
from rappit.tenancy.service import create_organization

TEST_DATA = REPO_ROOT / ".data" / "test"
install_scoping()  # as the app, the worker and the CLI do at start-up


@dataclass(frozen=True)
class Stack:
    admin_url: str
    """Superuser / table owner: migrations and assertions that must see every org."""
    app_url: str
    """The app role, bound by row-level security."""
    system_url: str
    """The system role (BYPASSRLS): cross-org work, as the worker runs it."""
    redis_url: str
    database: str


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    database = f"rappit_test_{os.getpid()}"
    started: list[Any] = []
    external_db = os.environ.get("TEST_DATABASE_URL")
    if external_db:
        server_admin = external_db
    else:
        pg = EmbeddedPostgres(TEST_DATA / "pg", tuning=dict(TEST_TUNING)).start()
        started.append(pg)
        server_admin = pg.superuser_url()
    ensure_database(server_admin, database)
    admin = make_url(server_admin.replace("postgresql+asyncpg://", "postgresql://")).set(database=database)
    app = admin.set(username=APP_ROLE, password=None)
    system = admin.set(username=SYSTEM_ROLE, password=None)
    redis_url = os.environ.get("TEST_REDIS_URL")
    if not redis_url:
        redis = EmbeddedRedis(TEST_DATA / "redis").start()
        started.append(redis)
        redis_url = redis.url
    admin_url = admin.render_as_string(hide_password=False)
    migrate.upgrade(admin_url)
    try:
        yield Stack(
            admin_url=admin_url,
            app_url=app.render_as_string(hide_password=False),
            system_url=system.render_as_string(hide_password=False),
            redis_url=redis_url,
            database=database,
        )
    finally:
        drop_database(server_admin, database)
        ours = [s for s in started if getattr(s, "_started_here", False) or getattr(s, "_proc", None)]
        for service in reversed(started):
            service.stop()
        if not os.environ.get("KEEP_TEST_DATA"):
            remove_test_data(ours)


def remove_test_data(services: list[Any]) -> None:
    """The throwaway cluster is ~150 MB: delete what this session started (a server it only attached
    to belongs to another session still running). The next run initialises a new one, a few seconds
    more; KEEP_TEST_DATA=1 keeps it."""
    for service in services:
        shutil.rmtree(service.data_dir, ignore_errors=True)
    if TEST_DATA.exists() and not any(TEST_DATA.iterdir()):
        TEST_DATA.rmdir()


@pytest.fixture(scope="session")
def settings(stack: Stack) -> Settings:
    # Every test calls from 127.0.0.1 within the same minutes: the shared app gets limits no test
    # reaches; the rate-limit tests build their own apps with small ones. Likewise a pool wait that the
    # 200-request bursts on two shared cores never hit; the timeout tests build apps with small ones.
    generous = 1_000_000
    return Settings(
        env="test",
        log_json=True,
        db_pool_timeout_seconds=60,
        rate_limit_api_per_minute=generous,
        rate_limit_webhooks_per_minute=generous,
        rate_limit_channel_per_minute=generous,
        max_import_bytes=16 * 1024 * 1024,  # the 413 test sends one byte more
    ).with_stack(
        database_url=stack.app_url,
        migration_database_url=stack.admin_url,
        redis_url=stack.redis_url,
        system_database_url=stack.system_url,
    )


@pytest.fixture(scope="session")
async def redis(stack: Stack) -> AsyncIterator[Redis]:
    client = Redis.from_url(stack.redis_url)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture(autouse=True)
async def fresh_redis(request: pytest.FixtureRequest) -> None:
    """Each test that uses the stack starts with an empty Redis: no jobs queued by an earlier test for a
    burst worker to drain, no rate-limit counters, no sessions. (Tests share one arq queue.)"""
    if {"client", "app", "settings"} & set(request.fixturenames):
        redis = request.getfixturevalue("redis")
        await redis.flushdb()


@pytest.fixture(scope="session")
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    eng = make_engine(settings, pool_size=20, max_overflow=20)
    yield eng
    await eng.dispose()


@pytest.fixture(scope="session")
def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return make_sessionmaker(engine)


@pytest.fixture(scope="session")
async def system_engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    eng = make_engine(settings, url=settings.system_database_url, pool_size=5, max_overflow=5)
    yield eng
    await eng.dispose()


@pytest.fixture(scope="session")
def system_sessionmaker(system_engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """What the worker hands to `unscoped()`."""
    return make_sessionmaker(system_engine, system=True)


@pytest.fixture(scope="session")
async def admin_engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    """Connects as the table owner/superuser: sees every org (assertions only)."""
    eng = create_async_engine(settings.migration_database_url or "", poolclass=NullPool)
    yield eng
    await eng.dispose()


@pytest.fixture(scope="session")
async def app(settings: Settings, redis: Redis) -> AsyncIterator[Any]:
    application = create_app(settings)
    await start_app(application)
    yield application
    await stop_app(application)


async def start_app(application: Any) -> None:
    """Run the startup hooks without Litestar's lifespan task group, which must exit in the task it
    entered (a session fixture's teardown runs in another)."""
    for hook in application.on_startup:
        await application._call_lifespan_hook(hook)


async def stop_app(application: Any) -> None:
    for hook in application.on_shutdown:
        await application._call_lifespan_hook(hook)


def client_for(application: Any, *, ip: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=application, client=(ip, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app) as c:
        yield c


@dataclass
class Org:
    id: uuid.UUID
    code: str
    token: str
    owner_email: str
    password: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def unique_code() -> str:
    return "T" + uuid.uuid4().hex[:8].upper()


@pytest.fixture
def make_org(sessionmaker: async_sessionmaker[AsyncSession]) -> Callable[..., Awaitable[Org]]:
    async def factory(name: str = "Test Org") -> Org:
        code = unique_code()
        password = "correct horse battery staple"
        async with provide_session(sessionmaker) as session:
            new = await create_organization(
                session, name=name, code=code, admin_email=f"owner@{code.lower()}.test", password=password
            )
        return Org(
            id=new.org.id,
            code=code,
            token=new.token.plaintext,
            owner_email=new.owner.email,
            password=password,
        )

    return factory


async def admin_scalar(admin_engine: AsyncEngine, sql: str, **params: Any) -> Any:
    async with admin_engine.connect() as conn:
        return (await conn.execute(text(sql), params)).scalar()


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT
