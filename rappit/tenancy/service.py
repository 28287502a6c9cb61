"""Organizations, users and tokens: the only code that writes them."""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from rappit.platform.db import add_unique, get_or_404, utcnow
from rappit.platform.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    Unauthorized,
    is_unique_violation,
)
from rappit.tenancy.context import Actor, org_context
from rappit.tenancy.models import ROLES, ApiToken, Organization, User
from rappit.tenancy.permissions import can_grant

TOKEN_PREFIX = "rpt_"
_hasher = PasswordHasher()
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_ORG_CODE = re.compile(r"^[A-Z][A-Z0-9]{1,9}$")


def hash_token(token: str) -> str:
    """Tokens carry 256 random bits, so a plain SHA-256 is enough (no salt or slow hash needed)."""
    return hashlib.sha256(token.encode()).hexdigest()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


# A hash of a random password: login of an unknown e-mail still spends one argon2 verification,
# so response time does not reveal which addresses exist.
DUMMY_PASSWORD_HASH = _hasher.hash(secrets.token_urlsafe(16))


def normalize_email(email: str) -> str:
    email = email.strip().lower()
    if not _EMAIL.match(email) or len(email) > 320:
        raise BadRequest(f"{email!r} is not an e-mail address", code="INVALID_EMAIL")
    return email


def a_or_an(word: str) -> str:
    """`an owner`, `an admin`, `a viewer`: messages read as English."""
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise BadRequest(f"unknown role {role!r}", code="INVALID_ROLE", details={"roles": list(ROLES)})
    return role


def _check_password(password: str) -> str:
    if len(password) < 12:
        raise BadRequest("passwords need at least 12 characters", code="WEAK_PASSWORD")
    return password


def code_from_name(name: str) -> str:
    letters = re.sub(r"[^A-Z0-9]", "", name.upper())
    letters = letters.lstrip("0123456789")
    return (letters[:6] or "ORG").ljust(2, "X")


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: ApiToken
    plaintext: str


@dataclass(frozen=True, slots=True)
class NewOrganization:
    org: Organization
    owner: User
    token: IssuedToken
    password: str | None


async def create_organization(
    session: AsyncSession,
    *,
    name: str,
    admin_email: str,
    code: str | None = None,
    password: str | None = None,
) -> NewOrganization:
    """A new tenant with its owner and a first API token, in the caller's transaction.

    The org id is chosen here and put in context before the first write, so row-level security
    accepts the new rows without any bypass.
    """
    name = name.strip()
    if not name:
        raise BadRequest("organization name is required", code="INVALID_NAME")
    code = (code or code_from_name(name)).upper()
    if not _ORG_CODE.match(code):
        raise BadRequest(
            "organization code must be 2-10 characters, A-Z and 0-9, starting with a letter",
            code="INVALID_ORG_CODE",
        )
    org_id = uuid.uuid4()
    with org_context(org_id, Actor(kind="system", label="onboarding")):
        from rappit.tenancy.scoping import set_transaction_org

        await set_transaction_org(session, org_id)
        org = Organization(id=org_id, code=code, name=name)
        session.add(org)
        try:
            await session.flush()
        except IntegrityError as exc:
            if not is_unique_violation(exc):
                raise
            raise Conflict(
                f"organization code {code} is taken; choose another with --code", code="ORG_CODE_TAKEN"
            ) from exc
        owner = await add_user(session, email=admin_email, role="owner", password=password)
        token = await create_token(session, name="bootstrap", role="owner", user_id=owner.id)
    return NewOrganization(org=org, owner=owner, token=token, password=password)


async def add_user(
    session: AsyncSession, *, email: str, role: str, password: str | None = None, granter_role: str = "owner"
) -> User:
    email = normalize_email(email)
    _check_role(role)
    if not can_grant(granter_role, role):
        raise Forbidden(f"{a_or_an(granter_role)} cannot create {a_or_an(role)}", code="ROLE_TOO_HIGH")
    # Without a password the account can only log in after a reset; store an unusable hash.
    # argon2 is slow on purpose: hash in a thread so the event loop keeps serving.
    pw_hash = (
        await asyncio.to_thread(hash_password, _check_password(password))
        if password
        else "!" + secrets.token_hex(16)
    )
    user = User(email=email, role=role, password_hash=pw_hash)
    await add_unique(
        session, user, Conflict(f"{email} is already a user of this organization", code="USER_EXISTS")
    )
    return user


