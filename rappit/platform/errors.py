"""Domain errors and the one error envelope.

Services raise `DomainError` subclasses; one set of exception handlers turns every error (domain,
HTTP, validation, unexpected) into `{"error": {"code", "message", "details", "request_id"}}`.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
import msgspec.inspect
import structlog
from litestar import Request, Response
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    PermissionDeniedException,
    ValidationException,
)
from litestar.openapi import ResponseSpec
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

log = structlog.get_logger("rappit.errors")


class DomainError(Exception):
    status_code = 422
    code = "UNPROCESSABLE"

    def __init__(
        self, message: str, *, details: dict[str, Any] | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}
        if code:
            self.code = code


class BadRequest(DomainError):
    status_code = 400
    code = "BAD_REQUEST"


class Unauthorized(DomainError):
    status_code = 401
    code = "UNAUTHORIZED"


class Forbidden(DomainError):
    status_code = 403
    code = "FORBIDDEN"


class NotFound(DomainError):
    status_code = 404
    code = "NOT_FOUND"


class Conflict(DomainError):
    status_code = 409
    code = "CONFLICT"


class PayloadTooLarge(DomainError):
    status_code = 413
    code = "PAYLOAD_TOO_LARGE"


class BusinessRuleViolation(DomainError):
    status_code = 422
    code = "UNPROCESSABLE"


def sqlstate_of(exc: BaseException) -> str | None:
    orig = getattr(exc, "orig", None)
    return getattr(orig, "sqlstate", None) or getattr(getattr(orig, "__cause__", None), "sqlstate", None)


def is_unique_violation(exc: BaseException) -> bool:
    return sqlstate_of(exc) == "23505"


class TooManyRequests(DomainError):
    """A limit was reached; `retry_after` seconds until it lifts (sent as Retry-After)."""

    status_code = 429
    code = "RATE_LIMITED"

    def __init__(self, message: str, *, retry_after: int, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details=details)
        self.headers = {"Retry-After": str(max(int(retry_after), 1))}


class UnsupportedMediaType(DomainError):
    status_code = 415
    code = "UNSUPPORTED_MEDIA_TYPE"


class ServiceUnavailable(DomainError):
    status_code = 503
    code = "SERVICE_UNAVAILABLE"


RETRY_AFTER_SECONDS = 5
"""What a 503 tells the caller to wait: a dependency outage is worth one retry soon, not a hammering."""


class DependencyUnavailable(ServiceUnavailable):
    """PostgreSQL or Redis did not answer (in time): the request may be retried as it is."""

    code = "DEPENDENCY_UNAVAILABLE"

    def __init__(self, dependency: str, message: str | None = None) -> None:
        super().__init__(
            message or f"a service this request needs ({dependency}) is unavailable; retry shortly",
            details={"dependency": dependency, "retry_after_seconds": RETRY_AFTER_SECONDS},
        )


HTTP_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "UNPROCESSABLE",
    429: "RATE_LIMITED",
    500: "INTERNAL_ERROR",
    503: "SERVICE_UNAVAILABLE",
}


class ErrorBody(msgspec.Struct):
    code: str
    """Stable, machine-readable: VALIDATION_ERROR, MALFORMED_JSON, NOT_FOUND, INSUFFICIENT_STOCK, ..."""
    message: str
    details: dict[str, Any]
    request_id: str
    """Also in the X-Request-ID header: quote it when reporting a problem."""


class ErrorEnvelope(msgspec.Struct):
    """Every error response, whatever its status."""

    error: ErrorBody


ERROR_DESCRIPTIONS = {
    400: "Bad request: VALIDATION_ERROR (parameters or body), MALFORMED_JSON, or a rule on the input",
    401: "No, invalid, expired or revoked credentials",
    403: "Your role lacks a permission this route needs",
    404: "No such resource in your organization",
    409: "Conflict: it already exists, or the same Idempotency-Key is in flight or was used for another body",
    413: "The body is larger than the limit",
    415: "Unsupported content type (JSON routes take application/json)",
    422: "A business rule refused the change (INSUFFICIENT_STOCK, NUMBER_OUT_OF_RANGE, ...)",
    429: "Rate limited: see Retry-After",
    503: "A dependency (PostgreSQL, Redis) is unavailable or timed out: retry after Retry-After seconds",
}


def error_responses(statuses: set[int]) -> dict[int, ResponseSpec]:
    """OpenAPI descriptions of the envelope for the given statuses (replacing Litestar's own
    `{status_code, detail, extra}`, which this API never sends)."""
    return {
        status: ResponseSpec(
            data_container=ErrorEnvelope, description=ERROR_DESCRIPTIONS[status], generate_examples=False
        )
        for status in sorted(statuses)
    }


def request_id_of(request: Request[Any, Any, Any]) -> str:
    """The id the request-id middleware bound; routing errors (unknown path) happen before it runs."""
    state = request.scope.setdefault("state", {})
    if "request_id" not in state:
        from rappit.platform.logging import accept_request_id

        state["request_id"] = accept_request_id(request.headers.get("x-request-id"))
    return str(state["request_id"])


def envelope(
    request: Request[Any, Any, Any],
    *,
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response[dict[str, Any]]:
    request_id = request_id_of(request)
    body = {"error": {"code": code, "message": message, "details": details or {}, "request_id": request_id}}
    return Response(
        content=body,
        status_code=status,
        headers={**(headers or {}), "x-request-id": request_id},
        media_type="application/json",
    )


def domain_error_handler(request: Request[Any, Any, Any], exc: DomainError) -> Response[dict[str, Any]]:
    headers = getattr(exc, "headers", None)
    if exc.status_code == 503:
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS), **(headers or {})}
    return envelope(
        request,
        status=exc.status_code,
        code=exc.code,
        message=exc.message,
        details=exc.details,
        headers=headers,
    )


def dependency_error_response(
    request: Request[Any, Any, Any], dependency: str, exc: BaseException
) -> Response[dict[str, Any]]:
    """503 DEPENDENCY_UNAVAILABLE with Retry-After for an outage or a timeout; logged, without a trace."""
    log.warning(
        "dependency.unavailable", dependency=dependency, error_type=type(exc).__name__, error=str(exc)
    )
    return domain_error_handler(request, DependencyUnavailable(dependency))


def redis_error_handler(request: Request[Any, Any, Any], exc: RedisError) -> Response[dict[str, Any]]:
    """Redis carries sessions and the login path; it down means 503, not 500. (Bearer tokens, webhooks
    and rate limits do not need it and never get here.)"""
    return dependency_error_response(request, "redis", exc)


_UNKNOWN_FIELD = re.compile(r"^Object contains unknown field")
_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _struct_at(info: msgspec.inspect.Type, key: str) -> msgspec.inspect.StructType | None:
    """The object type at a validation error's `key` (`data`, `lines[0]`, `inner.x`) inside a body type,
    looking through optionals, lists and dicts."""

    def unwrap(t: msgspec.inspect.Type) -> msgspec.inspect.Type:
        while True:
            if isinstance(t, msgspec.inspect.UnionType):
                found = [u for u in t.types if not isinstance(u, msgspec.inspect.NoneType)]
                if len(found) != 1:
                    return t
                t = found[0]
            elif isinstance(t, (msgspec.inspect.ListType, msgspec.inspect.SetType, msgspec.inspect.DictType)):
                t = t.item_type if not isinstance(t, msgspec.inspect.DictType) else t.value_type
            else:
                return t

    current = unwrap(info)
    parts = [name for name, _ in _PATH_PART.findall(key) if name]
    if parts[:1] == ["data"]:
        parts = parts[1:]  # Litestar names the body itself `data`
    for name in parts:
        if not isinstance(current, msgspec.inspect.StructType):
            return None
        field = next((f for f in current.fields if f.encode_name == name), None)
        if field is None:
            return None
        current = unwrap(field.type)
    return current if isinstance(current, msgspec.inspect.StructType) else None


def explain_unknown_fields(request: Request[Any, Any, Any], errors: list[Any]) -> list[Any]:
    """Name the expected fields next to every "unknown field" error, from the route's body type, so a
    wrong guess (`sku` where SKU create takes `code`) tells the caller what to send instead."""
    handler = request.scope.get("route_handler")
    body = getattr(handler, "parsed_fn_signature", None)
    data = body.parameters.get("data") if body is not None else None
    if data is None:
        return errors
    try:
        info = msgspec.inspect.type_info(data.annotation)
    except Exception:  # a body type msgspec cannot describe: leave the errors as they are
        return errors
    explained = []
    for error in errors:
        if isinstance(error, dict) and _UNKNOWN_FIELD.match(str(error.get("message", ""))):
            struct = _struct_at(info, str(error.get("key", "data")))
            if struct is not None:
                expected = [f.encode_name for f in struct.fields]
                required = [f.encode_name for f in struct.fields if f.required]
                hint = f"expected fields: {', '.join(expected)}"
                if required:
                    hint += f" (required: {', '.join(required)})"
                error = {**error, "message": f"{error['message']}; {hint}", "expected": expected}
        explained.append(error)
    return explained


def http_error_handler(request: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    status = exc.status_code
    details: dict[str, Any] = {}
    code = HTTP_CODES.get(status, f"HTTP_{status}")
    message = exc.detail
    if isinstance(exc, ValidationException) or (status == 400 and exc.extra):
        code = "VALIDATION_ERROR"
        if exc.extra:
            details["errors"] = exc.extra
            if isinstance(exc.extra, list) and exc.extra:
                details["errors"] = explain_unknown_fields(request, exc.extra)
                first = details["errors"][0]
                if isinstance(first, dict) and first.get("message") and message:
                    message = f"{message}: {first['message']}"  # the first problem, where people read
    if isinstance(exc, NotAuthorizedException):
        code = "UNAUTHORIZED"
    if isinstance(exc, PermissionDeniedException):
        code = "FORBIDDEN"
    if status >= 500:
        log.error("http.server_error", status=status, detail=exc.detail)
        message = "internal error"
    else:
        message = message or code.replace("_", " ").lower()
    headers = {k: v for k, v in (exc.headers or {}).items()}
    return envelope(request, status=status, code=code, message=message, details=details, headers=headers)


# query_canceled (statement_timeout), lock_not_available (lock_timeout), too_many_connections, the server
# shutting down or starting up; class 08 is every connection exception.
UNAVAILABLE_SQLSTATES = frozenset({"57014", "55P03", "53300", "57P01", "57P02", "57P03"})
_DATABASE_MODULES = ("asyncpg", "sqlalchemy")


def database_unavailable(exc: BaseException) -> bool:
    """PostgreSQL is unreachable, stalled or refused to wait: the request may succeed if retried."""
    if isinstance(exc, PoolTimeout):
        return True
    if isinstance(exc, DBAPIError):
        sqlstate = sqlstate_of(exc) or ""
        cause = getattr(exc.orig, "__cause__", None)
        return (
            exc.connection_invalidated
            or sqlstate in UNAVAILABLE_SQLSTATES
            or sqlstate.startswith("08")
            or isinstance(cause, OSError)
        )
    if isinstance(
        exc, OSError
    ):  # TimeoutError included: raised raw by asyncpg's connect and command timeouts
        tb = exc.__traceback__
        while tb is not None:
            module = tb.tb_frame.f_globals.get("__name__", "")
            if module.split(".")[0] in _DATABASE_MODULES:
                return True
            tb = tb.tb_next
    return False


def database_error_handler(request: Request[Any, Any, Any], exc: DBAPIError) -> Response[dict[str, Any]]:
    """The database said no. Input it cannot store (NUL bytes, numbers out of range) and constraint
    violations that no service turned into a domain error become 4xx, never 500; a database that is
    down, stalled or timed out is a 503 with Retry-After."""
    if database_unavailable(exc):
        return dependency_error_response(request, "postgres", exc)
    orig = getattr(exc, "orig", None)
    sqlstate = getattr(orig, "sqlstate", None) or getattr(getattr(orig, "__cause__", None), "sqlstate", None)
    if sqlstate in ("22021", "22P05"):
        return envelope(
            request,
            status=400,
            code="INVALID_TEXT",
            message="text contains characters that cannot be stored (NUL)",
        )
    if (
        sqlstate == "22003"
        or type(getattr(orig, "__cause__", None)).__name__ == "DataError"
        or "out of int32 range" in str(exc)
    ):
        return envelope(
            request, status=422, code="NUMBER_OUT_OF_RANGE", message="a number is out of the supported range"
        )
    if sqlstate == "23505":
        return envelope(request, status=409, code="CONFLICT", message="that already exists")
    if sqlstate in ("23514", "23503", "23502"):
        return envelope(
            request, status=422, code="CONSTRAINT_VIOLATION", message="the database refused this change"
        )
    return unhandled_error_handler(request, exc)


def os_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """Connection refused, reset or timed out on the way to PostgreSQL (or the pool's wait) is a 503;
    an OS error from anywhere else is a bug like any other."""
    if database_unavailable(exc):
        return dependency_error_response(request, "postgres", exc)
    return unhandled_error_handler(request, exc)


def unhandled_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    log.exception("http.unhandled_exception", error_type=type(exc).__name__)
    return envelope(
        request,
        status=HTTP_500_INTERNAL_SERVER_ERROR,
        code="INTERNAL_ERROR",
        message="internal error; quote the request id when reporting it",
    )


EXCEPTION_HANDLERS = {
    DomainError: domain_error_handler,
    RedisError: redis_error_handler,
    DBAPIError: database_error_handler,
    PoolTimeout: os_error_handler,
    OSError: os_error_handler,
    HTTPException: http_error_handler,
    Exception: unhandled_error_handler,
}
