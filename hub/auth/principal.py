"""Who is calling: the one organization and role every authenticated request resolves to."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from hub.errors import Forbidden

__all__ = ["Principal", "PrincipalKind", "Role"]

PrincipalKind = Literal["user", "api_key", "device"]


class Role(StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"
    VIEWER = "viewer"
    DEVICE = "device"

    @property
    def rank(self) -> int:
        return _RANK[self]


# viewer < operator < admin; a device key is its own role and passes none of these.
_RANK = {Role.DEVICE: 0, Role.VIEWER: 1, Role.OPERATOR: 2, Role.ADMIN: 3}
PERSON_ROLES = (Role.ADMIN, Role.OPERATOR, Role.VIEWER)


@dataclass(frozen=True, slots=True)
class Principal:
    kind: PrincipalKind
    id: str
    org_id: str
    role: Role
    # For a device key: the one device it speaks for.
    device_id: str | None = None
    # For a user's JWT: when it expires (Unix seconds); a dashboard authenticated with it is closed then.
    expires_at: int | None = None

    def require(self, role: Role) -> None:
        """Raise 403 unless this principal's role is ``role`` or above (devices never qualify)."""
        if self.kind == "device" or self.role.rank < role.rank:
            raise Forbidden(f"this needs the {role.value} role; yours is {self.role.value}")

    @property
    def rate_key(self) -> str:
        """The credential a rate limit is counted against."""
        return f"{self.kind}:{self.id}"

    def as_json(self) -> dict[str, str]:
        return {"kind": self.kind, "id": self.id, "org_id": self.org_id, "role": self.role.value}
