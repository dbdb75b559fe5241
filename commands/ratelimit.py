"""Rate limits: token buckets in Redis, checked and taken atomically by one Lua script.

A bucket holds up to `burst` tokens and gains `per_s` tokens a second; each request
takes one. One call may name several buckets (say, the user's and the connection's):
the request is allowed only if every one of them has a token, and then takes one from
each; a refused request takes nothing. Time comes from the Redis server (`TIME`), so
every process shares one clock. Capacities and rates come from settings
(`rate_<limit>_burst`, `rate_<limit>_per_s`).

`LocalBuckets` is the same bucket arithmetic in one process's memory, for subjects that
live in that process alone (a WebSocket connection): no round trip, the same answers.
`SharedBuckets` decides in memory too, for subjects that may be on several processes at
once (a user with devices on two gateways), and reconciles with the Redis bucket in the
background: one script call per interval for every user who sent, instead of one per
request.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from redis.asyncio import Redis

from domain.account_errors import RateLimited
from infra.settings import Settings

KEY = "parley:rate:{limit}:{digest}"

log = logging.getLogger("parley.ratelimit")


class Limit(StrEnum):
    """What is limited, and per what: each has its own bucket settings."""

    SEND_PER_USER = "send_user"
    SEND_PER_CONNECTION = "send_connection"
    GROUP_CHANGE_PER_USER = "group_change_user"
    GROUP_CHANGE_PER_CONNECTION = "group_change_connection"
    LOGIN_PER_ACCOUNT = "login_account"
    LOGIN_PER_ADDRESS = "login_address"
    REGISTER_PER_ADDRESS = "register_address"
    MEDIA_UPLOAD_PER_USER = "media_upload_user"
    LOOKUP_PER_USER = "lookup_user"
    KEY_BUNDLE_PER_PAIR = "key_bundle"


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


# The bucket arithmetic both scripts share: a bucket is a hash {tokens, ms}; it refills
# at per_s up to burst, and expires once it would be full again (a full bucket and no
# bucket are the same).
_BUCKET = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local function level(key, burst, per_s)
  local state = redis.call('HMGET', key, 'tokens', 'ms')
  local tokens = tonumber(state[1])
  local last = tonumber(state[2])
  if tokens == nil or last == nil then
    return burst, false
  end
  return math.min(burst, tokens + math.max(0, now - last) * per_s / 1000), true
end
local function store(key, tokens, burst, per_s)
  redis.call('HSET', key, 'tokens', tostring(tokens), 'ms', now)
  redis.call('PEXPIRE', key, math.ceil((burst - tokens) * 1000 / per_s) + 1000)
end
"""

# KEYS: the buckets. ARGV[1]: cost; then burst and per_s for each bucket in turn.
# Returns {allowed (1/0), milliseconds until allowed, remaining tokens as a string}.
_TAKE = (
    _BUCKET
    + """
local cost = tonumber(ARGV[1])
local levels = {}
local wait = 0
for i, key in ipairs(KEYS) do
  local per_s = tonumber(ARGV[2 * i + 1])
  local tokens = level(key, tonumber(ARGV[2 * i]), per_s)
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
    store(key, left, tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1]))
  end
  if remaining == nil or left < remaining then remaining = left end
end
if wait == 0 then return {1, 0, tostring(remaining)} end
return {0, wait, tostring(remaining)}
"""
)


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


class LocalBuckets:
    """Token buckets in this process: `take` has `RateLimiter.take`'s meaning, locally.

    Buckets of subjects that are gone are dropped with `forget`; a bucket that has
    refilled to its burst is the same as no bucket, so memory stays bounded by the
    subjects alive here.
    """

    def __init__(self, buckets: Mapping[Limit, Bucket], clock: Any = time.monotonic) -> None:
        self._buckets = dict(buckets)
        self._clock = clock
        self._levels: dict[tuple[Limit, str], tuple[float, float]] = {}  # -> (tokens, at)

    def take(self, keys: Mapping[Limit, str], cost: int = 1) -> Decision:
        if not keys:
            return Decision(True, 0.0, math.inf)
        now = self._clock()
        levels: list[tuple[tuple[Limit, str], float]] = []
        wait = 0.0
        for limit, key in keys.items():
            bucket = self._buckets[limit]
            if cost > bucket.burst:
                msg = f"cost {cost} can never fit {limit} (burst {bucket.burst})"
                raise ValueError(msg)
            tokens, at = self._levels.get((limit, key), (float(bucket.burst), now))
            tokens = min(bucket.burst, tokens + max(0.0, now - at) * bucket.per_s)
            levels.append(((limit, key), tokens))
            if tokens < cost:
                wait = max(wait, math.ceil((cost - tokens) * 1000 / bucket.per_s) / 1000)
        if wait:
            return Decision(False, wait, min(tokens for _, tokens in levels))
        for name, tokens in levels:
            self._levels[name] = (tokens - cost, now)
        return Decision(True, 0.0, min(tokens - cost for _, tokens in levels))

    def check(self, keys: Mapping[Limit, str], cost: int = 1) -> None:
        decision = self.take(keys, cost)
        if not decision.allowed:
            raise RateLimited(decision.retry_after_s)

    def give_back(self, keys: Mapping[Limit, str], cost: int = 1) -> None:
        """Return tokens taken for a request that another check then refused."""
        for limit, key in keys.items():
            level = self._levels.get((limit, key))
            if level is not None:
                burst = self._buckets[limit].burst
                self._levels[(limit, key)] = (min(burst, level[0] + cost), level[1])

    def set_level(self, limit: Limit, key: str, tokens: float) -> None:
        """Make a bucket hold `tokens` now (below zero: a debt to refill first)."""
        self._levels[(limit, key)] = (min(float(self._buckets[limit].burst), tokens), self._clock())

    def forget(self, limit: Limit, key: str) -> None:
        self._levels.pop((limit, key), None)

    def __len__(self) -> int:
        return len(self._levels)


