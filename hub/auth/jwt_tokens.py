"""User sessions as JWTs: HS256 pinned (no ``alg`` from the token is trusted), ``exp`` and ``jti`` required."""

from __future__ import annotations

import functools
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import jwt

__all__ = ["JwtClaims", "JwtCodec"]

ALGORITHM = "HS256"
ISSUER = "telehub"
REQUIRED_CLAIMS = ["exp", "iat", "sub", "org", "role", "jti", "iss"]


@dataclass(frozen=True, slots=True)
class JwtClaims:
    user_id: str
    org_id: str
    role: str
    jti: str
    expires_at: int


class JwtCodec:
    def __init__(self, secret: Callable[[], str], *, ttl_s: int) -> None:
        # Read on first use: commands that never touch a JWT (telehub admin) make no secret file.
        self._load_secret = secret
        self.ttl_s = ttl_s

    @functools.cached_property
    def _secret(self) -> str:
        return self._load_secret()

    def issue(self, *, user_id: str, org_id: str, role: str) -> str:
        now = int(time.time())
        claims = {
            "sub": user_id,
            "org": org_id,
            "role": role,
            "jti": secrets.token_urlsafe(16),
            "iat": now,
            "exp": now + self.ttl_s,
            "iss": ISSUER,
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def decode(self, token: str) -> JwtClaims | None:
        """The claims of a valid token, or None for any invalid, expired, tampered or unsigned one."""
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                issuer=ISSUER,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.PyJWTError:
            return None
        values = (claims.get("sub"), claims.get("org"), claims.get("role"), claims.get("jti"))
        if not all(isinstance(v, str) for v in values):
            return None
        return JwtClaims(
            user_id=claims["sub"],
            org_id=claims["org"],
            role=claims["role"],
            jti=claims["jti"],
            expires_at=int(claims["exp"]),
        )
