"""`parley stack` is idempotent, restarts the dead, and fails clearly on bad ground.

These tests run their own Redis and PostgreSQL instances in a temporary state folder
on spare ports, so the shared stack the other tests use is never disturbed.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.servers import free_port
from infra.objectstore import ObjectStore
from infra.settings import Settings
from infra.stack import StackError, State
from infra.stack.objectstore import PORT_OFFSETS, ObjectStoreService
from infra.stack.postgres import Postgres
from infra.stack.redis import Redis
from parley.services import parley_services


@pytest.fixture
def private(settings: Settings) -> Iterator[Settings]:
    # Under the project's state folder: the `postgres` user can reach it, unlike /tmp's.
    state = Path(settings.state_dir) / "tests" / uuid.uuid4().hex[:8]
    state.mkdir(parents=True)
    private = settings.replace(
        state_dir=str(state),
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        pg_port=free_port(),
        health_deadline_s=30.0,
        managed_services="redis,postgres",  # whatever the environment leaves external
    )
    yield private
    for service in (Redis(private), Postgres(private)):
        service.down()
    shutil.rmtree(state, ignore_errors=True)


def test_up_twice_starts_once_and_down_stops(private: Settings) -> None:
    redis = Redis(private)
    assert redis.up() is True
    pid = redis.pid()
    assert redis.status().state is State.HEALTHY
    assert redis.up() is False  # already running: nothing started twice
    assert redis.pid() == pid
    redis.down()
    assert redis.status().state is State.STOPPED


def test_a_dead_service_is_restarted(private: Settings) -> None:
    redis = Redis(private)
    redis.up()
    old = redis.pid()
    assert old is not None
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while redis.pid() is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert redis.status().state is State.STOPPED
    assert redis.up() is True
    assert redis.pid() not in (None, old)
    assert redis.status().state is State.HEALTHY


def test_a_taken_port_is_named_and_nothing_is_left_running(private: Settings) -> None:
    redis = Redis(private)
    host, port = redis.host_port
    with socket.socket() as squatter:
        squatter.bind((host, port))
        squatter.listen()
        with pytest.raises(StackError, match=rf"port {host}:{port} is already taken"):
            redis.up()
    assert redis.pid() is None


def test_a_corrupt_postgres_state_folder_is_refused(private: Settings) -> None:
    postgres = Postgres(private)
    postgres.data.mkdir(parents=True)
    (postgres.data / "garbage").write_text("not a cluster")
    with pytest.raises(StackError, match="corrupt state"):
        postgres.up()
    assert postgres.pid() is None


def test_a_broken_service_fails_with_its_log_named(private: Settings) -> None:
    redis = Redis(private.replace(health_deadline_s=5.0))
    # A config the server rejects: it exits at once, and the error names the log.
    redis.home.mkdir(parents=True)
    original = redis.prepare

    def bad_prepare() -> None:
        original()
        with (redis.home / "redis.conf").open("a") as conf:
            conf.write("no-such-directive yes\n")

    redis.prepare = bad_prepare  # type: ignore[method-assign]
    with pytest.raises(StackError, match=rf"not healthy within.*{redis.log}"):
        redis.up()
    assert redis.pid() is None


def test_status_command_reports_the_shared_stack(settings: Settings) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "parley.cli", "stack", "status"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line.split()[:2] for line in done.stdout.splitlines()]
    servers, own = dict(rows[:4]), dict(rows[4:])
    assert set(servers) == {"postgres", "redis", "kafka", "objectstore"}
    assert set(servers.values()) <= {"healthy", "external"}, servers
    # Then Parley's own processes, each instance: stopped ones do not fail the status.
    assert set(own) == {service.name for service in parley_services(settings)}


def _spare_port_run(length: int) -> int:
    """A port with the `length` ports above it free too (the object store's ports), below
    the kernel's ephemeral range, which a load test's client sockets may fill."""
    for base in random.sample(range(20_000, 32_000, length + 1), 200):
        if all(_free(base + i) for i in range(length + 1)):
            return base
    raise AssertionError("no run of free ports")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def test_the_object_store_starts_once_keeps_objects_and_stops(settings: Settings) -> None:
    state = Path(settings.state_dir) / "tests" / uuid.uuid4().hex[:8]
    port = _spare_port_run(max(PORT_OFFSETS.values()))
    private = settings.replace(
        state_dir=str(state),
        s3_endpoint=f"http://127.0.0.1:{port}",
        s3_bucket="lifecycle",
        managed_services="objectstore",
        health_deadline_s=60.0,
    )
    store = ObjectStoreService(private)
    try:
        assert store.up() is True
        assert store.status().state is State.HEALTHY
        objects = ObjectStore(private)  # the bucket was created by the health check
        await objects.put("a/b", b"kept")
        assert store.up() is False
        head = await objects.head("a/b")
        assert head is not None and head.size == 4
        store.down()
        assert store.status().state is State.STOPPED
        assert store.up() is True  # the data folder outlives the process
        assert await objects.head("a/b") is not None
    finally:
        store.down()
        shutil.rmtree(state, ignore_errors=True)
