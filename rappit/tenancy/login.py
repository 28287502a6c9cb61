"""Signing in to a server-side session: one path for `POST /auth/login` and the dashboard's form."""

from __future__ import annotations

import hashlib
import time
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from rappit.platform.errors import TooManyRequests, Unauthorized
from rappit.platform.ratelimit import FailureLimit
from rappit.tenancy import service
from rappit.tenancy.sessions import start_new_session

SEEN_KEY = "seen"
"""The session's last use (epoch seconds): the idle timeout counts from it."""


async def sign_in(
    request: Any, session: AsyncSession, *, org_code: str, email: str, password: str
) -> service.SignedIn:
    """Check the password (limited per account, whatever address the guesses come from) and start a
    new session under a fresh id."""
    # Per account (org code + e-mail), from any address: the per-IP limit alone is dodged by
    # spreading guesses over many addresses. Counted whether or not the account exists.
    settings = request.app.state.settings
    limit = FailureLimit(
        "login_failures", settings.login_failures_per_account, settings.login_failure_window_seconds
    )
    account = f"{org_code.upper()}\0{email.strip().lower()}"
    ident = hashlib.sha256(account.encode()).hexdigest()[:32]
    redis = request.app.state.redis
    slot, wait = await limit.attempt(redis, ident)
    if wait:
        raise TooManyRequests(
            f"too many failed logins for this account; retry in {wait} s",
            retry_after=wait,
            details={"limit": limit.limit, "window_seconds": limit.window_seconds, "policy": limit.name},
        )
    try:
        who = await service.authenticate(session, org_code=org_code, email=email, password=password)
    except Unauthorized:
        raise  # a failure: the slot stays taken
    except BaseException:
        await limit.give_back(redis, slot)  # not a wrong password (database down...): not counted
        raise
    await limit.give_back(redis, slot)
    await start_new_session(request, {"user_id": str(who.user_id), SEEN_KEY: int(time.time())})
    return who
