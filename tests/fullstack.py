"""The whole of Parley as real processes for end-to-end tests: every service on free ports.

`full_stack(settings, logs)` starts the processor, relay, workers, the commands service
(with the web client) and, when this tree has it, the queries service; it yields where
they listen. Browsers may open the WebSocket from the commands service's own origin.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis

from bench.servers import free_port
from infra.settings import Settings
from tests.gateway.conftest import GENEROUS_LIMITS
from tests.services import Service, running, stop_together


def has_queries_service() -> bool:
    try:
        import queries.service  # noqa: F401
    except ImportError:
        return False
    return True


NO_BALANCER = {"PARLEY_GATEWAY_DRAIN_NOTICE_S": "0"}
"""Once asked `/healthz`, a SIGTERMed gateway gives the balancer in front of it 5 s to see
it draining before it closes its connections: with none in front, each stop waited
those 5 s for nothing."""


@dataclass
class FullStack:
    settings: Settings  # with this stack's ports
    env: dict[str, str]  # what a process needs in its environment to use this stack
    base: str  # the commands service: http://127.0.0.1:PORT
    queries: str | None  # the queries service, if it runs
    services: dict[str, Service]


@contextmanager
def full_stack(settings: Settings, logs: Path, **extra_env: str) -> Iterator[FullStack]:
    commands_port, queries_port = free_port(), free_port()
    base = f"http://127.0.0.1:{commands_port}"
    env = {
        **GENEROUS_LIMITS,
        "PARLEY_COMMANDS_PORT": str(commands_port),
        "PARLEY_QUERIES_PORT": str(queries_port),
        "PARLEY_WS_ALLOWED_ORIGINS": f"{base},http://localhost:{commands_port}",
        **NO_BALANCER,
        **extra_env,
    }
    with_queries = has_queries_service()
    names = ["processor", "relay", "workers", "commands"] + (["queries"] if with_queries else [])
    ready = {
        "processor": r"partitions_assigned partitions=\[\d",
        "relay": r"event=relay_active",
        "workers": r"Worker ready",
        "commands": r"event=commands_listening",
        "queries": r"event=queries_listening",
    }
    with ExitStack() as stack:
        services = {n: stack.enter_context(running(n, logs / f"{n}.log", env)) for n in names}
        for name, service in services.items():
            service.wait_for_log(ready[name], deadline_s=90)
        try:
            yield FullStack(
                settings.replace(commands_port=commands_port, queries_port=queries_port),
                env,
                base,
                f"http://127.0.0.1:{queries_port}" if with_queries else None,
                services,
            )
        finally:
            stop_together(services.values())
            _reset_rate_limits(settings)


def _reset_rate_limits(settings: Settings) -> None:
    """Forget the buckets this stack filled under its generous limits: the tests after
    it (with the default limits) share the address 127.0.0.1 and this Redis database."""
    client = redis.Redis.from_url(settings.redis_url)
    try:
        keys = list(client.scan_iter(match="parley:rate:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
