"""structlog JSON logs with the request id (and org, job) on every line, and the request-id middleware."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from typing import IO, Any

import structlog
from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = "x-request-id"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_SHARED: list[structlog.typing.Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]
_handler: logging.StreamHandler[IO[str]] | None = None
_hot: _HotConfig | None = None
_request_id: ContextVar[str | None] = ContextVar("rappit_request_id", default=None)


def current_request_id() -> str | None:
    """The HTTP request (or the job's originating request) being served; copied onto audit rows."""
    return _request_id.get()


def bind_request_id(request_id: str | None) -> None:
    _request_id.set(request_id)
    if request_id:
        structlog.contextvars.bind_contextvars(request_id=request_id)


def configure_logging(level: str = "INFO", *, json: bool = True, stream: IO[str] | None = None) -> None:
    """Route structlog and stdlib logging (uvicorn, arq, SQLAlchemy) through one formatter: JSON lines,
    or readable console lines for a developer (`json=False`)."""
    global _handler, _hot
    structlog.configure(
        processors=[
            # First: a line below the level costs one check, not the whole chain (the access log and
            # the webhook route's lines run on every request).
            structlog.stdlib.filter_by_level,
            *_SHARED,
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    # Non-ASCII stays as it is (arq logs `→` between a job's id and name; `\u2192` helps nobody).
    renderer: Any = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_SHARED,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    _handler = logging.StreamHandler(stream or sys.stderr)
    _handler.setFormatter(formatter)
    _hot = _HotConfig(logging.getLevelName(level.upper()), _handler, [*_SHARED_HOT, renderer])
    root.addHandler(_handler)
    root.setLevel(level)
    # uvicorn gives its loggers their own plain-text handlers before it loads the app: hand them to the
    # root handler, so one process never mixes two formats.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        own = logging.getLogger(name)
        for handler in list(own.handlers):
            own.removeHandler(handler)
        own.propagate = True
    for noisy in ("uvicorn.access",):
        logging.getLogger(noisy).setLevel(logging.WARNING)


_SHARED_HOT: list[Callable[..., Any]] = [
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


class _HotConfig:
    def __init__(self, level: int, handler: logging.StreamHandler[IO[str]], processors: list[Any]) -> None:
        self.level, self.handler, self.processors = level, handler, processors


class HotLogger:
    """A logger for lines written on every request (the access lines, the webhook route's): the same
    JSON line as every other logger's (event, level, logger, timestamp, the bound context), rendered
    by structlog's processors straight to the configured handler's stream, about 15 us a line. The
    stdlib path (a LogRecord, handler and ProcessorFormatter) costs about 75 us, five times as much.
    Follows `configure_logging` (level, stream, JSON or console) each time it is called."""

    def __init__(self, name: str) -> None:
        self.name = name

    def is_enabled_for(self, level: int) -> bool:
        hot = _hot
        return hot is not None and level >= hot.level

    def info(self, event: str, **fields: Any) -> None:
        self._log(logging.INFO, "info", event, fields)

    def _log(self, level: int, method: str, event: str, fields: dict[str, Any]) -> None:
        hot = _hot
        if hot is None or level < hot.level:
            return
        line: Any = {**fields, "event": event, "logger": self.name}
        for processor in hot.processors:
            line = processor(None, method, line)
        handler = hot.handler
        with handler.lock or contextlib.nullcontext():
            handler.stream.write(f"{line}\n")
            handler.stream.flush()


def accept_request_id(incoming: str | None) -> str:
    """Keep a caller's sane X-Request-ID (so traces join up), else make a new one."""
    if incoming and _VALID_REQUEST_ID.match(incoming):
        return incoming
    return os.urandom(16).hex()


_ACCESS = HotLogger("rappit.access")


class RequestIdMiddleware(ASGIMiddleware):
    """Accept a sane X-Request-ID or make one; echo it; bind it to every log line; log the access.

    `on_request` callables run first on every request: context variables outlive a request on a
    keep-alive connection (one task serves them all), so whatever is request-scoped is reset there.
    """

    scopes = (ScopeType.HTTP,)

    def __init__(self, on_request: Sequence[Callable[[], None]] = ()) -> None:
        self.on_request = tuple(on_request)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        incoming = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        request_id = accept_request_id(incoming)
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.clear_contextvars()
        bind_request_id(request_id)
        for reset in self.on_request:
            reset()
        started = time.perf_counter()
        status_holder = {"status": 500}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                headers = MutableScopeHeaders.from_message(message)
                headers[REQUEST_ID_HEADER] = request_id
            await send(message)

        try:
            await next_app(scope, receive, send_with_id)
        except Exception as exc:
            # Raised errors are turned into responses outside this middleware; log their status.
            status_holder["status"] = getattr(exc, "status_code", 500)
            raise
        finally:
            _ACCESS.info(
                "http.request",
                method=scope.get("method"),
                path=scope["path"],
                status=status_holder["status"],
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
            )
