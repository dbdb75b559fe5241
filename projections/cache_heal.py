"""The Redis projections heal themselves after Redis lost writes.

Redis runs append-only with an fsync every second (infra/stack/redis.py): killed, or on
a machine that stopped, it comes back without what it took in its last second, or
without anything if its files are gone. The workers' cache writes and the cache
checkpoints of the same batch go in one MULTI (streams/workers.py), so what Redis kept
of them is always the state of a whole number of batches, and its checkpoints say
which. Healing is re-applying the log from there.

Every `CHECK_EVERY_S` a worker compares Redis's `run_id` (new at each start of the
server) with the one the cache was last known good under (`run_key`, kept in Redis).
If they differ, Redis restarted since: the worker that swaps in the new run id reads
the events from the cache checkpoints Redis kept (from the beginning for a partition it
has none of) to the end of the log, and applies them to the cache again, beside the live
batches. Everything the cache writes is safe to apply twice and in any order against
the live writes: recent messages by seq, chat order by ZADD GT, unread counts copied
whole from PostgreSQL as they are now. Checkpoints are not moved by a heal: the live
batches move them.

What it does not do: if the worker healing dies half-way, the rest waits for the next
restart of Redis, or `parley replay rebuild cache`. A Redis that lost every key gets its
recent messages back with a fresh day to live, chats quiet for longer included.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import psycopg
import redis.asyncio as aioredis

from infra.settings import Settings
from projections.cache import PREFIX, apply_cache
from projections.cache_shadow import cache_checkpoints
from projections.logreader import LogReader

log = logging.getLogger("parley.cache_heal")

CHECK_EVERY_S = 1.0
"""How often a worker asks Redis for its run id: one INFO a second."""


def run_key(prefix: str = PREFIX) -> str:
    return f"{prefix}proj:cache:run"


async def redis_run_id(redis: aioredis.Redis) -> str:
    info: dict[str, Any] = await redis.info("server")
    return str(info["run_id"])


async def claim_heal(redis: aioredis.Redis) -> str | None:
    """The new run id if Redis restarted since the cache was last known good and this
    caller is the one to heal it (it swapped the run id in), else None."""
    run_id = await redis_run_id(redis)
    before: Any = await redis.set(run_key(), run_id, get=True)
    known = before.decode() if isinstance(before, bytes) else before
    return run_id if known != run_id else None


async def heal(settings: Settings, redis: aioredis.Redis) -> int:
    """Apply the log again to the cache from the checkpoints Redis kept to the log's end
    now; return the number of records read."""
    started = time.monotonic()
    marks = await cache_checkpoints(redis)
    reader = await asyncio.to_thread(LogReader, settings)
    try:
        starts = await asyncio.to_thread(reader.start_at)  # the beginnings, then ours
        for tp in reader.partitions:
            if tp.partition in marks:
                offset = max(starts[tp.partition], marks[tp.partition] + 1)
                reader.consumer.seek(tp, offset)
                reader.position[tp.partition] = offset
        targets = await asyncio.to_thread(reader.log_end)
        batches = reader.read(targets, settings.replay_batch_max)
        async with await psycopg.AsyncConnection.connect(
            settings.pg_conninfo, autocommit=True
        ) as conn:
            while (batch := await asyncio.to_thread(next, batches, None)) is not None:
                await apply_cache(redis, conn, batch, move_checkpoints=False)
        records = reader.stats.records
    finally:
        await asyncio.to_thread(reader.close)
    log.info(
        "event=cache_healed records=%d partitions_without_checkpoint=%d took_s=%.1f",
        records,
        len(reader.partitions) - len(marks),
        time.monotonic() - started,
    )
    return records


class CacheWatch:
    """A worker's watch over Redis restarts: `check()` every `CHECK_EVERY_S`."""

    def __init__(self, settings: Settings, redis: aioredis.Redis) -> None:
        self.settings = settings
        self.redis = redis
        self._healing: asyncio.Task[None] | None = None

    async def check(self) -> None:
        if self._healing is not None and not self._healing.done():
            return
        try:
            run_id = await claim_heal(self.redis)
        except (aioredis.RedisError, OSError) as exc:  # down: asked again next time
            log.debug("event=cache_watch_failed error=%s", type(exc).__name__)
            return
        if run_id is not None:
            log.warning("event=redis_restarted run_id=%s healing=cache", run_id)
            self._healing = asyncio.create_task(self._heal(), name="cache-heal")

    async def _heal(self) -> None:
        try:
            await heal(self.settings, self.redis)
        except Exception as exc:  # let a later check try again: forget the run id
            log.warning("event=cache_heal_failed error=%s", type(exc).__name__)
            with contextlib.suppress(aioredis.RedisError, OSError):
                await self.redis.delete(run_key())
