"""Benchmark of the queries service: history pages and chat lists, warm and cold cache.

Runs against the local stack with its own database (`<pg_db>_bench_queries`) and its own
Redis database (`BENCH_REDIS_DB`), so a developer's data is untouched. The read model is
filled by the real projector and cache code (`projections.projector`, `projections.cache`)
from events made by the domain's `Chat` aggregate: one reader with `chats` 1:1 chats of
`messages` messages each. Then a real `parley serve queries` subprocess answers an
aiohttp load generator in this process (`concurrency` requests in flight) for `seconds`
per scenario: the newest history page (50) of a random chat, and the reader's chat list
(50 of `chats`), first with Redis warm, then with the cache keys deleted (cold: every
answer from PostgreSQL). Besides requests/s and latency, each scenario reports the CPU
time the service process spent per request (from /proc), which does not depend on what
else the machine runs. `parley bench queries` runs it.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from uuid import UUID

import aiohttp
import psycopg
import redis
import redis.asyncio as aioredis
import uvloop

from domain.chat import Chat
from infra.auth import SESSION_KEY, USER_SESSIONS_KEY, Tokens
from infra.log_envelope import decode_envelope, encode_event
from infra.settings import ROOT, Settings
from projections.cache import apply_cache, chats_key, checkpoint_key, recent_key, unread_key
from projections.projector import Projector, Record
from projections.schema import migrate

BENCH_REDIS_DB = 14


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def _events(reader: UUID, chats: int, messages: int) -> tuple[list[UUID], list[UUID], list[Any]]:
    """Domain events of `chats` 1:1 chats of the reader, `messages` messages each;
    (chat ids, peers, events)."""
    chat_ids: list[UUID] = []
    peers: list[UUID] = []
    events: list[Any] = []
    for n in range(chats):
        peer = uuid.uuid4()
        peers.append(peer)
        chat = Chat.open_direct(reader, peer, opened_by=peer)
        for i in range(messages):
            sender = peer if i % 3 else reader
            chat.send(sender, "bench", f"{n}-{i}", "text", b"x" * 100, None, n << 20 | i, 0)
        chat_ids.append(chat.id)
        events.extend(chat.collect_events())
    return chat_ids, peers, events


async def _fill(settings: Settings, events: list[Any]) -> None:
    """Apply the events to the read model and the cache, as the workers would."""
    projector = Projector()
    cache = aioredis.Redis.from_url(settings.redis_url)
    conn = await psycopg.AsyncConnection.connect(settings.pg_conninfo)
    try:
        records = [
            Record(0, offset, decode_envelope(encode_event(event, offset + 1)[1]))
            for offset, event in enumerate(events)
        ]
        for start in range(0, len(records), 500):
            batch = records[start : start + 500]
            async with conn.transaction():
                await projector.apply_batch(conn, batch)
            await apply_cache(cache, conn, batch)
            await conn.commit()
    finally:
        await conn.close()
        await cache.aclose()


async def _load(
    base_url: str, token: str, paths: list[str], seconds: float, concurrency: int
) -> dict[str, Any]:
    latencies: list[float] = []
    sources: dict[str, int] = {}
    errors = 0
    headers = {"Authorization": f"Bearer {token}"}
    stop_at = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(base_url, headers=headers, connector=connector) as session:

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < stop_at:
                path = random.choice(paths)
                started = time.perf_counter()
                async with session.get(path) as answer:
                    await answer.read()
                    latencies.append((time.perf_counter() - started) * 1000)
                    if answer.status != 200:
                        errors += 1
                    source = answer.headers.get("X-Parley-Read-Source", "-")
                    sources[source] = sources.get(source, 0) + 1

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    return {
        "requests": len(latencies),
        "per_second": round(len(latencies) / elapsed),
        "ms_p50": round(_percentile(latencies, 50), 2),
        "ms_p99": round(_percentile(latencies, 99), 2),
        "errors": errors,
        "sources": sources,
    }


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _start_service(settings: Settings, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    env = {
        **os.environ,
        "PARLEY_PG_DB": settings.pg_db,
        "PARLEY_REDIS_URL": settings.redis_url,
        "PARLEY_QUERIES_PORT": "0",
        "PARLEY_QUERIES_POOL_SIZE": "10",
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "parley.cli", "serve", "queries"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        found = re.search(r"event=queries_listening host=\S+ port=(\d+)", log.read_text())
        if found:
            return proc, f"http://127.0.0.1:{found.group(1)}"
        time.sleep(0.1)
    proc.terminate()
    raise RuntimeError(f"the queries service did not start; see {log}")


def run(
    settings: Settings,
    chats: int = 200,
    messages: int = 60,
    seconds: float = 5.0,
    concurrency: int = 32,
) -> dict[str, Any]:
    """Run the queries benchmark against the local stack; return its figures."""
    run_id = uuid.uuid4().hex[:8]
    base, _, _ = settings.redis_url.rpartition("/")
    bench = settings.replace(
        pg_db=f"{settings.pg_db}_bench_queries", redis_url=f"{base}/{BENCH_REDIS_DB}"
    )
    admin = settings.replace(pg_db="postgres").pg_conninfo
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{bench.pg_db}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{bench.pg_db}"')
    migrate(bench)
    reader = uuid.uuid4()
    chat_ids, peers, events = _events(reader, chats, messages)
    started = time.perf_counter()
    uvloop.run(_fill(bench, events))
    filled_s = time.perf_counter() - started

    async def issue() -> str:
        client = aioredis.Redis.from_url(bench.redis_url)
        try:
            return (await Tokens(bench, client).issue(reader, "bench")).access_token
        finally:
            await client.aclose()

    token = uvloop.run(issue())
    log = Path(settings.state_dir) / "bench" / f"queries-{run_id}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    proc, base_url = _start_service(bench, log)
    cache = redis.Redis.from_url(bench.redis_url)
    history = [f"/v1/chats/{chat}/messages" for chat in chat_ids]
    listing = ["/v1/chats?limit=50"]
    results: dict[str, Any] = {}
    try:

        async def measured(paths: list[str]) -> dict[str, Any]:
            before = _cpu_s(proc.pid)
            figures = await _load(base_url, token, paths, seconds, concurrency)
            used = _cpu_s(proc.pid) - before
            # What the service itself spends per request, whatever else runs on the machine.
            figures["server_cpu_ms_per_request"] = round(used * 1000 / figures["requests"], 2)
            return figures

        async def scenarios(label: str) -> None:
            await _load(base_url, token, history[:10], 1.0, concurrency)  # warm up
            results[f"history_{label}"] = await measured(history)
            results[f"chat_list_{label}"] = await measured(listing)

        uvloop.run(scenarios("warm"))
        cache.delete(chats_key(reader), *(recent_key(c) for c in chat_ids))
        uvloop.run(scenarios("cold"))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        users = [reader, *peers]
        cache.delete(checkpoint_key(), *(recent_key(c) for c in chat_ids))
        cache.delete(*(chats_key(u) for u in users), *(unread_key(u) for u in users))
        session = Tokens(bench, aioredis.Redis()).decode(token).session_id
        cache.delete(
            SESSION_KEY.format(session_id=session), USER_SESSIONS_KEY.format(user_id=reader)
        )
        cache.close()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{bench.pg_db}" WITH (FORCE)')
    return {
        "scenario": "queries",
        "chats": chats,
        "messages_per_chat": messages,
        "events": len(events),
        "fill_seconds": round(filled_s, 2),
        "concurrency": concurrency,
        "seconds_per_scenario": seconds,
        **results,
    }