# KEYS: the buckets. ARGV: for each bucket in turn, tokens taken elsewhere since the
# last call, burst, per_s. Takes them (down to -burst at most: a debt, refilled first)
# and returns every bucket's level as a string.
_RECONCILE = (
    _BUCKET
    + """
local levels = {}
for i, key in ipairs(KEYS) do
  local taken = tonumber(ARGV[3 * i - 2])
  local burst = tonumber(ARGV[3 * i - 1])
  local per_s = tonumber(ARGV[3 * i])
  local tokens, stored = level(key, burst, per_s)
  tokens = math.max(-burst, tokens - taken)
  if taken > 0 or stored then
    store(key, tokens, burst, per_s)
  end
  levels[i] = tostring(tokens)
end
return levels
"""
)


class SharedBuckets:
    """Buckets decided in this process and reconciled with Redis in the background.

    `take` answers from memory and notes what it took; `flush` (run every fraction of
    a second) adds every subject's takes to its Redis bucket in one script call and
    sets the local level to the shared one, which counts every process's takes.
    `load` reads a subject's level when it arrives, so reconnecting or moving to
    another process starts from the shared level, not a full bucket. A subject taking
    through several processes at once can exceed its burst by what those processes
    allow between two flushes, once; refusals and `retry_after_s` are then exact.
    Uses the same Redis keys as `RateLimiter`.
    """

    def __init__(
        self, redis: Redis, buckets: Mapping[Limit, Bucket], clock: Any = time.monotonic
    ) -> None:
        self._buckets = dict(buckets)
        self.local = LocalBuckets(buckets, clock)
        self._live: set[tuple[Limit, str]] = set()
        self._pending: dict[tuple[Limit, str], int] = defaultdict(int)
        self._reconcile_script = redis.register_script(_RECONCILE)

    def take(self, keys: Mapping[Limit, str], cost: int = 1) -> Decision:
        decision = self.local.take(keys, cost)
        if decision.allowed:
            for name in keys.items():
                self._pending[name] += cost
        return decision

    def give_back(self, keys: Mapping[Limit, str], cost: int = 1) -> None:
        self.local.give_back(keys, cost)
        for name in keys.items():
            if name in self._pending:
                self._pending[name] -= cost

    async def load(self, limits: Iterable[Limit], key: str) -> None:
        """Start `key`'s buckets at their shared level (a subject arriving here)."""
        names = [(limit, key) for limit in limits]
        self._live.update(names)
        await self._reconcile(dict.fromkeys(names, 0))

    def knows(self, limit: Limit, key: str) -> bool:
        """Whether `key`'s bucket was loaded here (and not forgotten since)."""
        return (limit, key) in self._live

    def forget(self, limits: Iterable[Limit], key: str) -> None:
        """The subject left this process; takes not yet flushed still will be."""
        for limit in limits:
            self._live.discard((limit, key))
            self.local.forget(limit, key)

    async def flush(self) -> None:
        """Add what was taken here since the last flush to the shared buckets."""
        taken = {name: n for name, n in self._pending.items() if n > 0}
        self._pending = defaultdict(int)
        if not taken:
            return
        try:
            await self._reconcile(taken)
        except Exception:
            for name, n in taken.items():  # counted at the next flush instead
                self._pending[name] += n
            raise

    async def _reconcile(self, taken: Mapping[tuple[Limit, str], int]) -> None:
        names: list[str] = []
        args: list[int | float] = []
        for (limit, key), n in taken.items():
            bucket = self._buckets[limit]
            names.append(_key(limit, key))
            args.extend((n, bucket.burst, bucket.per_s))
        levels = await self._reconcile_script(keys=names, args=args)
        for (limit, key), level in zip(taken, levels, strict=True):
            if (limit, key) in self._live:
                # Takes made here while the script ran are not in its answer yet.
                since = self._pending.get((limit, key), 0)
                self.local.set_level(limit, key, float(level) - since)


def _key(limit: Limit, key: str) -> str:
    """The bucket's Redis key; the key is hashed, so no address or phone is stored."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    return KEY.format(limit=limit.value, digest=digest)
