"""Roles and what they may do. One table, read by the guards."""

from __future__ import annotations

READ = frozenset(
    {"org:read", "inventory:read", "orders:read", "channels:read", "shipments:read", "jobs:read"}
)
STAFF = READ | {"inventory:write", "orders:write", "shipments:create"}
ADMIN = STAFF | {
    "users:manage",
    "tokens:manage",
    "channels:manage",
    "carriers:manage",
    "shipments:void",
    "jobs:retry",
}
OWNER = ADMIN | {"org:manage", "org:verify"}  # org:verify: `GET /api/v1/admin/verify`

ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "owner": frozenset(OWNER),
    "admin": frozenset(ADMIN),
    "staff": frozenset(STAFF),
    "viewer": READ,
}
ALL_PERMISSIONS = frozenset(OWNER)
ROLE_RANK = {"viewer": 0, "staff": 1, "admin": 2, "owner": 3}


def permissions_for(role: str) -> frozenset[str]:
    return ROLE_PERMISSIONS.get(role, frozenset())


def can_grant(granter_role: str, role: str) -> bool:
    """Nobody hands out more than they have."""
    return ROLE_RANK.get(role, 99) <= ROLE_RANK.get(granter_role, -1)