async def reset_password(session: AsyncSession, *, email: str, password: str) -> User:
    """Set a user's password (of the org in context): the way back in for an owner who lost the one
    printed at onboarding. Hashed with argon2 in a thread, like every other password."""
    email = normalize_email(email)
    user = (await session.execute(select(User).where(User.email == email))).scalar_one_or_none()
    if user is None:
        raise NotFound(f"no user {email} in this organization", code="USER_NOT_FOUND")
    user.password_hash = await asyncio.to_thread(hash_password, _check_password(password))
    await session.flush()
    return user


async def create_token(
    session: AsyncSession,
    *,
    name: str,
    role: str,
    user_id: uuid.UUID | None = None,
    expires_at: datetime | None = None,
    granter_role: str = "owner",
) -> IssuedToken:
    _check_role(role)
    if not can_grant(granter_role, role):
        raise Forbidden(f"{a_or_an(granter_role)} cannot issue {a_or_an(role)} token", code="ROLE_TOO_HIGH")
    if not name.strip():
        raise BadRequest("token name is required", code="INVALID_NAME")
    if expires_at is not None:
        if expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=UTC)  # an offset-less time is read as UTC
        if expires_at <= utcnow():
            raise BadRequest(
                f"expires_at {expires_at.isoformat()} is not in the future",
                code="INVALID_EXPIRY",
                details={"expires_at": expires_at.isoformat()},
            )
    plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(
        name=name.strip(),
        role=role,
        user_id=user_id,
        token_hash=hash_token(plaintext),
        prefix=plaintext[:10],
        expires_at=expires_at,
    )
    session.add(token)
    await session.flush()
    return IssuedToken(token=token, plaintext=plaintext)


async def revoke_token(
    session: AsyncSession, token_id: uuid.UUID, *, revoker_role: str = "owner"
) -> ApiToken:
    token = await get_or_404(session, ApiToken, token_id, "token")
    if not can_grant(revoker_role, token.role):
        raise Forbidden(
            f"{a_or_an(revoker_role)} cannot revoke {a_or_an(token.role)} token", code="ROLE_TOO_HIGH"
        )
    if token.revoked_at is None:
        token.revoked_at = utcnow()
    return token


async def get_user(session: AsyncSession, user_id: uuid.UUID) -> User:
    return await get_or_404(session, User, user_id, "user")


async def list_users(session: AsyncSession, *, limit: int, offset: int) -> list[User]:
    rows = await session.execute(select(User).order_by(User.created_at, User.id).limit(limit).offset(offset))
    return list(rows.scalars())


async def list_tokens(session: AsyncSession, *, limit: int, offset: int) -> list[ApiToken]:
    rows = await session.execute(
        select(ApiToken).order_by(ApiToken.created_at, ApiToken.id).limit(limit).offset(offset)
    )
    return list(rows.scalars())


async def get_org_by_code(session: AsyncSession, code: str) -> tuple[uuid.UUID, str]:
    """Platform-admin lookup (CLI): goes through a definer function, not a bypass of every table."""
    row = (
        await session.execute(text("select id, code from rappit_org_by_code(:c)"), {"c": code.upper()})
    ).first()
    if row is None:
        raise NotFound(f"no organization with code {code.upper()}", code="ORG_NOT_FOUND")
    return row[0], row[1]


async def org_code(session: AsyncSession, org_id: uuid.UUID) -> str:
    """The code of the org in context (row-level security shows an org its own row only)."""
    return (await session.execute(select(Organization.code).where(Organization.id == org_id))).scalar_one()


@dataclass(frozen=True, slots=True)
class SignedIn:
    user_id: uuid.UUID
    org_id: uuid.UUID
    org_code: str
    role: str


async def authenticate(session: AsyncSession, *, org_code: str, email: str, password: str) -> SignedIn:
    """Dashboard sign-in: org code, e-mail and password, checked through a narrow definer function
    (the org is not known before). The same work and the same answer whichever part is wrong."""
    row = (
        await session.execute(
            text(
                "select user_id, org_id, org_code, role, password_hash, is_active from "
                "rappit_auth_login(:o, :e)"
            ),
            {"o": org_code.upper(), "e": email.strip().lower()},
        )
    ).first()
    # argon2 is deliberately slow (tens of ms): off the event loop, so other requests keep flowing.
    ok = await asyncio.to_thread(verify_password, row.password_hash if row else DUMMY_PASSWORD_HASH, password)
    if row is None or not ok or not row.is_active:
        raise Unauthorized("wrong organization, e-mail or password", code="INVALID_CREDENTIALS")
    return SignedIn(user_id=row.user_id, org_id=row.org_id, org_code=row.org_code, role=row.role)
