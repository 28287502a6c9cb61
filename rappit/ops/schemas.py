"""Shapes at the HTTP edge for `GET /api/v1/admin/verify`."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec

from rappit.ops.verify import Finding, Report


class FindingOut(msgspec.Struct):
    check: str
    message: str
    rows: dict[str, Any]
    expected: dict[str, Any]
    found: dict[str, Any]

    @classmethod
    def of(cls, f: Finding) -> FindingOut:
        return cls(check=f.check, message=f.message, rows=f.rows, expected=f.expected, found=f.found)


class VerifyOut(msgspec.Struct):
    org_id: uuid.UUID
    org_code: str
    clean: bool
    checks: list[str]
    not_checked: dict[str, str]
    findings: list[FindingOut]

    @classmethod
    def of(cls, r: Report) -> VerifyOut:
        return cls(
            org_id=r.org_id,
            org_code=r.org_code,
            clean=r.clean,
            checks=list(r.checks),
            not_checked=r.not_checked,
            findings=[FindingOut.of(f) for f in r.findings],
        )
