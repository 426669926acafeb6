"""Rate limits shared by every process through Redis: a token bucket per credential (or per IP).

The bucket holds ``burst`` tokens and refills at ``per_minute / 60`` tokens a second; a request takes one.
The arithmetic runs in one Lua script on Redis's own clock, so all processes and hosts see one bucket.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hub import keys
from hub.redis_client import StrRedis

__all__ = ["RateDecision", "RateLimiter"]

# KEYS[1] bucket; ARGV[1] capacity, ARGV[2] refill tokens per ms. Returns
# {allowed 0|1, tokens left (string), ms until a token is available, ms until full, now ms}.
_TOKEN_BUCKET = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = capacity
  ts = now
end
if now > ts then
  tokens = math.min(capacity, tokens + (now - ts) * rate)
  ts = now
end
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(ts))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate) + 1000)
local wait = 0
if allowed == 0 then
  wait = math.ceil((1 - tokens) / rate)
end
return {allowed, tostring(tokens), wait, math.ceil((capacity - tokens) / rate), now}
"""


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    reset_at: int  # unix seconds when the bucket is full again
    retry_after: int  # seconds to wait when not allowed

    def headers(self) -> dict[str, str]:
        """The X-RateLimit-* headers (Retry-After comes with the 429 itself)."""
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_at),
        }


class RateLimiter:
    def __init__(self, redis: StrRedis, *, per_minute: int, burst: int) -> None:
        self.per_minute = per_minute
        self.burst = burst
        self._rate_per_ms = per_minute / 60_000
        self._script = redis.register_script(_TOKEN_BUCKET)

    async def hit(self, credential: str) -> RateDecision:
        allowed, tokens, wait_ms, full_ms, now_ms = await self._script(
            keys=[keys.rate_bucket(credential)], args=[self.burst, repr(self._rate_per_ms)]
        )
        return RateDecision(
            allowed=bool(allowed),
            limit=self.per_minute,
            remaining=max(0, math.floor(float(tokens))),
            reset_at=math.ceil((int(now_ms) + int(full_ms)) / 1000),
            retry_after=max(1, math.ceil(int(wait_ms) / 1000)),
        )
