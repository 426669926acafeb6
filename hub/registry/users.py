"""Users of an organization: email (unique across the hub), role, scrypt password hash."""

from __future__ import annotations

import re
from typing import Any

import anyio.to_thread

from hub import keys
from hub.auth.principal import Role
from hub.auth.secrets import dummy_password_hash, hash_password, new_id, verify_password
from hub.clock import now_ms
from hub.errors import Conflict, NotFound, ValidationFailed
from hub.redis_client import StrRedis
from hub.registry.records import announce_credential_revoked, iso_field, page_records

__all__ = ["EMAIL_PATTERN", "Users", "check_password"]

EMAIL_PATTERN = re.compile(r"[^@\s]{1,64}@[^@\s]{1,189}\.[^@\s.]{1,63}")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024


def check_password(password: str) -> None:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise ValidationFailed({"password": f"must be {MIN_PASSWORD} to {MAX_PASSWORD} characters"})


class Users:
    def __init__(self, redis: StrRedis) -> None:
        self.redis = redis

    async def create(self, *, org_id: str, email: str, password: str, role: Role) -> dict[str, Any]:
        email = email.strip().lower()
        if not EMAIL_PATTERN.fullmatch(email):
            raise ValidationFailed({"email": "must be an email address"})
        check_password(password)
        password_hash = await anyio.to_thread.run_sync(hash_password, password)
        user_id = new_id("usr")
        if not await self.redis.set(keys.email_index(email), f"{org_id} {user_id}", nx=True):
            raise Conflict("a user with this email already exists", code="email_taken")
        created = now_ms()
        record = {
            "id": user_id,
            "org_id": org_id,
            "email": email,
            "role": role.value,
            "password_hash": password_hash,
            "created_at": str(created),
        }
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.user(org_id, user_id), mapping=record)
            pipe.zadd(keys.users(org_id), {user_id: created})
            await pipe.execute()
        return _public(record)

    async def authenticate(self, email: str, password: str) -> dict[str, Any] | None:
        """The user with this email and password, or None; takes the same time for unknown emails."""
        owner = await self.redis.get(keys.email_index(email.strip().lower()))
        record: dict[str, str] = {}
        if owner:
            org_id, user_id = owner.split(" ", 1)
            record = await self.redis.hgetall(keys.user(org_id, user_id))
        stored = record.get("password_hash") or dummy_password_hash()
        ok = await anyio.to_thread.run_sync(verify_password, password, stored)
        return _public(record) if ok and record else None

    async def set_password(self, org_id: str, user_id: str, password: str) -> None:
        check_password(password)
        password_hash = await anyio.to_thread.run_sync(hash_password, password)
        await self.redis.hset(keys.user(org_id, user_id), "password_hash", password_hash)

    async def get(self, org_id: str, user_id: str) -> dict[str, Any]:
        record = await self.redis.hgetall(keys.user(org_id, user_id))
        if not record:
            raise NotFound(f"no user {user_id}")
        return _public(record)

    async def role_of(self, org_id: str, user_id: str) -> Role | None:
        """The user's current role, or None when the user no longer exists (deleted: its JWTs stop working)."""
        role = await self.redis.hget(keys.user(org_id, user_id), "role")
        return Role(role) if role else None

    async def list(self, org_id: str, *, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        records, total = await page_records(
            self.redis, keys.users(org_id), lambda user_id: keys.user(org_id, user_id), limit=limit, offset=offset
        )
        return [_public(r) for r in records], total

    async def delete(self, org_id: str, user_id: str) -> None:
        record = await self.redis.hgetall(keys.user(org_id, user_id))
        if not record:
            raise NotFound(f"no user {user_id}")
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.user(org_id, user_id))
            pipe.zrem(keys.users(org_id), user_id)
            await pipe.execute()
        await self.redis.delete(keys.email_index(record["email"]))
        await announce_credential_revoked(self.redis, "user", org_id, user_id)


def _public(record: dict[str, str]) -> dict[str, Any]:
    return {
        "id": record["id"],
        "email": record["email"],
        "role": record["role"],
        "org_id": record["org_id"],
        "created_at": iso_field(record, "created_at"),
    }
