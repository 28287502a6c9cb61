"""Organizations, users and API tokens, and the mixin every tenant table shares."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    PrimaryKeyConstraint,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

from rappit.platform.db import Base, IdMixin, TimestampMixin

ROLES = ("owner", "admin", "staff", "viewer")


class TenantMixin:
    """Every tenant table: an `org_id`, and the primary key `(org_id, id)`.

    Row-level security and the scoping hook key on `org_id`; the primary key, every unique
    constraint and every foreign key between tenant tables include it, which is what sharding by
    organization (Citus, distribution column `org_id`) requires. The ORM identity stays `id` alone, so
    `session.get(Model, id)` works; flushes still address rows by the table key `(org_id, id)`.
    `tests/platform/test_catalog.py` checks the migrated database against these rules.
    """

    __org_fk__ = True
    """False where a NOT NULL org-qualified FK to a parent tenant row already proves the org exists:
    a second, direct FK to organizations would only add a check (and a row lock) per insert."""

    @declared_attr
    def org_id(cls) -> Mapped[uuid.UUID]:
        if not cls.__org_fk__:
            return mapped_column(primary_key=True)
        return mapped_column(ForeignKey("organizations.id", ondelete="RESTRICT"), primary_key=True)

    @declared_attr.directive
    def __table_args__(cls) -> tuple[Any, ...]:
        return (PrimaryKeyConstraint("org_id", "id"), *getattr(cls, "__extra_table_args__", ()))

    @declared_attr.directive
    def __mapper_args__(cls) -> dict[str, Any]:
        return {"primary_key": [cls.__table__.c.id]}  # type: ignore[attr-defined]


def org_fk(column: str, target: str, *, ondelete: str | None = None) -> ForeignKeyConstraint:
    """A foreign key that includes org_id, so a row can never point into another org (and, on Citus,
    stays inside one shard): it references the target's primary key (org_id, id)."""
    return ForeignKeyConstraint(["org_id", column], [f"{target}.org_id", f"{target}.id"], ondelete=ondelete)


class Organization(IdMixin, TimestampMixin, Base):
    """A merchant. Its own row is visible under RLS only to itself."""

    __tablename__ = "organizations"
    __table_args__ = (CheckConstraint("code ~ '^[A-Z][A-Z0-9]{1,9}$'", name="code_format"),)

    code: Mapped[str] = mapped_column(String(10), unique=True)
    """Short uppercase code, the prefix of the org's order numbers."""
    name: Mapped[str] = mapped_column(String(200))


class User(IdMixin, TimestampMixin, TenantMixin, Base):
    __tablename__ = "users"
    __extra_table_args__ = (
        UniqueConstraint("org_id", "email"),
        # Session auth finds the user by id before the org is known (rappit_auth_user).
        Index("ix_users_id", "id"),
        CheckConstraint("role in ('owner','admin','staff','viewer')", name="role_known"),
        CheckConstraint("email = lower(email)", name="email_lowercase"),
    )

    email: Mapped[str] = mapped_column(String(320))
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    is_active: Mapped[bool] = mapped_column(default=True)


class ApiToken(IdMixin, TimestampMixin, TenantMixin, Base):
    """Only the SHA-256 of the token is stored; the token itself is shown once."""

    __tablename__ = "api_tokens"
    __extra_table_args__ = (
        # Unique per org, as a distributed table allows; the lookup (rappit_auth_token) happens before
        # the org is known, by this index. A token is 256 random bits from `secrets`, so two orgs
        # never share a hash; a global UNIQUE would only ever guard against a broken RNG.
        UniqueConstraint("org_id", "token_hash"),
        Index("ix_api_tokens_token_hash", "token_hash"),
        org_fk("user_id", "users"),
        CheckConstraint("role in ('owner','admin','staff','viewer')", name="role_known"),
    )

    user_id: Mapped[uuid.UUID | None] = mapped_column()
    name: Mapped[str] = mapped_column(String(200))
    token_hash: Mapped[str] = mapped_column(String(64))
    prefix: Mapped[str] = mapped_column(String(16))
    """The first characters of the token, to tell tokens apart in listings."""
    role: Mapped[str] = mapped_column(String(20))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
