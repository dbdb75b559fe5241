"""Lua scripts called by their SHA-1 inside pipelines, in one round trip.

redis-py's registered scripts ask Redis `SCRIPT EXISTS` before every pipeline that calls
one: a round trip of its own, per batch of the workers. A `Lua` script is queued as a
plain `EVALSHA` instead; `execute` runs a pipeline and, when Redis answers `NOSCRIPT`
(it restarted, or its scripts were flushed), loads every `Lua` script and runs the
pipeline's commands once more. The commands of a pipeline that calls scripts must be
safe to run twice; the workers' are (cache writes by seq and GT, counts copied whole),
and so are the processor's (a reply published twice is taken once by its gateway, a push
twice is dropped by the client's seq check).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

_ALL: list[Lua] = []


class Lua:
    """A script without keys (names come in ARGV: one Redis, not a cluster)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        _ALL.append(self)

    def queue(self, pipe: Any, *args: Any) -> None:
        """Queue a call in `pipe` (a redis-py pipeline)."""
        pipe.evalsha(self.sha, 0, *args)

    async def __call__(self, redis: aioredis.Redis, *args: Any) -> Any:
        """Call it on its own (as `execute` runs a pipeline)."""
        results = await execute(redis, lambda pipe: self.queue(pipe, *args), transaction=False)
        return results[0]


async def load_all(redis: aioredis.Redis) -> None:
    """Load every `Lua` script into Redis (one round trip)."""
    pipe = redis.pipeline(transaction=False)
    for script in _ALL:
        pipe.script_load(script.source)
    await pipe.execute()


async def execute(
    redis: aioredis.Redis, build: Callable[[Any], None], *, transaction: bool = True
) -> list[Any]:
    """Run what `build` queues in a pipeline (MULTI/EXEC unless `transaction` is False).

    If a script was missing, load them all and run `build`'s commands again."""
    pipe = redis.pipeline(transaction=transaction)
    build(pipe)
    try:
        return await pipe.execute()
    except NoScriptError:
        await load_all(redis)
    pipe = redis.pipeline(transaction=transaction)
    build(pipe)
    return await pipe.execute()


def execute_blocking(client: Any, build: Callable[[Any], None], *, transaction: bool = True) -> Any:
    """`execute` for a blocking client (`redis.Redis`): the same retry after NOSCRIPT."""
    pipe = client.pipeline(transaction=transaction)
    build(pipe)
    try:
        return pipe.execute()
    except NoScriptError:
        loading = client.pipeline(transaction=False)
        for script in _ALL:
            loading.script_load(script.source)
        loading.execute()
    pipe = client.pipeline(transaction=transaction)
    build(pipe)
    return pipe.execute()
