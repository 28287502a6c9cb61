"""Shapes at the HTTP edge for organizations, users and tokens."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import msgspec

from rappit.tenancy.models import ApiToken, User

Role = Annotated[str, msgspec.Meta(pattern="^(owner|admin|staff|viewer)$")]


class MeOut(msgspec.Struct):
    org_id: uuid.UUID
    org_code: str
    role: str
    permissions: list[str]
    actor: str


class UserIn(msgspec.Struct, forbid_unknown_fields=True):
    email: Annotated[str, msgspec.Meta(min_length=3, max_length=320)]
    role: Role
    password: Annotated[str, msgspec.Meta(min_length=12, max_length=200)] | None = None


class UserOut(msgspec.Struct):
    id: uuid.UUID
    email: str
    role: str
    is_active: bool
    created_at: datetime

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(
            id=user.id, email=user.email, role=user.role, is_active=user.is_active, created_at=user.created_at
        )


class TokenIn(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    role: Role
    expires_at: datetime | None = None


class TokenOut(msgspec.Struct):
    id: uuid.UUID
    name: str
    prefix: str
    role: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, token: ApiToken) -> TokenOut:
        return cls(
            id=token.id,
            name=token.name,
            prefix=token.prefix,
            role=token.role,
            created_at=token.created_at,
            expires_at=token.expires_at,
            revoked_at=token.revoked_at,
        )


class IssuedTokenOut(msgspec.Struct):
    token: str
    """Shown once; only its hash is stored."""
    details: TokenOut


class LoginIn(msgspec.Struct, forbid_unknown_fields=True):
    org_code: Annotated[str, msgspec.Meta(min_length=2, max_length=10)]
    email: Annotated[str, msgspec.Meta(min_length=3, max_length=320)]
    password: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
