"""``POST /auth/login`` and ``GET /auth/me``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Route

from hub import keys
from hub.api import schemas
from hub.api.http import JSONResponse, json_body, principal_of
from hub.api.spec import operation
from hub.api.validation import BodyReader
from hub.errors import InvalidCredentials, RateLimited
from hub.services import Services

__all__ = ["routes"]


@operation(
    summary="Log in with email and password; returns a JWT",
    tag="auth",
    body=schemas.LOGIN_REQUEST,
    responses={200: schemas.LOGIN_REPLY},
    errors=(400, 401, 429),
    auth=False,
)
async def login(request: Request) -> JSONResponse:
    services: Services = request.app.state.services
    reader = BodyReader(await json_body(request), allowed=("email", "password"))
    email = reader.string("email", required=True, max_len=320)
    password = reader.string("password", required=True, max_len=1024)
    reader.finish()
    assert email is not None and password is not None
    throttle = LoginThrottle(services, email=email.strip().lower(), ip=_client_ip(request))
    await throttle.check()
    user = await services.users.authenticate(email, password)
    if user is None:
        await throttle.record_failure()
        raise InvalidCredentials()
    await throttle.clear()
    token = services.jwt.issue(user_id=user["id"], org_id=user["org_id"], role=user["role"])
    public_user = {k: user[k] for k in ("id", "email", "role", "org_id")}
    return JSONResponse({"token": token, "expires_in": services.jwt.ttl_s, "user": public_user})


@operation(summary="Who the caller is", tag="auth", responses={200: schemas.ME})
async def me(request: Request) -> JSONResponse:
    return JSONResponse(principal_of(request).as_json())


class LoginThrottle:
    """Failed logins counted per email and per IP; past the limit, login answers 429 until the window ends."""

    def __init__(self, services: Services, *, email: str, ip: str) -> None:
        self.redis = services.redis
        self.limit = services.config.login_max_failures
        self.window_s = services.config.login_window_s
        self.counters = [keys.login_failures("email", email), keys.login_failures("ip", ip)]

    async def check(self) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in self.counters:
                pipe.get(key)
                pipe.ttl(key)
            values = await pipe.execute()
        for count, ttl in zip(values[::2], values[1::2], strict=True):
            if count is not None and int(count) >= self.limit:
                retry = max(1, int(ttl))
                raise RateLimited(retry, f"too many failed logins; retry in {retry} s")

    async def record_failure(self) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in self.counters:
                # The window starts at the first failure (Redis 6.2 has no EXPIRE NX).
                pipe.set(key, 0, ex=self.window_s, nx=True)
                pipe.incr(key)
            await pipe.execute()

    async def clear(self) -> None:
        await self.redis.delete(self.counters[0])


def _client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


routes = [
    Route("/auth/login", login, methods=["POST"]),
    Route("/auth/me", me, methods=["GET"]),
]
