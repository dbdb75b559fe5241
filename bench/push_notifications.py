"""`parley bench push`: the notifier against a local Web Push receiver.

Private copies of the processor, relay, workers, commands service and notifier
(`bench.stack`) run with Web Push on; a receiver in this process answers 201 to every
push and notes when it arrived (it does not decrypt: the receiver's cost is not the
notifier's). Recipients are sessions issued in Redis whose targets are written straight
into `push.targets`; none of them is online, so every message is pushed.

- `latency`: senders over WebSockets (`bench.push_senders`, a process of their own)
  send `rate` messages a second for `seconds`, each to a recipient of its own;
  commit->push is from the send's ack (the event is stored) to the push's arrival,
  reported as measured and less the grace period.
- `throughput`: group messages to `pushes` recipients in all, sent at once; pushes/s is
  their number over the time from the first arrival to the last.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench.driver import issue_accounts
from bench.servers import free_port
from bench.stack import private_resources, started
from bench.stats import summary
from infra.http import serve
from infra.push.webpush import b64url, raw_public_key
from infra.settings import ROOT, Settings
from projections.push_store import register_target

GRACE_S = 1.0
SENDERS = 25  # each under the per-connection send limit (5/s) at 100 messages/s
GROUP_MEMBERS = 255  # plus the sender: the largest group (`max_group_members`)

Say = Callable[[str], None]


class Receiver:
    """Answers 201 to every push; keeps the arrival time per device."""

    def __init__(self) -> None:
        self.port = free_port("127.0.0.1")
        self.arrivals: dict[str, float] = {}
        self._stop = threading.Event()

        async def push(request: Request) -> Response:
            await request.body()
            self.arrivals.setdefault(request.path_params["device"], time.time())
            return Response(status_code=201)

        app = Starlette(routes=[Route("/wp/{device}", push, methods=["POST"])])
        args = (app, "bench_receiver", "127.0.0.1", self.port, self._stop)
        threading.Thread(target=serve, args=args, daemon=True).start()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def endpoint(self, device: str) -> str:
        return f"{self.origin}/wp/{device}"

    def stop(self) -> None:
        self._stop.set()


def run(
    settings: Settings, workdir: Path, say: Say, rate: int, seconds: float, pushes: int
) -> dict[str, Any]:
    """Both measurements on one private stack (see the module's docstring)."""
    receiver = Receiver()
    env = {
        "PARLEY_WEBPUSH_SUBJECT": "mailto:bench@parley.test",
        "PARLEY_WEBPUSH_VAPID_KEY": str(workdir / "vapid.pem"),
        "PARLEY_WEBPUSH_TRUSTED_ORIGINS": receiver.origin,  # on loopback: let it through
        "PARLEY_PUSH_GRACE_S": str(GRACE_S),
        "PARLEY_PUSH_POLL_S": "0.02",
    }
    names = ["processor", "relay", "workers", "commands", "notifier"]
    try:
        with private_resources(settings) as bench:
            say("starting private copies of processor, relay, workers, commands and notifier")
            with started(bench, workdir, names, env) as services:
                latency_n = int(rate * seconds)
                groups = -(-pushes // GROUP_MEMBERS)
                say(f"issuing {latency_n + groups * GROUP_MEMBERS + SENDERS + groups} sessions")
                recipients = issue_accounts(bench, latency_n + groups * GROUP_MEMBERS)
                senders = issue_accounts(bench, SENDERS + groups)
                say(f"registering {len(recipients)} Web Push targets")
                asyncio.run(_targets(bench, receiver, recipients))
                return _measure(
                    workdir,
                    services.base,
                    receiver,
                    senders,
                    recipients,
                    latency_n,
                    rate,
                    groups,
                    say,
                )
    finally:
        receiver.stop()


async def _targets(settings: Settings, receiver: Receiver, recipients: list[list[str]]) -> None:
    connect = psycopg.AsyncConnection.connect(settings.pg_conninfo, autocommit=True)
    async with await connect as conn, conn.transaction():
        for user_id, device, _ in recipients:
            key = ec.generate_private_key(ec.SECP256R1())
            target = {
                "endpoint": receiver.endpoint(user_id),
                "keys": {
                    "p256dh": b64url(raw_public_key(key.public_key())),
                    "auth": b64url(os.urandom(16)),
                },
            }
            await register_target(conn, UUID(user_id), device, "webpush", target)


def _senders(workdir: Path, phase: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Run one phase of `bench.push_senders` in its own process; its JSON answer."""
    path = workdir / f"senders-{phase}.json"
    path.write_text(json.dumps(spec))
    with (workdir / f"senders-{phase}.log").open("wb") as log:
        done = subprocess.run(
            [sys.executable, "-m", "bench.push_senders", phase, str(path)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=log,
            check=True,
            timeout=600,
        )
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def _measure(
    workdir: Path,
    base: str,
    receiver: Receiver,
    senders: list[list[str]],
    recipients: list[list[str]],
    latency_n: int,
    rate: int,
    groups: int,
    say: Say,
) -> dict[str, Any]:
    say(f"latency: {latency_n} messages at {rate}/s, each to an offline recipient")
    spec = {
        "base": base,
        "senders": senders[:SENDERS],
        "recipients": [r[0] for r in recipients[:latency_n]],
        "rate": rate,
    }
    acked: dict[str, float] = _senders(workdir, "latency", spec)["acked"]
    _until(lambda: all(r in receiver.arrivals for r in acked), 60 + GRACE_S)
    arrived = receiver.arrivals
    delays_ms = [1000 * (arrived[r] - t) for r, t in acked.items() if r in arrived]

    say(f"throughput: {groups} group messages to {groups * GROUP_MEMBERS} offline members")
    members = [m[0] for m in recipients[latency_n:]]
    lists = [members[g * GROUP_MEMBERS : (g + 1) * GROUP_MEMBERS] for g in range(groups)]
    _senders(workdir, "groups", {"base": base, "senders": senders[SENDERS:], "groups": lists})
    fanned = [m for ids in lists for m in ids]
    _until(lambda: all(m in receiver.arrivals for m in fanned), 120 + GRACE_S)
    times = sorted(receiver.arrivals[m] for m in fanned if m in receiver.arrivals)
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    latency = summary(delays_ms)
    return {
        "grace_s": GRACE_S,
        "latency": {
            "messages": latency_n,
            "rate": rate,
            "pushed": len(delays_ms),
            "commit_to_push_ms": latency,
            "after_grace_ms": {
                k: v if k == "count" else round(v - 1000 * GRACE_S, 2) for k, v in latency.items()
            },
        },
        "throughput": {
            "pushes": len(times),
            "expected": len(fanned),
            "span_s": round(span, 3),
            "pushes_per_s": round(len(times) / span, 1) if span else None,
        },
    }


def _until(done: Callable[[], bool], deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while not done() and time.monotonic() < deadline:
        time.sleep(0.05)
