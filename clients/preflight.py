"""What ``telehub simulate`` and ``telehub tail`` check before they start, each failure saying what to do next:
a token was given, the hub answers at the URL, it accepts the token, and the token's role is enough."""

from __future__ import annotations

import httpx

from clients.errors import ApiError
from clients.rest import RestClient

__all__ = ["ROLE_RANK", "ToolError", "check_access", "require_token", "unreachable"]

ROLE_RANK = {"viewer": 1, "operator": 2, "admin": 3}
CREATE_KEY = "`telehub admin create-api-key --org ORG_ID --role {role} --name NAME`"
LOGIN = "a user's JWT from POST /api/v1/auth/login"


class ToolError(Exception):
    """A command cannot go on: ``message`` says why and what to do; ``exit_code`` is the process's."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def require_token(token: str | None, *, role: str, doing: str) -> str:
    if not token:
        raise ToolError(
            f"{doing} needs a token: pass --token or set TELEHUB_TOKEN to an API key with role {role} or above "
            f"({CREATE_KEY.format(role=role)}) or {LOGIN}",
            exit_code=2,
        )
    return token


def unreachable(url: str, reason: object) -> ToolError:
    return ToolError(
        f"cannot reach the hub at {url} ({reason or 'no answer'}): check --url, or start a hub there with "
        "`telehub serve`"
    )


async def check_access(rest: RestClient, url: str, *, role: str, doing: str) -> dict[str, str]:
    """``GET /auth/me``: who the token is, once the hub answered and accepted it with at least ``role``."""
    try:
        me: dict[str, str] = await rest.me()
    except httpx.TransportError as exc:
        raise unreachable(url, exc) from None
    except ApiError as exc:
        if exc.status == 401:
            raise ToolError(
                f"the hub at {url} refused the token ({exc.status} {exc.code}: {exc.message}): check --token / "
                f"TELEHUB_TOKEN; a new API key: {CREATE_KEY.format(role=role)}"
            ) from None
        if exc.status == 404:
            raise ToolError(f"no telehub API at {url} (GET /api/v1/auth/me answered 404): check --url") from None
        raise ToolError(f"the hub at {url} answered {exc}") from None
    if me.get("kind") == "device":
        raise ToolError(f"a device key cannot {doing}: use an API key (sk_live_…) or {LOGIN}")
    if ROLE_RANK.get(me.get("role", ""), 0) < ROLE_RANK[role]:
        raise ToolError(
            f"the token's role is {me.get('role')}; to {doing} it needs role {role} or above (403 otherwise): "
            f"use another token, e.g. {CREATE_KEY.format(role=role)}"
        )
    return me
