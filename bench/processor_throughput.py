"""Benchmark of the write path: commands decided and stored per second, and ack latency.

Runs against the local stack with its own database and topics, so a developer's data
is untouched: one `parley serve processor` subprocess, and a load generator (the same
CommandBus the gateway uses) in this process.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import uvloop

from commands.command import Command, CommandType, Outcome, encode_body
from commands.gateway.bus import CommandBus
from domain.ids import direct_chat_id
from infra.settings import ROOT, Settings
from infra.topics import ensure_topics
from projections.directory import enrol_stand_ins
from projections.schema import migrate


def _send(
    chat_id: uuid.UUID, actor: uuid.UUID, local_id: str, reply_to: str, to: uuid.UUID | None = None
) -> Command:
    args: dict[str, Any] = {"local_id": local_id, "kind": "text", "body": encode_body(b"x" * 100)}
    if to is not None:
        args["to"] = str(to)
    return Command(CommandType.SEND, chat_id, actor, args, device_id="bench", reply_to=reply_to)


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def throughput(
    bus: CommandBus,
    commands: list[Command],
    in_flight: int,
    outcomes: dict[int, Outcome] | None = None,
) -> dict[str, Any]:
    """Submit every command, `in_flight` at a time; its figures (and each outcome, by the
    command's index, into `outcomes`)."""
    gate = asyncio.Semaphore(in_flight)
    latencies: list[float] = []
    errors = 0

    async def one(index: int, command: Command) -> None:
        nonlocal errors
        async with gate:
            start = time.perf_counter()
            outcome = await bus.submit(command, timeout_s=60)
            latencies.append((time.perf_counter() - start) * 1000)
            if not outcome.ok:
                errors += 1
            if outcomes is not None:
                outcomes[index] = outcome

    start = time.perf_counter()
    await asyncio.gather(*(one(i, c) for i, c in enumerate(commands)))
    elapsed = time.perf_counter() - start
    return {
        "commands": len(commands),
        "seconds": round(elapsed, 3),
        "per_second": round(len(commands) / elapsed),
        "errors": errors,
        "ack_ms_p50": round(_percentile(latencies, 50), 2),
        "ack_ms_p99": round(_percentile(latencies, 99), 2),
    }


async def at_rate(
    bus: CommandBus,
    make: Any,
    rate: int,
    seconds: float,
    outcomes: dict[int, Outcome] | None = None,
) -> dict[str, Any]:
    """`make(i)` for i in 0..rate * seconds, paced at `rate` a second; the ack figures (and
    each outcome, by i, into `outcomes`)."""
    latencies: list[float] = []
    errors = 0
    tasks = []

    async def one(index: int, command: Command) -> None:
        nonlocal errors
        start = time.perf_counter()
        outcome = await bus.submit(command, timeout_s=60)
        latencies.append((time.perf_counter() - start) * 1000)
        if not outcome.ok:
            errors += 1
        if outcomes is not None:
            outcomes[index] = outcome

    total = int(rate * seconds)
    begin = time.perf_counter()
    for i in range(total):
        due = begin + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, make(i))))
    await asyncio.gather(*tasks)
    return {
        "rate": rate,
        "commands": total,
        "errors": errors,
        "ack_ms_p50": round(_percentile(latencies, 50), 2),
        "ack_ms_p95": round(_percentile(latencies, 95), 2),
        "ack_ms_p99": round(_percentile(latencies, 99), 2),
        "ack_ms_max": round(max(latencies), 2),
        "ack_ms_mean": round(statistics.fmean(latencies), 2),
    }


async def _scenarios(
    settings: Settings, messages: int, rate: int, seconds: float
) -> dict[str, Any]:
    bus = CommandBus(settings, reply_to=f"bench-{uuid.uuid4().hex[:8]}")
    await bus.start()
    try:
        pairs = [(uuid.uuid4(), uuid.uuid4()) for _ in range(200)]
        enrol_stand_ins(settings.pg_conninfo, [user for pair in pairs for user in pair])
        warm = [_send(direct_chat_id(a, b), a, "warm", bus.reply_to, to=b) for a, b in pairs]
        await throughput(bus, warm, 200)
        many = [
            _send(direct_chat_id(a, b), a, f"m{i}", bus.reply_to, to=b)
            for i in range(messages // len(pairs))
            for a, b in pairs
        ]
        results: dict[str, Any] = {"many_chats": await throughput(bus, many, 2000)}

        admin = uuid.uuid4()
        members = [uuid.uuid4() for _ in range(49)]
        group = uuid.uuid4()
        created = await bus.submit(
            Command(
                CommandType.CREATE_GROUP,
                group,
                admin,
                {"name": "bench", "members": [str(m) for m in members]},
                reply_to=bus.reply_to,
            )
        )
        assert created.ok, created
        senders = [admin, *members]
        hot = [_send(group, senders[i % 50], f"h{i}", bus.reply_to) for i in range(messages // 4)]
        results["hot_chat"] = await throughput(bus, hot, 2000)

        def make(i: int) -> Command:
            a, b = pairs[i % len(pairs)]
            return _send(direct_chat_id(a, b), a, f"r{i}", bus.reply_to, to=b)

        results["latency_at_rate"] = await at_rate(bus, make, rate, seconds)
        return results
    finally:
        await bus.stop()


@contextmanager
def private_processor(settings: Settings) -> Iterator[Settings]:
    """A `parley serve processor` subprocess on a database and topics of its own; the
    settings to reach them (stopped on leaving)."""
    run_id = uuid.uuid4().hex[:8]
    bench = settings.replace(pg_db=f"{settings.pg_db}_bench", topic_prefix=f"bench-{run_id}.")
    admin = settings.replace(pg_db="postgres").pg_conninfo
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{bench.pg_db}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{bench.pg_db}"')
    migrate(bench)
    ensure_topics(bench)
    env = {**os.environ, "PARLEY_PG_DB": bench.pg_db, "PARLEY_TOPIC_PREFIX": bench.topic_prefix}
    log = Path(settings.state_dir) / "bench" / f"processor-{run_id}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "parley.cli", "serve", "processor"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while "partitions_assigned partitions=[" not in log.read_text():
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"processor did not start; see {log}")
            time.sleep(0.1)
        yield bench
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def run(
    settings: Settings, messages: int = 20_000, rate: int = 1_000, seconds: float = 10.0
) -> dict[str, Any]:
    """Run the write-path benchmark against the local stack; return its figures."""
    with private_processor(settings) as bench:
        results = uvloop.run(_scenarios(bench, messages, rate, seconds))
    return {"scenario": "processor", "messages": messages, **results}
