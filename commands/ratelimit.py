"""Rate limits: token buckets in Redis, checked and taken atomically by one Lua script.

A bucket holds up to `burst` tokens and gains `per_s` tokens a second; each request
takes one. One call may name several buckets (say, the user's and the connection's):
the request is allowed only if every one of them has a token, and then takes one from
each; a refused request takes nothing. Time comes from the Redis server (`TIME`), so
every process shares one clock. Capacities and rates come from settings
(`rate_<limit>_burst`, `rate_<limit>_per_s`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from redis.asyncio import Redis

from domain.account_errors import RateLimited
from infra.settings import Settings

KEY = "parley:rate:{limit}:{digest}"


class Limit(StrEnum):
    """What is limited, and per what: each has its own bucket settings."""

    SEND_PER_USER = "send_user"
    SEND_PER_CONNECTION = "send_connection"
    GROUP_CHANGE_PER_USER = "group_change_user"
    GROUP_CHANGE_PER_CONNECTION = "group_change_connection"
    LOGIN_PER_ACCOUNT = "login_account"
    LOGIN_PER_ADDRESS = "login_address"
    REGISTER_PER_ADDRESS = "register_address"


@dataclass(frozen=True, slots=True)
class Bucket:
    """Up to `burst` requests at once, then `per_s` a second."""

    burst: int
    per_s: float

    def __post_init__(self) -> None:
        if self.burst < 1 or self.per_s <= 0:
            msg = f"a bucket needs burst >= 1 and per_s > 0, got {self}"
            raise ValueError(msg)


def buckets_from_settings(settings: Settings) -> dict[Limit, Bucket]:
    """Every limit's bucket, from `rate_<limit>_burst` and `rate_<limit>_per_s`."""
    return {
        limit: Bucket(
            int(getattr(settings, f"rate_{limit.value}_burst")),
            float(getattr(settings, f"rate_{limit.value}_per_s")),
        )
        for limit in Limit
    }


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether a request may go ahead; if not, how long until it would."""

    allowed: bool
    retry_after_s: float
    remaining: float
    """Tokens left in the emptiest of the buckets (after taking, if allowed)."""


# KEYS: the buckets. ARGV[1]: cost; then burst and per_s for each bucket in turn.
# Returns {allowed (1/0), milliseconds until allowed, remaining tokens as a string}.
_TAKE = """
local cost = tonumber(ARGV[1])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local levels = {}
local wait = 0
for i, key in ipairs(KEYS) do
  local burst = tonumber(ARGV[2 * i])
  local per_s = tonumber(ARGV[2 * i + 1])
  local state = redis.call('HMGET', key, 'tokens', 'ms')
  local tokens = tonumber(state[1])
  local last = tonumber(state[2])
  if tokens == nil or last == nil then
    tokens = burst
    last = now
  end
  tokens = math.min(burst, tokens + math.max(0, now - last) * per_s / 1000)
  levels[i] = tokens
  if tokens < cost then
    wait = math.max(wait, math.ceil((cost - tokens) * 1000 / per_s))
  end
end
local remaining = nil
for i, key in ipairs(KEYS) do
  local left = levels[i]
  if wait == 0 then
    left = left - cost
    local burst = tonumber(ARGV[2 * i])
    local per_s = tonumber(ARGV[2 * i + 1])
    redis.call('HSET', key, 'tokens', tostring(left), 'ms', now)
    redis.call('PEXPIRE', key, math.ceil(burst * 1000 / per_s) + 1000)
  end
  if remaining == nil or left < remaining then remaining = left end
end
if wait == 0 then return {1, 0, tostring(remaining)} end
return {0, wait, tostring(remaining)}
"""


class RateLimiter:
    """Takes tokens from the named buckets; shared by all the processes using one Redis."""

    def __init__(self, redis: Redis, buckets: Mapping[Limit, Bucket]) -> None:
        self._buckets = dict(buckets)
        self._take = redis.register_script(_TAKE)

    async def take(self, keys: Mapping[Limit, str], cost: int = 1) -> Decision:
        """Take `cost` tokens from the bucket of each (limit, key), or none if any is short.

        `key` says whose bucket: a user id, a connection id, an address, a login name.
        """
        if not keys:
            return Decision(True, 0.0, math.inf)
        names: list[str] = []
        args: list[int | float] = [cost]
        for limit, key in keys.items():
            bucket = self._buckets[limit]
            if cost > bucket.burst:
                msg = f"cost {cost} can never fit {limit} (burst {bucket.burst})"
                raise ValueError(msg)
            names.append(_key(limit, key))
            args.extend((bucket.burst, bucket.per_s))
        allowed, wait_ms, remaining = await self._take(keys=names, args=args)
        return Decision(bool(allowed), int(wait_ms) / 1000, float(remaining))

    async def check(self, keys: Mapping[Limit, str], cost: int = 1) -> None:
        """`take`, raising `rate_limited` (with `retry_after_s`) when refused."""
        decision = await self.take(keys, cost)
        if not decision.allowed:
            raise RateLimited(decision.retry_after_s)


def _key(limit: Limit, key: str) -> str:
    """The bucket's Redis key; the key is hashed, so no address or phone is stored."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    return KEY.format(limit=limit.value, digest=digest)
