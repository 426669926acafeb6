"""Everything a request handler needs, built once per process in the app's lifespan."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from hub.api.idempotency import IdempotencyRecords
from hub.api.ratelimit import RateLimiter
from hub.auth.authenticator import Authenticator
from hub.auth.jwt_tokens import JwtCodec
from hub.config import HubConfig
from hub.redis_client import StrRedis, open_redis
from hub.registry.api_keys import ApiKeys
from hub.registry.device_keys import DeviceKeys
from hub.registry.devices import Devices
from hub.registry.orgs import Organizations
from hub.registry.provisioning import Provisioning
from hub.registry.users import Users

__all__ = ["Services", "load_secret", "open_redis"]

SECRET_FILE = "secret"


@dataclass
class Services:
    config: HubConfig
    redis: StrRedis
    orgs: Organizations
    users: Users
    api_keys: ApiKeys
    device_keys: DeviceKeys
    jwt: JwtCodec
    authenticator: Authenticator
    rate_limiter: RateLimiter
    devices: Devices
    provisioning: Provisioning
    idempotency: IdempotencyRecords

    @classmethod
    def build(cls, config: HubConfig, redis: StrRedis) -> Services:
        users = Users(redis)
        api_keys = ApiKeys(redis)
        device_keys = DeviceKeys(redis)
        devices = Devices(redis, device_keys)
        jwt = JwtCodec(lambda: load_secret(config), ttl_s=config.jwt_ttl_s)
        return cls(
            config=config,
            redis=redis,
            orgs=Organizations(redis),
            users=users,
            api_keys=api_keys,
            device_keys=device_keys,
            jwt=jwt,
            authenticator=Authenticator(jwt=jwt, users=users, api_keys=api_keys, device_keys=device_keys),
            rate_limiter=RateLimiter(redis, per_minute=config.rate_limit_per_minute, burst=config.rate_limit_burst),
            devices=devices,
            provisioning=Provisioning(redis, devices, device_keys),
            idempotency=IdempotencyRecords(redis),
        )


def load_secret(config: HubConfig) -> str:
    """``TELEHUB_SECRET``, else the one kept in the data dir (made on first use, readable by its owner only)."""
    if config.secret:
        return config.secret
    path = Path(config.data_dir) / SECRET_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Written aside, then linked into place: atomic, and the first of several workers wins.
    draft = path.with_name(f".{SECRET_FILE}.{os.getpid()}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(48))
    try:
        os.link(draft, path)
    except FileExistsError:
        pass
    finally:
        draft.unlink()
    return path.read_text().strip()
