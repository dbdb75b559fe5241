"""A shadow copy of the Redis projections under its own key prefix, and its swap.

A rebuild writes the cache with `apply_cache(prefix="parley:replay:<run>:")`, reading the
shadow PostgreSQL schema it builds alongside (members and unread at that point of the
log). The swap renames every shadow key onto its live name (`RENAME` replaces a key
atomically, so a reader sees the old value or the new one, never none), then deletes the
live cache keys the shadow does not have. Readers keep using the live names: nothing in
the query path changes. Renames go in MULTI/EXEC chunks, so a reader can see old and
new keys side by side for a moment; both describe the same point of the log, because
the live workers are paused for the swap.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import redis.asyncio as aioredis

from projections.cache import PREFIX, RECENT_TTL_S, checkpoint_key, recent_key

CHUNK = 1_000
LIVE_PATTERNS = ("chat:*:recent", "user:*:chats", "user:*:unread", "proj:cache:checkpoints")
"""The cache's keys, after the prefix (projections/cache.py)."""


def shadow_prefix(run_id: str) -> str:
    return f"{PREFIX}replay:{run_id}:"


@dataclass(frozen=True)
class KeySwap:
    renamed: int
    deleted: int


async def scan(redis: aioredis.Redis, pattern: str) -> AsyncIterator[list[str]]:
    """The keys matching `pattern`, a chunk at a time."""
    cursor: Any = 0
    while True:
        cursor, keys = await redis.scan(cursor=cursor, match=pattern, count=CHUNK)
        if keys:
            yield [k.decode() if isinstance(k, bytes) else str(k) for k in keys]
        if int(cursor) == 0:
            return


async def live_keys(redis: aioredis.Redis, prefix: str = PREFIX) -> set[str]:
    """Every cache key under `prefix` (without the prefix)."""
    found: set[str] = set()
    for pattern in LIVE_PATTERNS:
        async for keys in scan(redis, prefix + pattern):
            found.update(k[len(prefix) :] for k in keys)
    return found


async def finish_recent(
    redis: aioredis.Redis, prefix: str, clock: Mapping[UUID, float], chats: set[UUID]
) -> None:
    """Give the recent sets of `chats` the TTL live would have: from their newest message.

    Sets whose newest message is older than the TTL are deleted now (Redis deletes a key
    whose expiry time has passed), as they would have expired live.
    """
    pipe = redis.pipeline(transaction=False)
    for n, chat_id in enumerate(chats, 1):
        pipe.pexpireat(recent_key(chat_id, prefix), int((clock[chat_id] + RECENT_TTL_S) * 1000))
        if n % CHUNK == 0:
            await pipe.execute()
    await pipe.execute()


async def swap_keys(redis: aioredis.Redis, prefix: str, live: str = PREFIX) -> KeySwap:
    """Rename the shadow keys onto the live ones; delete live cache keys it lacks."""
    installed: set[str] = set()
    async for keys in scan(redis, prefix + "*"):
        pipe = redis.pipeline(transaction=True)
        for key in keys:
            pipe.rename(key, live + key[len(prefix) :])
        results = await pipe.execute(raise_on_error=False)
        for key, result in zip(keys, results, strict=True):
            if not isinstance(result, Exception):  # else: expired since the scan
                installed.add(key[len(prefix) :])
    stale = sorted((await live_keys(redis, live)) - installed)
    for start in range(0, len(stale), CHUNK):
        await redis.unlink(*(live + k for k in stale[start : start + CHUNK]))
    return KeySwap(renamed=len(installed), deleted=len(stale))


async def drop_keys(redis: aioredis.Redis, prefix: str) -> int:
    """Delete every key under a shadow prefix; return how many."""
    dropped = 0
    async for keys in scan(redis, prefix + "*"):
        dropped += int(await redis.unlink(*keys))
    return dropped


async def shadow_runs(redis: aioredis.Redis) -> set[str]:
    """Runs that have keys under `parley:replay:<run>:`."""
    runs: set[str] = set()
    async for keys in scan(redis, f"{PREFIX}replay:*"):
        runs.update(k[len(PREFIX) + len("replay:") :].split(":", 1)[0] for k in keys)
    return runs


async def cache_checkpoints(redis: aioredis.Redis, prefix: str = PREFIX) -> dict[int, int]:
    raw: Any = await redis.hgetall(checkpoint_key(prefix))
    return {int(k): int(v) for k, v in raw.items()}
