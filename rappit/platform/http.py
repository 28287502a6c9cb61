"""Type aliases shared by every controller (explicit Litestar markers; inference is deprecated)."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import datetime
from typing import Annotated, Any

from litestar import Request
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.exceptions import SerializationException
from litestar.handlers import HTTPRouteHandler
from litestar.params import BodyKwarg, PathParameter, QueryParameter
from sqlalchemy.ext.asyncio import AsyncSession

from rappit.platform.errors import BadRequest, UnsupportedMediaType

DbSession = NamedDependency[AsyncSession]
"""The request's session, inside the request's one transaction."""
INT64_MAX = 2**63 - 1
"""PostgreSQL's bigint: a larger offset or id is the caller's mistake (400), not the database's (422)."""
Limit = Annotated[int, QueryParameter(ge=1, le=200, description="page size")]
Offset = Annotated[int, QueryParameter(ge=0, le=INT64_MAX, description="rows to skip")]
Id = Annotated[uuid.UUID, PathParameter()]
OptionalOffset = Annotated[
    int | None,
    QueryParameter(
        ge=0, le=INT64_MAX, description="rows to skip (offset paging, with a total; prefer cursor)"
    ),
]
Cursor = Annotated[
    str | None,
    QueryParameter(max_length=500, description="next_cursor of the previous page (keyset paging)"),
]


def encode_cursor(*values: object) -> str:
    """An opaque page cursor: the sort key of the last row sent (base64url of JSON)."""
    raw = json.dumps([v.isoformat() if isinstance(v, datetime) else str(v) for v in values])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, *types: type) -> tuple[Any, ...]:
    """The sort key back from `encode_cursor`, each value converted by its type; a cursor that is not one
    of ours is a 400 INVALID_CURSOR."""
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(values, list) or len(values) != len(types):
            raise ValueError("wrong shape")
        out = []
        for value, kind in zip(values, types, strict=True):
            if kind is datetime:
                parsed = datetime.fromisoformat(value)
                if parsed.tzinfo is None:
                    raise ValueError("naive time")
                out.append(parsed)
            else:
                out.append(kind(value))
        return tuple(out)
    except (ValueError, TypeError, UnicodeDecodeError, binascii.Error) as exc:
        raise BadRequest("cursor is not a next_cursor this API returned", code="INVALID_CURSOR") from exc


def paging(offset: int | None, cursor: str | None) -> None:
    if offset is not None and cursor is not None:
        raise BadRequest("use either offset or cursor, not both", code="INVALID_PAGING")


def is_json_media_type(media_type: str) -> bool:
    media_type = media_type.lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


async def json_body(request: Request[Any, Any, Any]) -> Any:
    """The request body decoded as JSON (cached on the request), or 400 MALFORMED_JSON.

    msgspec raises more than `DecodeError` on hostile input: `UnicodeDecodeError` for invalid UTF-8 in a
    string and `RecursionError` for deep nesting; Litestar turns only the first into a client error."""
    try:
        return await request.json()
    except SerializationException as exc:
        reason = str(exc)
    except UnicodeDecodeError:
        reason = "it is not UTF-8"
    except RecursionError:
        reason = "it is nested too deeply"
    except ValueError as exc:
        reason = str(exc)
    raise BadRequest(f"request body is not valid JSON: {reason}", code="MALFORMED_JSON")


_TAKES_JSON: dict[int, bool] = {}


def takes_json(handler: HTTPRouteHandler) -> bool:
    """Whether the handler's `data` is a JSON body (Litestar's default for `data`)."""
    key = id(handler)
    if key not in _TAKES_JSON:
        field = handler.parsed_fn_signature.parameters.get("data")
        kwarg = field.kwarg_definition if field is not None else None
        _TAKES_JSON[key] = field is not None and (
            not isinstance(kwarg, BodyKwarg) or kwarg.media_type == RequestEncodingType.JSON
        )
    return _TAKES_JSON[key]


async def check_json_body(request: Request[Any, Any, Any]) -> None:
    """App-wide `before_request`: a route that takes a JSON body gets JSON or a 4xx envelope.

    Runs after authentication and guards and before the body is bound to the handler's `data`, so every
    JSON route refuses other content types (415) and malformed bodies (400) the same way."""
    if not takes_json(request.route_handler):
        return
    body = await request.body()
    media_type = request.content_type[0]
    if not body and not media_type:
        return  # no body at all: the missing `data` is a validation error
    if not is_json_media_type(media_type):
        raise UnsupportedMediaType(
            "this route takes application/json",
            details={"content_type": media_type or None, "accepted": ["application/json"]},
        )
    await json_body(request)
