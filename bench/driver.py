"""The `parley bench` side of the load generators: start them, command them, merge them.

Each generator is `python -m bench.loadgen SPEC` with a line protocol on its
stdin/stdout (see `bench.loadgen`). Accounts for Parley are sessions issued
straight into Redis (`infra.auth.Tokens.issue`), as the gateway tests do, so that a
thousand users cost no thousand argon2 hashes.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from infra.auth import Tokens
from infra.settings import ROOT, Settings
from projections.directory import enrol_stand_ins

SAMPLE_KEYS = (
    "ack_ms",
    "delivered_ms",
    "last_member_ms",
    "receipt_ms",
    "to_event_ms",
    "event_to_delivered_ms",
)


async def _issue(settings: Settings, count: int, device: str) -> list[list[str]]:
    redis = aioredis.Redis.from_url(settings.redis_url)
    tokens = Tokens(settings, redis)
    out: list[list[str]] = []
    try:
        for start in range(0, count, 50):
            users = [uuid.uuid4() for _ in range(min(50, count - start))]
            await asyncio.to_thread(enrol_stand_ins, settings.pg_conninfo, users)
            pairs = await asyncio.gather(*(tokens.issue(u, device) for u in users))
            out.extend([str(u), device, p.access_token] for u, p in zip(users, pairs, strict=True))
    finally:
        await redis.aclose()
    return out


def issue_accounts(settings: Settings, count: int, device: str = "bench") -> list[list[str]]:
    """`count` fresh users, each with a session: [user_id, device_id, access_token]."""
    return asyncio.run(_issue(settings, count, device))


class Generator:
    """One load generator process."""

    def __init__(self, spec: dict[str, Any], workdir: Path, name: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.spec_path = workdir / f"{name}.json"
        self.spec_path.write_text(json.dumps(spec))
        self.log_path = workdir / f"{name}.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bench.loadgen", str(self.spec_path)],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        self.ready = self.read()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def write(self, command: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"load generator exited; its log ends:\n{tail}")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.write({"cmd": "quit"})
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(timeout=10)


class Fleet:
    """Several generators commanded together."""

    def __init__(self, generators: Sequence[Generator]) -> None:
        self.generators = list(generators)

    @property
    def pids(self) -> list[int]:
        return [g.pid for g in self.generators]

    def ask(self, command: dict[str, Any]) -> list[dict[str, Any]]:
        for generator in self.generators:
            generator.write(command)
        return [generator.read() for generator in self.generators]

    def connect(self) -> dict[str, Any]:
        replies = self.ask({"cmd": "connect"})
        failures: dict[str, int] = {}
        for reply in replies:
            for name, n in reply["failures"].items():
                failures[name] = failures.get(name, 0) + n
        return {
            "connected": sum(r["connected"] for r in replies),
            "failed": sum(r["failed"] for r in replies),
            "failures": failures,
            "seconds": max(r["seconds"] for r in replies),
        }

    def start_traffic(self, rate: float, seconds: float, drain_s: float, tag: str) -> float:
        """Tell every generator to start its share at one moment, 0.5 s from now."""
        start = time.monotonic() + 0.5
        share = rate / len(self.generators)
        for generator in self.generators:
            generator.write(
                {
                    "cmd": "traffic",
                    "rate": share,
                    "seconds": seconds,
                    "start": start,
                    "drain_s": drain_s,
                    "tag": tag,
                }
            )
        return start

    def finish_traffic(self) -> dict[str, Any]:
        return merge([g.read() for g in self.generators])

    def close(self) -> None:
        for generator in self.generators:
            generator.close()


def merge(windows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One window from several generators' windows: counts added, samples joined."""
    merged: dict[str, Any] = {key: [] for key in SAMPLE_KEYS}
    errors: dict[str, int] = {}
    for window in windows:
        for key in SAMPLE_KEYS:
            merged[key].extend(window[key])
        for name, n in window["errors"].items():
            errors[name] = errors.get(name, 0) + n
    for key in ("sent", "acked", "deliveries", "failed", "lost", "duplicates"):
        merged[key] = sum(w[key] for w in windows)
    for key in ("redundant_pushes", "via_sync", "resent"):
        merged[key] = sum(w[key] for w in windows)
    merged["errors"] = errors
    merged["first_send"] = min(w["first_send"] for w in windows)
    merged["last_delivery"] = max(w["last_delivery"] for w in windows)
    merged["window_s"] = max(w["window_s"] for w in windows)
    merged["generator_lag_ms_p99"] = max(w["generator_lag_ms_p99"] for w in windows)
    merged["generator_lag_ms_max"] = max(w["generator_lag_ms_max"] for w in windows)
    return merged
