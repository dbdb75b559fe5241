"""The race against ejabberd: the same scenarios, sizes and rates, over XMPP."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.ejabberd import Ejabberd, ejabberd_instance
from bench.scenarios import Say, oneone, ramp
from bench.targets import Target
from bench.xmpp import xmpp_accounts
from infra.settings import Settings


@contextmanager
def ejabberd_target(settings: Settings, say: Say) -> Iterator[tuple[Target, Ejabberd]]:
    say("starting ejabberd (its own node and configuration, loopback only)")
    with ejabberd_instance(settings) as server:
        prefix = f"u{uuid.uuid4().hex[:6]}-"
        target = Target(
            "ejabberd",
            "xmpp",
            server.url,
            lambda n: xmpp_accounts(prefix, n, server.domain),
            server.processes,
            {"domain": server.domain},
            settle_s=settings.bench_settle_s,
        )
        yield target, server


def peer_oneone(settings: Settings, workdir: Path, say: Say, **params: Any) -> dict[str, Any]:
    """`oneone` against ejabberd."""
    with ejabberd_target(settings, say) as (target, server):
        figures = oneone(target, workdir, say, **params)
        figures["version"] = server.version
        return figures


def peer_ramp(
    settings: Settings,
    workdir: Path,
    say: Say,
    rates: Sequence[float],
    **params: Any,
) -> dict[str, Any]:
    """`ramp` against ejabberd."""
    with ejabberd_target(settings, say) as (target, server):
        figures = ramp(target, workdir, say, rates=rates, **params)
        figures["version"] = server.version
        return figures
