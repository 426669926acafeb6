"""``Idempotency-Key`` for POSTs that create things: the first successful reply is kept 24 h and replayed.

The rules are Stripe's. Records are per organization and per credential. A key first takes an in-progress
marker (SET NX); a 2xx reply replaces it with the stored status and body, anything else drops it so the
client may retry. The same key with another request (method, path or body) is 409
``idempotency_key_reused``; the same key while the first attempt runs is 409 ``idempotency_in_progress``.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio
import orjson
from starlette.requests import Request
from starlette.responses import Response

from hub import keys
from hub.api.http import raw_body
from hub.api.spec import Param
from hub.auth.principal import Principal
from hub.auth.secrets import key_digest
from hub.errors import Conflict, ValidationFailed
from hub.redis_client import StrRedis

if TYPE_CHECKING:
    from hub.services import Services

__all__ = [
    "IDEMPOTENCY_KEY_HEADER",
    "IDEMPOTENCY_KEY_PARAM",
    "REPLAYED_HEADER",
    "IdempotencyRecords",
    "StoredReply",
    "fingerprint",
    "idempotent",
    "record_key",
]

IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
KEY_PATTERN = re.compile(r"[\x20-\x7e]{1,255}")
REPLY_TTL_S = 86_400
# The longest a first attempt holds its key; a process that died mid-request frees it after this.
IN_PROGRESS_TTL_S = 120

IDEMPOTENCY_KEY_PARAM = Param(
    IDEMPOTENCY_KEY_HEADER,
    {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x20-\\x7e]+$"},
    "any unique string (a UUID): the first successful reply is replayed for 24 h with "
    "Idempotent-Replayed: true; another body under the same key is 409 idempotency_key_reused",
    location="header",
)

Handler = Callable[[], Awaitable[Response]]

# Replace (or drop, when ARGV[2] is empty) the record, but only while it still holds our marker.
_SETTLE = """
-- KEYS[1]: the record; ARGV: our in-progress marker, the reply to keep or '', its TTL in seconds
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
end
return 1
"""


@dataclass(frozen=True)
class StoredReply:
    """The first successful reply to a key, as it is replayed."""

    status: int
    body: bytes

    def response(self) -> Response:
        return Response(
            self.body, status_code=self.status, media_type="application/json", headers={REPLAYED_HEADER: "true"}
        )


class IdempotencyRecords:
    """The Redis side: claim a key, then keep the reply or release the key."""

    def __init__(self, redis: StrRedis) -> None:
        self.redis = redis
        self._settle = redis.register_script(_SETTLE)

    async def claim(self, key: str, request_fingerprint: str) -> str | StoredReply:
        """Our in-progress marker when the key was free, else the stored reply; 409 for the two conflicts."""
        marker = orjson.dumps(
            {"state": "in_progress", "fingerprint": request_fingerprint, "owner": secrets.token_hex(8)}
        ).decode()
        for _ in range(3):
            if await self.redis.set(key, marker, nx=True, ex=IN_PROGRESS_TTL_S):
                return marker
            stored = await self.redis.get(key)
            if stored is None:
                continue  # expired between SET and GET: try again
            record = orjson.loads(stored)
            if record["fingerprint"] != request_fingerprint:
                raise Conflict(
                    "this Idempotency-Key was used with another request; use a new key",
                    code="idempotency_key_reused",
                )
            if record["state"] == "done":
                return StoredReply(status=record["status"], body=record["body"].encode())
            break
        raise Conflict(
            "a request with this Idempotency-Key is still being processed; retry shortly",
            code="idempotency_in_progress",
        )

    async def keep(self, key: str, marker: str, response: Response) -> None:
        """Replace our marker with the reply, kept REPLY_TTL_S."""
        reply = {
            "state": "done",
            "fingerprint": orjson.loads(marker)["fingerprint"],
            "status": response.status_code,
            "body": bytes(response.body).decode(),
        }
        await self._settle(keys=[key], args=[marker, orjson.dumps(reply), REPLY_TTL_S])

    async def release(self, key: str, marker: str) -> None:
        """Drop our marker, so that the client may retry with the same key."""
        await self._settle(keys=[key], args=[marker, "", 0])


def fingerprint(method: str, path: str, body: bytes) -> str:
    """What makes two requests 'the same' under one key: SHA-256 of method, path and body."""
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def record_key(principal: Principal, idempotency_key: str) -> str:
    """The Redis key of one credential's record for one Idempotency-Key (hashed: keys may hold any ASCII)."""
    return keys.idempotency(principal.org_id, principal.rate_key, key_digest(idempotency_key))


async def idempotent(request: Request, principal: Principal, handler: Handler) -> Response:
    """Run ``handler`` at most once per Idempotency-Key (when the request has one) and replay its 2xx reply."""
    idempotency_key = request.headers.get(IDEMPOTENCY_KEY_HEADER)
    if idempotency_key is None:
        return await handler()
    if not KEY_PATTERN.fullmatch(idempotency_key):
        raise ValidationFailed({IDEMPOTENCY_KEY_HEADER: "must be 1 to 255 printable ASCII characters"})
    services: Services = request.app.state.services
    body = await raw_body(request, limit=services.config.max_body_bytes)
    key = record_key(principal, idempotency_key)
    records = services.idempotency
    claimed = await records.claim(key, fingerprint(request.method, request.url.path, body))
    if isinstance(claimed, StoredReply):
        return claimed.response()
    try:
        response = await handler()
    except BaseException:
        with anyio.CancelScope(shield=True):
            await records.release(key, claimed)
        raise
    if 200 <= response.status_code < 300:
        await records.keep(key, claimed, response)
    else:
        await records.release(key, claimed)
    return response
