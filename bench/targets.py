"""The servers a load generator can be pointed at, and how to get users on each.

- `parley`: Parley's services (private ones, `bench.stack`, or those of
  `parley up`); users are sessions issued straight into Redis.
- `echo`: the WebSocket baseline (`bench.echo`); a user id is its own token.
- `ejabberd`: the peer (`bench.ejabberd`), over XMPP on WebSocket.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.driver import issue_accounts
from bench.procfs import children, server_processes
from infra.settings import Settings


@dataclass
class Target:
    """One server under test: where it is, how to make users, which processes serve it."""

    name: str
    kind: str  # the load generator's peer kind: parley or xmpp
    base: str
    accounts: Callable[[int], list[list[str]]]
    processes: Callable[[], dict[str, list[int]]]
    spec: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, str] = field(default_factory=dict)  # name -> base URL of /metrics
    settle_s: float = Settings.bench_settle_s  # the pause before a measured window


def parley_target(
    settings: Settings,
    base: str | None = None,
    processes: Callable[[], dict[str, list[int]]] | None = None,
    metrics: dict[str, str] | None = None,
) -> Target:
    """Parley at `base` (default: the settings' commands service), users issued in Redis;
    `metrics`: where its services' `/metrics` are (`infra.metrics_http.metrics_urls` for
    `parley up`'s; none: not scraped)."""
    web = base or f"http://{settings.commands_host}:{settings.commands_port}"
    return Target(
        "parley",
        "parley",
        web,
        lambda n: issue_accounts(settings, n),
        processes or (lambda: server_processes(settings)),
        metrics=metrics or {},
        settle_s=settings.bench_settle_s,
    )


def echo_target(base: str, pid: int, settle_s: float) -> Target:
    def accounts(n: int) -> list[list[str]]:
        users = [str(uuid.uuid4()) for _ in range(n)]
        return [[u, "bench", u] for u in users]

    processes = lambda: {"echo": [pid, *children(pid)]}  # noqa: E731
    return Target("echo", "parley", base, accounts, processes, settle_s=settle_s)


def server_cpu_groups(groups: dict[str, list[int]]) -> list[str]:
    """The groups whose CPU is charged to the server (not other tenants, not the generator)."""
    return [g for g in groups if g not in ("postgres_other", "loadgen")]
