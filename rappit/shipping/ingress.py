"""Carrier callback ingress: `POST /callbacks/carriers/{carrier}/{account_id}`.

Checked in this order, each refusal storing nothing: a carrier we know (404), a body within the limit
(413), an account with that id and that carrier (404, found by a narrow definer look-up before any org
is known), the signature over "<timestamp>.<raw body>" with the account's callback secret (401) and a
timestamp within 5 minutes (401), a parsable event (400). Then the callback is stored for the account's
org and the 200 goes out only after the request's transaction commits; the job is enqueued after that,
as a background task (the sweeper enqueues it later if Redis is down). A duplicate event id answers 200
and stores nothing. A disabled account still receives callbacks: labels it bought are still moving.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import structlog
from litestar import Request, Response, post
from litestar.background_tasks import BackgroundTask
from litestar.datastructures import State
from litestar.params import PathParameter
from prometheus_client import Counter
from sqlalchemy import Row

from rappit.integrations.carriers.base import CallbackRefused
from rappit.integrations.carriers.registry import CARRIER_NAMES, parse_callback
from rappit.platform.crypto import InvalidToken
from rappit.platform.db import utcnow
from rappit.platform.errors import BadRequest, NotFound, PayloadTooLarge, Unauthorized
from rappit.platform.http import DbSession, Id
from rappit.platform.logging import current_request_id
from rappit.shipping import callbacks
from rappit.tenancy.context import Actor, set_org_context

log = structlog.get_logger("rappit.callbacks")
ACCEPTED = Counter(
    "rappit_carrier_callbacks_accepted_total", "Verified carrier callbacks", ["carrier", "duplicate"]
)
REJECTED = Counter(
    "rappit_carrier_callbacks_rejected_total", "Refused carrier callbacks", ["carrier", "reason"]
)
NO_ACCOUNT = "no carrier account of this carrier here"


async def _account(state: State, carrier: str, account_id: uuid.UUID) -> Row[Any]:
    row = await callbacks.callback_target(state.engine, account_id)
    if row is None or row.carrier != carrier:
        REJECTED.labels(carrier, "unknown_account").inc()
        log.info("carrier_callback.rejected", reason="unknown_account", account_id=str(account_id))
        raise NotFound(NO_ACCOUNT, code="CARRIER_ACCOUNT_NOT_FOUND")
    return row


@post(
    "/callbacks/carriers/{carrier:str}/{account_id:uuid}",
    exclude_from_auth=True,
    status_code=200,
    tags=["callbacks"],
)
async def receive_carrier_callback(
    request: Request[Any, Any, Any],
    state: State,
    db_session: DbSession,
    carrier: Annotated[str, PathParameter(description=" | ".join(CARRIER_NAMES))],
    account_id: Id,
) -> Response[Any]:
    if carrier not in CARRIER_NAMES:
        raise NotFound(NO_ACCOUNT, code="CARRIER_ACCOUNT_NOT_FOUND")
    body = await request.body()
    limit = state.settings.max_webhook_bytes
    if len(body) > limit:
        REJECTED.labels(carrier, "too_large").inc()
        raise PayloadTooLarge(f"callback bodies are limited to {limit} bytes", details={"limit": limit})
    row = await _account(state, carrier, account_id)
    structlog.contextvars.bind_contextvars(org_id=str(row.org_id), carrier_account_id=str(account_id))
    try:
        secret = state.secret_box.decrypt(row.callback_secret)
    except InvalidToken:  # a key was dropped from ENCRYPTION_KEY too early
        log.error("carrier_callback.secret_undecryptable")
        raise Unauthorized("signature cannot be checked", code="SIGNATURE_INVALID") from None
    try:
        event = parse_callback(carrier, request.headers, body, secret, now=utcnow())
    except CallbackRefused as refused:
        REJECTED.labels(carrier, refused.code.lower()).inc()
        log.warning("carrier_callback.rejected", reason=refused.code)
        error = Unauthorized if refused.status == 401 else BadRequest
        raise error(refused.message, code=refused.code) from None
    set_org_context(row.org_id, Actor(kind="carrier", id=str(account_id)))
    event_id = await callbacks.record(db_session, account_id, carrier, event, body)
    ACCEPTED.labels(carrier, str(event_id is None).lower()).inc()
    if event_id is None:
        log.info("carrier_callback.duplicate", carrier_event_id=event.event_id)
        return Response({"status": "duplicate"}, status_code=200)
    log.info("carrier_callback.accepted", event_id=str(event_id), tracking_status=event.status.value)
    return Response(
        {"status": "accepted", "event_id": str(event_id)},
        status_code=200,
        background=BackgroundTask(
            callbacks.try_enqueue, state.arq, row.org_id, event_id, current_request_id()
        ),
    )


ROUTES = [receive_carrier_callback]
