"""Organizations, users and API tokens, and the mixin every tenant table shares."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, DateTime, ForeignKey, ForeignKeyConstraint, String, UniqueConstraint
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

from rappit.platform.db import Base, IdMixin, TimestampMixin

ROLES = ("owner", "admin", "staff", "viewer")


class TenantMixin:
    """Every tenant table: an `org_id`, a UNIQUE (org_id, id) for org-qualified foreign keys.

    Row-level security and the scoping hook key on `org_id`; every other unique constraint of a
    tenant table starts with it, which is what sharding by organization needs later.
    """

    __org_fk__ = True
    """False where a NOT NULL org-qualified FK to a parent tenant row already proves the org exists:
    a second, direct FK to organizations would only add a check (and a row lock) per insert."""
    __org_unique__ = True
    """False for append-only tables that no foreign key points at (the ledger)."""

    @declared_attr
    def org_id(cls) -> Mapped[uuid.UUID]:
        if not cls.__org_fk__:
            return mapped_column(nullable=False)
        return mapped_column(ForeignKey("organizations.id", ondelete="RESTRICT"), nullable=False)

    @declared_attr.directive
    def __table_args__(cls) -> tuple:
        own = (UniqueConstraint("org_id", "id"),) if cls.__org_unique__ else ()
        return (*own, *getattr(cls, "__extra_table_args__", ()))


def org_fk(column: str, target: str, *, ondelete: str | None = None) -> ForeignKeyConstraint:
    """A foreign key that includes org_id, so a row can never point into another org."""
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
        # Global: the lookup happens before the org is known. 256 random bits make collisions moot.
        UniqueConstraint("token_hash"),
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
