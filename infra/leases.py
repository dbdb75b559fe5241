"""Leased Snowflake worker ids: two live processes never share one.

A process claims ``parley:snowflake:worker:<n>`` in Redis with SET NX and a TTL, and
renews it from a background thread. It refuses to hand out ids once its own view of
the lease has run out (a paused process whose lease another took cannot collide),
and re-claims or moves to a new worker id if the lease was lost.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid

import redis

from domain.ids import MAX_WORKER_ID, Snowflake

log = logging.getLogger("parley.leases")

PREFIX = "parley:snowflake:worker:"

# Renew only if the key still holds our token: compare-and-extend.
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


class LeaseLost(RuntimeError):
    """This process no longer holds its worker id; it must not generate ids."""


class WorkerLease:
    """One worker id held in Redis for as long as this process renews it."""

    def __init__(self, client: redis.Redis, ttl_ms: int = 15_000) -> None:
        self.client = client
        self.ttl_ms = ttl_ms
        self.token = uuid.uuid4().hex
        self.worker_id = -1
        self._valid_until = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def acquire(self) -> int:
        """Claim the first free worker id; raise if all 1024 are taken."""
        start = time.monotonic()
        for worker_id in range(MAX_WORKER_ID + 1):
            if self.client.set(PREFIX + str(worker_id), self.token, nx=True, px=self.ttl_ms):
                self.worker_id = worker_id
                self._valid_until = start + self.ttl_ms / 1000
                log.info("event=lease_acquired worker_id=%d", worker_id)
                return worker_id
        raise RuntimeError("no free Snowflake worker id: 1024 live processes hold them all")

    def start_renewing(self) -> None:
        self._thread = threading.Thread(target=self._renew_loop, name="lease", daemon=True)
        self._thread.start()

    def check(self) -> None:
        """Raise LeaseLost unless the lease is certainly still ours."""
        if time.monotonic() >= self._valid_until:
            raise LeaseLost(f"Snowflake worker id {self.worker_id} lease expired")

    def renew(self) -> None:
        start = time.monotonic()
        key = PREFIX + str(self.worker_id)
        if self._renew(keys=[key], args=[self.token, self.ttl_ms]):
            self._valid_until = start + self.ttl_ms / 1000
            return
        # Lost (Redis restarted, or we were paused past the TTL): take it back if free.
        if self.client.set(key, self.token, nx=True, px=self.ttl_ms):
            self._valid_until = start + self.ttl_ms / 1000
            log.warning("event=lease_reclaimed worker_id=%d", self.worker_id)
            return
        log.warning("event=lease_lost worker_id=%d", self.worker_id)
        self.acquire()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl_ms / 3000):
            try:
                self.renew()
            except redis.RedisError as exc:
                log.warning("event=lease_renew_failed error=%s", type(exc).__name__)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with contextlib.suppress(redis.RedisError):
            self._release(keys=[PREFIX + str(self.worker_id)], args=[self.token])


class LeasedSnowflake:
    """A Snowflake generator that only hands out ids while its worker lease holds."""

    def __init__(self, lease: WorkerLease) -> None:
        self.lease = lease
        self._generator = Snowflake(lease.worker_id)

    def next_id(self) -> int:
        self.lease.check()
        if self._generator.worker_id != self.lease.worker_id:
            self._generator = Snowflake(self.lease.worker_id)
        return self._generator.next_id()
