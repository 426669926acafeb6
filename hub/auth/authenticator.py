"""Turn an ``Authorization: Bearer …`` header into a :class:`Principal`, whichever credential it holds."""

from __future__ import annotations

from hub.auth.jwt_tokens import JwtCodec
from hub.auth.principal import Principal
from hub.errors import Unauthenticated
from hub.registry.api_keys import API_KEY_PREFIX, ApiKeys
from hub.registry.device_keys import DEVICE_KEY_PREFIX, DeviceKeys
from hub.registry.users import Users

__all__ = ["Authenticator", "bearer_token"]

MAX_TOKEN_CHARS = 4096


def bearer_token(authorization: str | None) -> str | None:
    """The token of a ``Bearer`` header; None when there is no header; 401 when it is malformed."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN_CHARS:
        raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
    return token


class Authenticator:
    def __init__(self, *, jwt: JwtCodec, users: Users, api_keys: ApiKeys, device_keys: DeviceKeys) -> None:
        self.jwt = jwt
        self.users = users
        self.api_keys = api_keys
        self.device_keys = device_keys

    async def resolve(self, token: str) -> Principal:
        """The principal behind ``token``; 401 for anything unknown, revoked, expired or tampered."""
        principal: Principal | None
        if token.startswith(API_KEY_PREFIX):
            principal = await self.api_keys.resolve(token)
        elif token.startswith(DEVICE_KEY_PREFIX):
            principal = await self.device_keys.resolve(token)
        else:
            principal = await self._resolve_jwt(token)
        if principal is None:
            raise Unauthenticated("the credential is invalid, expired or revoked")
        return principal

    async def _resolve_jwt(self, token: str) -> Principal | None:
        claims = self.jwt.decode(token)
        if claims is None:
            return None
        # The store, not the token, has the last word: a deleted user's tokens stop working at once.
        role = await self.users.role_of(claims.org_id, claims.user_id)
        if role is None:
            return None
        return Principal(kind="user", id=claims.user_id, org_id=claims.org_id, role=role, expires_at=claims.expires_at)
