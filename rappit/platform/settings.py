"""One typed settings object, read once from the environment and validated.

Development gets working defaults so that `./run up` needs nothing; production has no
default for any secret, address or admin and refuses to boot, naming every problem at once.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.fernet import Fernet

# The checkout (or, in the image, RAPPIT_HOME): where migrations/ and alembic.ini live.
REPO_ROOT = Path(os.environ.get("RAPPIT_HOME") or Path(__file__).resolve().parents[2])
ENVIRONMENTS = ("development", "test", "production")

# Values that only ever appear in examples and development defaults. Production rejects them.
PLACEHOLDER_MARKERS = ("change-me", "changeme", "replace-me", "example", "placeholder", "insecure", "xxx")
DEV_SECRET_KEY = "insecure-development-secret-key-do-not-use-in-production"
# A valid Fernet key that is public (it is in this file): development and tests only.
DEV_ENCRYPTION_KEY = "aW5zZWN1cmUtZGV2LWtleS0wMDAwMDAwMDAwMDAwMDA="


class SettingsError(Exception):
    """Raised with every problem found, so one boot attempt shows them all."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid settings:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True, slots=True)
class Settings:
    env: str = "development"
    """development | test | production."""
    secret_key: str = DEV_SECRET_KEY
    """Signs dashboard sessions; at least 32 characters in production."""
    encryption_keys: tuple[str, ...] = (DEV_ENCRYPTION_KEY,)
    """Fernet keys, newest first (ENCRYPTION_KEY, comma separated): first encrypts, all decrypt."""
    database_url: str | None = None
    """SQLAlchemy URL the app and workers use; must be a role that does not own the tables (RLS)."""
    migration_database_url: str | None = None
    """URL alembic uses (the table owner). Defaults to DATABASE_URL."""
    system_database_url: str | None = None
    """The system role (rappit_system, BYPASSRLS) for cross-org work: the worker and the CLI only,
    never the API. Required in production for the worker."""
    redis_url: str | None = None
    """redis:// or unix:// URL for jobs, rate-limit counters, breaker state and sessions."""
    cors_allowed_origins: tuple[str, ...] = ()
    """Origins allowed to call the API from a browser (CORS_ALLOWED_ORIGINS, comma separated)."""
    admin_emails: tuple[str, ...] = ()
    """Operators' e-mail addresses (ADMIN_EMAILS); they may use the platform-admin commands."""
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str | None = None
    """Base URL printed in onboarding output; defaults to http://HOST:PORT."""
    log_level: str = "INFO"
    log_json: bool = True
    """JSON log lines (LOG_JSON). Unset: JSON in production and wherever stderr is not a terminal,
    readable console lines for a developer at a terminal (and always under `rappit up`)."""
    rate_limit_auth_per_minute: int = 60
    """Per client IP on /auth/* routes."""
    rate_limit_webhooks_per_minute: int = 600
    """Refused deliveries (bad signature, unknown channel, malformed) per client IP on /webhooks/*:
    verified ones do not count, so a flash sale is never throttled by address."""
    rate_limit_api_per_minute: int = 1200
    """Per API token (or session user) on /api/v1/*; calls with no valid credentials per client IP."""
    login_failures_per_account: int = 10
    """Failed logins allowed per org code + e-mail per window, from any address (then 429)."""
    login_failure_window_seconds: int = 15 * 60
    session_idle_seconds: int = 30 * 60
    """A dashboard session unused this long is signed out (SESSION_IDLE_SECONDS); background polling
    does not count as use. Sessions end after 8 hours whatever their use."""
    forwarded_allow_ips: tuple[str, ...] = ()
    """Proxies whose X-Forwarded-For / -Proto uvicorn believes (FORWARDED_ALLOW_IPS, comma separated).
    Empty: none, the client address is the TCP peer, so no client can choose the IP it is limited by."""
    max_body_bytes: int = 10 * 1024 * 1024
    """Largest request body accepted anywhere (413 beyond)."""
    max_import_bytes: int = 200 * 1024 * 1024
    """Largest bulk import upload (POST /api/v1/inventory/bulk, /api/v1/skus/bulk; 413 beyond): a
    million stock rows is about 25 MB of CSV."""
    import_job_threshold_bytes: int = 2 * 1024 * 1024
    """A bulk import upload larger than this (about 100,000 stock rows) is stored and run as a job
    (202 with an import id); a smaller one is applied in its request."""
    max_webhook_bytes: int = 1024 * 1024
    """Largest webhook body accepted (413 beyond)."""
    rate_limit_channel_per_minute: int = 18_000
    """Per channel on /webhooks/{type}/{channel_id}: 300 a second for a minute, a flash sale's burst."""
    ingress_connections: int = 4
    """PostgreSQL connections each API process's webhook inbox writer uses (INGRESS_CONNECTIONS): one
    batch of deliveries in flight per connection (two more: channel look-ups, the workers' wake-up)."""
    ingress_batch_rows: int = 8
    """Most deliveries one inbox statement stores (INGRESS_BATCH_ROWS). Small batches over several
    connections keep the API process busy while PostgreSQL stores: one batch of everything in flight
    left the process idle for the whole statement (see `rappit.channels.ingest`)."""
    job_timeout_seconds: int = 30
    """arq job timeout; a killed worker's job is picked up again after this + 10 s."""
    retention_days: int = 30
    """Processed webhook events and order events older than this are deleted (hourly, in batches)."""
    shopify_admin_url: str = "https://{shop}"
    """Base URL of a shop's Admin API ({shop} = the shop domain); the sandbox points it at loopback."""
    db_pool_size: int = 10
    db_max_overflow: int = 10
    db_connect_timeout_seconds: int = 2
    """Opening a PostgreSQL connection that takes longer fails the request with 503."""
    db_pool_timeout_seconds: int = 5
    """Waiting longer than this for a pooled connection (all busy) fails the request with 503."""
    db_statement_timeout_ms: int = 5000
    """PostgreSQL cancels a statement after this (waiting for a lock included): 503 with Retry-After. A
    client-side timeout one second later covers a server too stalled to cancel anything."""
    data_dir: Path = field(default_factory=lambda: REPO_ROOT / ".data")
    """Where the embedded PostgreSQL and Redis keep their files in development."""

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def embedded(self) -> bool:
        """True when the local stack should start PostgreSQL/Redis itself."""
        return not self.is_production and (self.database_url is None or self.redis_url is None)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, system_db: str = "optional") -> Settings:
        """Read and validate; raises SettingsError listing every problem. `system_db`: "required" for
        processes that do cross-org work (the worker: production fails without SYSTEM_DATABASE_URL),
        "forbidden" for the API (production refuses to serve holding it), "optional" otherwise."""
        env = dict(os.environ if environ is None else environ)
        problems: list[str] = []

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        def integer(name: str, default: int, minimum: int = 1) -> int:
            raw = get(name)
            if raw is None:
                return default
            try:
                value = int(raw)
            except ValueError:
                problems.append(f"{name} must be an integer, got {raw!r}")
                return default
            if value < minimum:
                problems.append(f"{name} must be at least {minimum}, got {value}")
            return value

        def csv(name: str) -> tuple[str, ...]:
            return tuple(p.strip() for p in (get(name) or "").split(",") if p.strip())

        rappit_env = get("RAPPIT_ENV") or "development"
        if rappit_env not in ENVIRONMENTS:
            problems.append(f"RAPPIT_ENV must be one of {', '.join(ENVIRONMENTS)}, got {rappit_env!r}")
        production = rappit_env == "production"

        def is_placeholder(value: str) -> bool:
            lowered = value.lower()
            return any(marker in lowered for marker in PLACEHOLDER_MARKERS)

        def required(name: str) -> str | None:
            value = get(name)
            if production:
                if value is None:
                    problems.append(f"{name} is required in production")
                elif is_placeholder(value):
                    problems.append(f"{name} holds a placeholder value; set a real one")
            return value

        secret_key = required("SECRET_KEY")
        if production and secret_key and len(secret_key) < 32:
            problems.append("SECRET_KEY must be at least 32 characters")
        encryption = csv("ENCRYPTION_KEY") if required("ENCRYPTION_KEY") else ()
        for i, key in enumerate(encryption):
            try:
                Fernet(key.encode())
            except (ValueError, TypeError):
                problems.append(
                    f"ENCRYPTION_KEY entry {i + 1} is not a valid Fernet key (32 url-safe base64 bytes)"
                )
            if production and key == DEV_ENCRYPTION_KEY:
                problems.append("ENCRYPTION_KEY is the public development key")
        database_url = required("DATABASE_URL")
        migration_url = required("MIGRATION_DATABASE_URL")
        if production and migration_url and database_url and migration_url == database_url:
            problems.append(
                "MIGRATION_DATABASE_URL must be the table owner and DATABASE_URL a different role "
                "(rappit_app):"
                " row-level security does not bind a table's owner"
            )
        system_url = get("SYSTEM_DATABASE_URL")
        if production and system_db == "required" and system_url is None:
            problems.append("SYSTEM_DATABASE_URL is required in production for the worker (cross-org jobs)")
        if production and system_db == "forbidden" and system_url is not None:
            problems.append(
                "SYSTEM_DATABASE_URL must not be set for the API: it bypasses row-level security; "
                "give it to the worker only"
            )
        if system_url and is_placeholder(system_url):
            problems.append("SYSTEM_DATABASE_URL holds a placeholder value; set a real one")
        if system_url and system_url in (database_url, migration_url):
            problems.append(
                "SYSTEM_DATABASE_URL must be its own role (rappit_system, BYPASSRLS), not DATABASE_URL's "
                "or MIGRATION_DATABASE_URL's"
            )
        log_level = (get("LOG_LEVEL") or "INFO").upper()
        if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            problems.append(f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {log_level!r}")
        redis_url = required("REDIS_URL")
        cors = csv("CORS_ALLOWED_ORIGINS") if required("CORS_ALLOWED_ORIGINS") else ()
        if production and "*" in cors:
            problems.append("CORS_ALLOWED_ORIGINS may not be '*' in production")
        admins = csv("ADMIN_EMAILS") if required("ADMIN_EMAILS") else ()
        for email in admins:
            if "@" not in email:
                problems.append(f"ADMIN_EMAILS entry {email!r} is not an e-mail address")

        log_json_raw = get("LOG_JSON")
        if log_json_raw is None:
            log_json = production or not sys.stderr.isatty()
        else:
            log_json = log_json_raw.lower() not in ("0", "false", "no")
        data_dir = Path(get("RAPPIT_DATA_DIR") or REPO_ROOT / ".data")
        settings = cls(
            env=rappit_env,
            secret_key=secret_key or DEV_SECRET_KEY,
            encryption_keys=encryption or (DEV_ENCRYPTION_KEY,),
            database_url=_async_url(database_url) if database_url else None,
            migration_database_url=_async_url(migration_url or database_url or "") or None,
            system_database_url=_async_url(system_url) if system_url and system_db != "forbidden" else None,
            redis_url=redis_url,
            cors_allowed_origins=cors
            or (() if production else ("http://localhost:8000", "http://127.0.0.1:8000")),
            admin_emails=admins,
            host=get("HOST") or "127.0.0.1",
            port=integer("PORT", 8000),
            public_url=get("PUBLIC_URL"),
            log_level=log_level,
            log_json=log_json,
            rate_limit_auth_per_minute=integer("RATE_LIMIT_AUTH_PER_MINUTE", 60),
            rate_limit_webhooks_per_minute=integer("RATE_LIMIT_WEBHOOKS_PER_MINUTE", 600),
            rate_limit_api_per_minute=integer("RATE_LIMIT_API_PER_MINUTE", 1200),
            login_failures_per_account=integer("LOGIN_FAILURES_PER_ACCOUNT", 10),
            login_failure_window_seconds=integer("LOGIN_FAILURE_WINDOW_SECONDS", 15 * 60),
            session_idle_seconds=integer("SESSION_IDLE_SECONDS", 30 * 60),
            forwarded_allow_ips=csv("FORWARDED_ALLOW_IPS"),
            max_body_bytes=integer("MAX_BODY_BYTES", 10 * 1024 * 1024),
            max_webhook_bytes=integer("MAX_WEBHOOK_BYTES", 1024 * 1024),
            max_import_bytes=integer("MAX_IMPORT_BYTES", 200 * 1024 * 1024),
            import_job_threshold_bytes=integer("IMPORT_JOB_THRESHOLD_BYTES", 2 * 1024 * 1024, minimum=0),
            rate_limit_channel_per_minute=integer("RATE_LIMIT_CHANNEL_PER_MINUTE", 18_000),
            shopify_admin_url=get("SHOPIFY_ADMIN_URL") or "https://{shop}",
            ingress_connections=integer("INGRESS_CONNECTIONS", 4),
            ingress_batch_rows=integer("INGRESS_BATCH_ROWS", 8),
            job_timeout_seconds=integer("JOB_TIMEOUT_SECONDS", 30),
            retention_days=integer("RETENTION_DAYS", 30, minimum=1),
            db_pool_size=integer("DB_POOL_SIZE", 10),
            db_max_overflow=integer("DB_MAX_OVERFLOW", 10, minimum=0),
            db_connect_timeout_seconds=integer("DB_CONNECT_TIMEOUT_SECONDS", 2),
            db_pool_timeout_seconds=integer("DB_POOL_TIMEOUT_SECONDS", 5),
            db_statement_timeout_ms=integer("DB_STATEMENT_TIMEOUT_MS", 5000, minimum=100),
            data_dir=data_dir,
        )
        if problems:
            raise SettingsError(problems)
        return settings

    def with_stack(
        self,
        *,
        database_url: str,
        migration_database_url: str,
        redis_url: str,
        system_database_url: str | None = None,
    ) -> Settings:
        """A copy pointing at a started local stack."""
        from dataclasses import replace

        system = system_database_url or self.system_database_url
        return replace(
            self,
            database_url=_async_url(database_url),
            migration_database_url=_async_url(migration_database_url),
            system_database_url=_async_url(system) if system else None,
            redis_url=redis_url,
        )

    def base_url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"


def _async_url(url: str) -> str:
    """Accept the usual postgres:// spellings and pin the asyncpg driver."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url
