"""Snowflake worker leases in the real Redis: never shared, never used once expired."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from domain.ids import snowflake_parts
from infra.leases import PREFIX, LeasedSnowflake, LeaseLost, WorkerLease
from infra.settings import Settings


@pytest.fixture
def client(settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.redis_url)
    for key in client.scan_iter(PREFIX + "*"):
        client.delete(key)
    yield client
    client.close()


def test_live_leases_never_share_a_worker_id(client: redis.Redis) -> None:
    leases = [WorkerLease(client) for _ in range(20)]
    ids = [lease.acquire() for lease in leases]
    assert len(set(ids)) == 20
    generators = [LeasedSnowflake(lease) for lease in leases]
    workers = {snowflake_parts(g.next_id())[1] for g in generators}
    assert workers == set(ids)
    for lease in leases:
        lease.release()
    assert not list(client.scan_iter(PREFIX + "*"))


def test_a_released_id_is_reused(client: redis.Redis) -> None:
    first = WorkerLease(client)
    taken = first.acquire()
    first.release()
    second = WorkerLease(client)
    assert second.acquire() == taken
    second.release()


def test_an_expired_lease_refuses_to_generate(client: redis.Redis) -> None:
    lease = WorkerLease(client, ttl_ms=200)
    lease.acquire()
    generator = LeasedSnowflake(lease)
    generator.next_id()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            generator.next_id()
        except LeaseLost:
            break
        time.sleep(0.02)
    else:
        pytest.fail("an expired lease kept generating ids")
    # Another process may now hold that id; renewing moves this one to a free id.
    other = WorkerLease(client)
    assert other.acquire() == lease.worker_id
    lease.renew()
    assert lease.worker_id != other.worker_id
    assert snowflake_parts(generator.next_id())[1] == lease.worker_id
    lease.release()
    other.release()


def test_renewal_keeps_a_lease_alive(client: redis.Redis) -> None:
    lease = WorkerLease(client, ttl_ms=300)
    lease.acquire()
    lease.start_renewing()
    generator = LeasedSnowflake(lease)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        generator.next_id()  # never raises while renewed
        time.sleep(0.02)
    assert client.get(PREFIX + str(lease.worker_id)) == lease.token.encode()
    lease.release()
