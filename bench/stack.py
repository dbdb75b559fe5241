"""Parley's services, privately, for one benchmark run (`--stack own`, the default).

The processor, relay, workers and commands service are started as `parley serve`
subprocesses on the shared Kafka, PostgreSQL and Redis, with a database
(`<pg_db>_bench_<id>`), topics (`bench-<id>.` prefix) and consumer groups of their own,
all removed afterwards, and a Redis database (`bench_redis_db`, flushed), so that
neither a developer's data nor other engineers' test runs share their work, and /proc
tells exactly which processes served the run. Rate limits stay at their defaults.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis

from bench.procfs import children, stack_processes
from bench.servers import free_port, spawned
from infra.metrics_http import BACKGROUND
from infra.scratch import delete_topics, drop_database, fresh_database, redis_db
from infra.settings import Settings
from infra.topics import ensure_topics
from projections.cache_heal import run_key

READY = {
    "processor": r"partitions_assigned partitions=\[\d",
    "relay": r"event=relay_active",
    "workers": r"Worker ready",
    "commands": r"event=commands_listening",
    "notifier": r"event=notifier_ready",
    "balancer": r"event=balancer_synced gateways=[1-9]",
}


@dataclass(frozen=True)
class Services:
    """A running private copy of Parley's services."""

    settings: Settings
    base: str
    pids: dict[str, int]
    metrics: dict[str, str]  # name -> the base URL of its `/metrics`

    def processes(self) -> dict[str, list[int]]:
        groups = {name: [pid, *children(pid)] for name, pid in self.pids.items()}
        return {**groups, **stack_processes(self.settings)}


def bench_settings(settings: Settings, run_id: str) -> Settings:
    return settings.replace(
        pg_db=f"{settings.pg_db}_bench_{run_id}",
        redis_url=redis_db(settings.redis_url, settings.bench_redis_db),
        topic_prefix=f"bench-{run_id}.",
        processor_group=f"bench-{run_id}-processor",
        workers_app_id=f"bench-{run_id}-workers",
        commands_port=free_port(settings.commands_host),
    )


def environment(settings: Settings) -> dict[str, str]:
    names = (
        "pg_db",
        "redis_url",
        "topic_prefix",
        "processor_group",
        "workers_app_id",
        "events_publisher",
    )
    env = {f"PARLEY_{n.upper()}": str(getattr(settings, n)) for n in names}
    env["PARLEY_COMMANDS_PORT"] = str(settings.commands_port)
    return env


@contextmanager
def _service(name: str, env: dict[str, str], log: Path) -> Iterator[int]:
    service = name.split("-")[0]  # workers-2: a second workers process
    argv = [sys.executable, "-m", "parley.cli", "serve", service]
    with spawned(argv, log, READY[service], env, "", start_s=90) as server:
        yield server.pid


def _metrics_ports(bench: Settings, names: list[str]) -> dict[str, int]:
    """A free port for each service's `/metrics`: the one gateway's is its own port, and
    gateway `commands-i` (behind a balancer, `bench.balanced`) gets a free one."""
    host = bench.metrics_host
    return {
        name: bench.commands_port if name == "commands" else free_port(host)
        for name in names
        if name.split("-")[0] in ("commands", *BACKGROUND)
    }


@contextmanager
def private_services(settings: Settings, workdir: Path, workers: int = 1) -> Iterator[Services]:
    """Start the four services with their own database, Redis db, topics and groups.

    `workers` Faust worker processes share the projection's partitions (scaling out).
    """
    names = (
        ["processor", "relay", "workers"]
        if settings.events_publisher == "relay"
        else [
            "processor",
            "workers",
        ]
    )
    names += [f"workers-{n}" for n in range(2, workers + 1)] + ["commands"]
    with private_resources(settings) as bench, started(bench, workdir, names) as services:
        yield services


def fresh_cache(url: str) -> None:
    """Empty the run's Redis database, and mark the empty cache as good under the Redis
    server running now. Without the mark the workers take the empty database for a Redis
    that lost its data (`projections/cache_heal.py`) and apply the whole log to the cache a
    second time, beside their live batches: the projection benchmark's backlog would be
    projected twice."""
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
        client.set(run_key(), str(client.info("server")["run_id"]))
    finally:
        client.close()


@contextmanager
def private_resources(settings: Settings) -> Iterator[Settings]:
    """A database, Redis db, topics and consumer groups of a run's own, removed after."""
    bench = bench_settings(settings, uuid.uuid4().hex[:8])
    fresh_database(settings, bench.pg_db)
    fresh_cache(bench.redis_url)
    ensure_topics(bench)
    try:
        yield bench
    finally:
        delete_topics(bench)
        drop_database(settings, bench.pg_db)


@contextmanager
def started(
    bench: Settings, workdir: Path, names: list[str], extra_env: dict[str, str] | None = None
) -> Iterator[Services]:
    """`parley serve NAME` for each name on `bench`'s resources, until the block ends."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**environment(bench), **(extra_env or {})}
    ports = _metrics_ports(bench, names)

    def own(name: str) -> dict[str, str]:
        kind = name.split("-")[0]
        if kind == "commands" and name in ports:
            return {**env, "PARLEY_COMMANDS_PORT": str(ports[name])}
        if kind not in BACKGROUND:
            return env
        return {**env, f"PARLEY_{kind.upper()}_METRICS_PORT": str(ports[name])}

    with ExitStack() as stack:
        pids = {
            name: stack.enter_context(_service(name, own(name), workdir / f"{name}.log"))
            for name in names
        }
        metrics = {name: f"http://{bench.metrics_host}:{port}" for name, port in ports.items()}
        base = f"http://{bench.commands_host}:{bench.commands_port}"
        yield Services(bench, base, pids, metrics)
