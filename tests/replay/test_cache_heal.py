"""The Redis projections heal themselves after Redis lost writes, with no rebuild asked for.

What a Redis restart leaves is staged on the shared server without killing it: the cache
keys of a conversation gone and the checkpoints back where they were before it (as the
writes of the last second before a SIGKILL are), and the run id the cache was last known
good under no longer Redis's own. The live workers
notice within a second or two and re-apply the log from the checkpoints Redis kept.
tests/stack/test_server_kills.py does it with a real SIGKILL where the stack is ours.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis

from infra.settings import Settings
from projections.cache import chats_key, checkpoint_key, recent_key, unread_key
from projections.cache_heal import run_key
from tests.replay.conftest import cache_dump, conversation, settle
from tests.services import Service


def known_good(client: redis.Redis) -> bool:
    """The workers hold the cache good under this Redis's run (their first check done)."""
    return bool(client.get(run_key()) == client.info("server")["run_id"].encode())


def until(condition: Callable[[], bool], deadline_s: float, what: str) -> None:
    end = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < end, what
        time.sleep(0.1)


def test_a_cache_that_lost_writes_heals_after_a_redis_restart(
    topics: Settings, pipeline: dict[str, Service]
) -> None:
    workers = pipeline["workers"]
    client = redis.Redis.from_url(topics.redis_url)
    try:
        until(lambda: known_good(client), 30, "the workers never checked Redis's run id")
        kept: Any = client.hgetall(checkpoint_key())
        chats = conversation(topics)
        settle(topics)
        undisturbed = cache_dump(topics)
        offset = len(workers.text())

        # What a restart leaves: the batches since `kept` lost, their checkpoints too.
        lost = [recent_key(chats["direct"]), recent_key(chats["group"])]
        lost += [unread_key(chats["bob"]), chats_key(chats["bob"])]
        client.delete(*lost)
        client.delete(checkpoint_key())
        if kept:
            client.hset(checkpoint_key(), mapping=kept)
        client.set(run_key(), "a-run-before-the-restart")
        assert cache_dump(topics) != undisturbed

        until(lambda: cache_dump(topics) == undisturbed, 30, "the cache did not heal")
        assert "event=redis_restarted" in workers.text()[offset:]
        until(lambda: known_good(client), 30, "the heal did not record this run")
    finally:
        client.close()


def test_a_cache_known_good_under_this_redis_is_left_alone(
    topics: Settings, pipeline: dict[str, Service]
) -> None:
    workers = pipeline["workers"]
    client = redis.Redis.from_url(topics.redis_url)
    try:
        until(lambda: known_good(client), 30, "the workers never checked Redis's run id")
    finally:
        client.close()
    offset = len(workers.text())
    deadline = time.monotonic() + 2.5  # the check runs every second: two of them or more
    while time.monotonic() < deadline:
        assert "event=redis_restarted" not in workers.text()[offset:]
        time.sleep(0.1)
