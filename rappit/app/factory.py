"""The application factory and the one init plugin that wires everything."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import cast

import click
import httpx
from arq.connections import ArqRedis
from litestar import Litestar
from litestar.config.app import AppConfig
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.enums import ScopeType
from litestar.handlers import HTTPRouteHandler
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.plugins import CLIPluginProtocol, InitPluginProtocol
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController
from litestar.routes import HTTPRoute
from litestar.stores.redis import RedisStore
from litestar.types import HTTPScope, LifeSpanReceive, LifeSpanScope, LifeSpanSend, Receive, Scope, Send
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from rappit import __version__, dashboard
from rappit.channels import routes as channel_routes
from rappit.channels import webhooks
from rappit.channels.ingest import Ingress
from rappit.integrations.carriers.breaker import BreakerBoard
from rappit.integrations.channels.registry import ChannelRegistry
from rappit.inventory import routes as inventory_routes
from rappit.inventory.combiner import ReservationCombiner
from rappit.ops import routes as ops_routes
from rappit.orders import routes as order_routes
from rappit.platform import health
from rappit.platform.crypto import SecretBox
from rappit.platform.db import assert_rls_binds, make_engine, make_sessionmaker
from rappit.platform.errors import EXCEPTION_HANDLERS, error_responses
from rappit.platform.http import check_json_body
from rappit.platform.logging import RequestIdMiddleware, configure_logging
from rappit.platform.ratelimit import Policy, RateLimitMiddleware, WebhookLimits, channel_of_path, client_ip
from rappit.platform.settings import Settings
from rappit.shipping import ingress as carrier_callbacks
from rappit.shipping import routes as shipping_routes
from rappit.shipping.accounts import Carriers
from rappit.tenancy import routes as tenancy_routes
from rappit.tenancy.auth import AUTH_EXCLUDE, AuthMiddleware, Principal, rate_limit_key
from rappit.tenancy.context import clear_org_context
from rappit.tenancy.scoping import install_scoping
from rappit.tenancy.sessions import SESSION_COOKIE, RotatingSessionConfig
from rappit.workers import dead_letters
from rappit.workers import routes as worker_routes


async def provide_db_session(state: State) -> AsyncIterator[AsyncSession]:
    """One transaction per request: committed after the handler returns and before the response
    is sent (Litestar runs dependency clean-up before sending), rolled back on any error."""
    async with state.sessionmaker() as session, session.begin():
        yield session


def provide_settings(state: State) -> Settings:
    settings: Settings = state.settings
    return settings


class RappitPlugin(InitPluginProtocol, CLIPluginProtocol):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def on_cli_init(self, cli: click.Group) -> None:
        from rappit.app.cli import rappit

        cli.add_command(rappit)

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        settings = self.settings
        if not settings.database_url or not settings.redis_url:
            raise RuntimeError("DATABASE_URL and REDIS_URL are not set: start with `rappit up`, or set both")
        redis = Redis.from_url(settings.redis_url)
        # Enqueueing shares nothing with request handling: a Redis outage only delays jobs.
        arq_redis = ArqRedis.from_url(settings.redis_url, socket_connect_timeout=1, socket_timeout=2)
        app_config.state.update(
            {
                "settings": settings,
                "redis": redis,
                "secret_box": SecretBox(settings.encryption_keys),
                "arq": arq_redis,
                "channels": ChannelRegistry.from_settings(settings),
                "dashboard_jobs": dashboard.JobsPort(
                    count_dead=dead_letters.count_dead,
                    list_dead=dead_letters.list_dead,
                    retry=dead_letters.retry,
                    enqueue_retried=dead_letters.enqueue_retried,
                ),
            }
        )

        async def start(app: Litestar) -> None:
            engine = make_engine(settings)
            if settings.is_production:
                await assert_rls_binds(engine)
            app.state.engine = engine
            app.state.sessionmaker = make_sessionmaker(engine)
            # The hot-SKU combiner writes on its own two connections: the requests waiting for it hold
            # theirs from the request pool, which it must never wait on.
            app.state.combiner_engine = make_engine(settings, pool_size=2, max_overflow=0)
            app.state.reservation_combiner = ReservationCombiner(make_sessionmaker(app.state.combiner_engine))
            # Webhook ingress writes on its own few raw connections, in batches (rappit.channels.ingest).
            app.state.ingress = await Ingress.start(settings, app.state.secret_box)
            # One httpx client (connection pools) and one breaker board per process, for every carrier call.
            app.state.carriers = Carriers(
                http=httpx.AsyncClient(), breakers=BreakerBoard(settings.redis_url), box=app.state.secret_box
            )

        async def stop(app: Litestar) -> None:
            await app.state.ingress.close()
            await app.state.engine.dispose()
            await app.state.combiner_engine.dispose()
            await app.state.carriers.http.aclose()
            app.state.carriers.breakers.close()
            await redis.aclose()
            await arq_redis.aclose()

        app_config.on_startup.append(start)
        app_config.on_shutdown.append(stop)
        app_config.route_handlers.extend(
            [
                *health.ROUTES,
                *tenancy_routes.ROUTES,
                *inventory_routes.ROUTES,
                inventory_routes.import_router(settings),
                *channel_routes.ROUTES,
                *order_routes.ROUTES,
                *shipping_routes.ROUTES,
                *webhooks.ROUTES,
                *carrier_callbacks.ROUTES,
                *worker_routes.ROUTES,
                *ops_routes.ROUTES,
                *dashboard.routes(settings),
                PrometheusController,
            ]
        )
        app_config.template_config = dashboard.template_config()
        app_config.dependencies.update(
            {
                "db_session": Provide(provide_db_session),
                "settings": Provide(provide_settings, sync_to_thread=False),
            }
        )
        app_config.exception_handlers.update(EXCEPTION_HANDLERS)  # type: ignore[arg-type]
        app_config.before_request = check_json_body  # 415 / 400 MALFORMED_JSON for every JSON route
        app_config.stores = {"sessions": RedisStore(redis, namespace="rappit:sessions")}
        session_config = RotatingSessionConfig(
            store="sessions",
            key=SESSION_COOKIE,
            secure=settings.is_production,
            httponly=True,
            samesite="lax",
            max_age=8 * 3600,
            exclude=["^/webhooks/", "^/callbacks/", "^/health", "^/metrics"],
        )
        minute = 60
        policies = [
            Policy("auth", "/auth/", settings.rate_limit_auth_per_minute, minute, client_ip),
            Policy(
                "dashboard_login", "/dashboard/login", settings.rate_limit_auth_per_minute, minute, client_ip
            ),
            # Carrier callbacks: the same per-address limit on refused ones (bad signature, stale,
            # unknown account), so a forged flood stops here before the account look-up.
            Policy(
                "callbacks",
                "/callbacks/",
                settings.rate_limit_webhooks_per_minute,
                minute,
                client_ip,
                counts_only=frozenset({400, 401, 404, 413, 415}),
            ),
            # Before authentication, rejected credentials count per address: keying on the (caller-chosen)
            # Authorization header would give every made-up token a fresh bucket and a database look-up.
            Policy(
                "api_rejected",
                "/api/",
                settings.rate_limit_api_per_minute,
                minute,
                client_ip,
                counts_only=frozenset({401}),
            ),
        ]
        # After authentication, per verified token (or session user), whatever address it comes from.
        api_policy = Policy("api", "/api/", settings.rate_limit_api_per_minute, minute, rate_limit_key)
        # The webhook route decides its own two limits, a batch of deliveries per Redis call
        # (rappit.channels.webhooks): per address only refused deliveries count (bad or missing
        # signature, unknown channel, malformed), so a flash sale from a shop's few addresses is never
        # throttled while an unsigned flood is stopped before the channel look-up; and per channel.
        app_config.state["webhook_limits"] = WebhookLimits(
            lambda: redis,
            refused=Policy(
                "webhooks",
                "/webhooks/",
                settings.rate_limit_webhooks_per_minute,
                minute,
                client_ip,
                counts_only=frozenset({400, 401, 404, 413, 415}),
            ),
            channel=Policy(
                "channel", "/webhooks/", settings.rate_limit_channel_per_minute, minute, channel_of_path
            ),
        )
        prometheus = PrometheusConfig(
            app_name="rappit", prefix="rappit", group_path=True, exclude=["^/metrics"]
        )
        app_config.middleware[:0] = [
            RequestIdMiddleware(on_request=[clear_org_context]),  # nobody's org until auth says whose
            prometheus.middleware,
            RateLimitMiddleware(lambda: redis, policies),
            session_config.middleware,
        ]
        app_config.middleware.append(DefineMiddleware(AuthMiddleware, exclude=AUTH_EXCLUDE))
        app_config.middleware.append(RateLimitMiddleware(lambda: redis, [api_policy]))
        app_config.cors_config = CORSConfig(
            allow_origins=list(settings.cors_allowed_origins),
            allow_credentials=True,
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
        app_config.openapi_config = OpenAPIConfig(title="Rappit API", version=__version__, path="/schema")
        app_config.request_max_body_size = settings.max_body_bytes
        app_config.signature_namespace.update({"Principal": Principal, "AsyncSession": AsyncSession})
        app_config.debug = False
        app_config.logging_config = None  # structlog owns logging (configure_logging)
        return app_config


_UNDOCUMENTED = re.compile("^/(schema|metrics)")
_WRITES = {"POST", "PUT", "PATCH", "DELETE"}


def error_statuses(path: str, handler: HTTPRouteHandler) -> set[int]:
    """The error statuses a route can answer, from what every route shares and what this one has."""
    statuses = {400, 503}
    if path.startswith(("/api/", "/auth/", "/webhooks/", "/callbacks/")):
        statuses.add(429)
    if not any(re.match(pattern, path) for pattern in AUTH_EXCLUDE) and not handler.opt.get(
        "exclude_from_auth"
    ):
        statuses.update({401, 403})
    if "{" in path or path.startswith("/webhooks/"):
        statuses.add(404)
    if path.startswith(("/webhooks/", "/callbacks/", "/auth/")):
        statuses.add(401)  # the signature check; wrong credentials at login
    if handler.http_methods & _WRITES:
        statuses.update({409, 413, 415, 422})
    return statuses


def document_error_responses(app: Litestar) -> None:
    """Describe the error envelope and the statuses each route really answers in the OpenAPI document,
    once for every route (a route's own `responses=` still wins)."""
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or _UNDOCUMENTED.match(route.path):
            continue
        for handler in route.route_handlers:
            path = route.path_format or route.path
            handler.responses = {
                **error_responses(error_statuses(path, handler)),
                **(handler.responses or {}),
            }


class RappitApp(Litestar):
    """Litestar, with webhook deliveries taken before its middleware stack (issue 11): a flash sale's
    hot path pays for what it needs, not for sessions, auth, CORS and generic metrics it never uses
    (`rappit.channels.webhooks.fast_path`; every other request goes through Litestar unchanged)."""

    async def __call__(
        self, scope: Scope | LifeSpanScope, receive: Receive | LifeSpanReceive, send: Send | LifeSpanSend
    ) -> None:
        if scope["type"] == ScopeType.HTTP:
            http = cast("HTTPScope", scope)
            if (
                http["method"] == "POST"
                and http["path"].startswith("/webhooks/")
                and await webhooks.fast_path(self, http, cast("Receive", receive), cast("Send", send))
            ):
                return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None) -> Litestar:
    """Build the API. Reads settings from the environment unless given (fails fast in production)."""
    settings = settings or Settings.from_env(system_db="forbidden")  # the API never holds the system role
    install_scoping()
    configure_logging(settings.log_level, json=settings.log_json)
    app = RappitApp(plugins=[RappitPlugin(settings)])
    document_error_responses(app)
    return app
