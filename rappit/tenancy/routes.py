"""Who am I, users, API tokens, dashboard login."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.params import JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from rappit.platform.http import DbSession, Id, Limit, Offset
from rappit.tenancy import service
from rappit.tenancy.auth import Principal, requires
from rappit.tenancy.idempotency import idempotent
from rappit.tenancy.login import sign_in
from rappit.tenancy.permissions import permissions_for
from rappit.tenancy.schemas import IssuedTokenOut, LoginIn, MeOut, TokenIn, TokenOut, UserIn, UserOut


class MeController(Controller):
    path = "/api/v1/me"
    tags = ["tenancy"]

    @get("/", guards=[requires("org:read")])
    async def me(self, request: Request[Principal, Principal, Any]) -> MeOut:
        p = request.user
        return MeOut(
            org_id=p.org_id,
            org_code=p.org_code,
            role=p.role,
            permissions=sorted(p.permissions),
            actor=p.actor.describe(),
        )


class UserController(Controller):
    path = "/api/v1/users"
    tags = ["tenancy"]

    @get("/", guards=[requires("users:manage")])
    async def list_users(self, db_session: DbSession, limit: Limit = 50, offset: Offset = 0) -> list[UserOut]:
        return [UserOut.of(u) for u in await service.list_users(db_session, limit=limit, offset=offset)]

    @get("/{user_id:uuid}", guards=[requires("users:manage")])
    async def get_user(self, db_session: DbSession, user_id: Id) -> UserOut:
        return UserOut.of(await service.get_user(db_session, user_id))

    @post("/", guards=[requires("users:manage")], status_code=HTTP_201_CREATED)
    async def add_user(
        self, request: Request[Principal, Principal, Any], db_session: DbSession, data: JSONBody[UserIn]
    ) -> Response[Any]:
        async def op() -> UserOut:
            user = await service.add_user(
                db_session,
                email=data.email,
                role=data.role,
                password=data.password,
                granter_role=request.user.role,
            )
            return UserOut.of(user)

        return await idempotent(request, db_session, op)


class TokenController(Controller):
    path = "/api/v1/tokens"
    tags = ["tenancy"]

    @get("/", guards=[requires("tokens:manage")])
    async def list_tokens(
        self, db_session: DbSession, limit: Limit = 50, offset: Offset = 0
    ) -> list[TokenOut]:
        return [TokenOut.of(t) for t in await service.list_tokens(db_session, limit=limit, offset=offset)]

    @post("/", guards=[requires("tokens:manage")], status_code=HTTP_201_CREATED)
    async def create_token(  # no Idempotency-Key: its stored response would hold the plaintext token
        self, request: Request[Principal, Principal, Any], db_session: DbSession, data: JSONBody[TokenIn]
    ) -> IssuedTokenOut:
        issued = await service.create_token(
            db_session,
            name=data.name,
            role=data.role,
            user_id=request.user.user_id,
            expires_at=data.expires_at,
            granter_role=request.user.role,
        )
        return IssuedTokenOut(token=issued.plaintext, details=TokenOut.of(issued.token))

    @post("/{token_id:uuid}/revoke", guards=[requires("tokens:manage")], status_code=HTTP_200_OK)
    async def revoke_token(
        self, request: Request[Any, Any, Any], db_session: DbSession, token_id: Id
    ) -> Response[Any]:
        async def op() -> TokenOut:
            return TokenOut.of(
                await service.revoke_token(db_session, token_id, revoker_role=request.user.role)
            )

        return await idempotent(request, db_session, op, status_code=HTTP_200_OK)


class AuthController(Controller):
    """Dashboard sign-in: a server-side session (in Redis) behind an HttpOnly cookie."""

    path = "/auth"
    tags = ["auth"]

    @post("/login", status_code=HTTP_200_OK)
    async def login(
        self, request: Request[Any, Any, Any], db_session: DbSession, data: JSONBody[LoginIn]
    ) -> MeOut:
        who = await sign_in(
            request, db_session, org_code=data.org_code, email=data.email, password=data.password
        )
        return MeOut(
            org_id=who.org_id,
            org_code=who.org_code,
            role=who.role,
            permissions=sorted(permissions_for(who.role)),
            actor=f"user:{who.user_id}",
        )

    @post("/logout", status_code=HTTP_200_OK)
    async def logout(self, request: Request[Any, Any, Any]) -> dict[str, bool]:
        request.clear_session()
        return {"logged_out": True}


ROUTES = [MeController, UserController, TokenController, AuthController]
