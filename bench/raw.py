"""The layers below Parley, measured bare: `python -m bench.raw kafka|postgres RATE SECONDS`.

- kafka: an aiokafka producer with the gateway's settings (acks=all, idempotent,
  linger 1 ms) and a consumer in the same process on a fresh 12-partition topic:
  produce -> consume latency at RATE/s, then throughput (20,000 records flushed,
  consumed to the last). The topic is deleted at the end.
- postgres: a fresh database `<pg_db>_bench_raw` with a messages-like table (chat,
  seq, 100-byte body; synchronous commit on, as the event store): latency of one-row
  transactions at RATE/s over 8 connections, then rows/s in 100-row transactions. The
  database is dropped at the end.

Prints one JSON object. Run as its own process by `parley bench baselines`.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from typing import Any

import psycopg
import uvloop
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from kafka import KafkaAdminClient
from kafka.admin import NewTopic

from bench.stats import summary
from infra.settings import Settings, load_settings

BODY = b"x" * 100


async def _kafka(settings: Settings, rate: float, seconds: float) -> dict[str, Any]:
    topic = f"bench-raw-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id="bench-raw")
    admin.create_topics([NewTopic(topic, settings.commands_partitions, 1)])
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True, linger_ms=1
    )
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=topic,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=5,
    )
    await producer.start()
    await consumer.start()
    sent: dict[bytes, float] = {}
    latencies: list[float] = []
    received = 0

    async def consume() -> None:
        nonlocal received
        async for record in consumer:
            received += 1
            t0 = sent.pop(record.key or b"", None)
            if t0 is not None:
                latencies.append((time.monotonic() - t0) * 1000)

    reader = asyncio.create_task(consume())
    try:
        while not consumer.assignment():
            await asyncio.sleep(0.05)
        await producer.send_and_wait(topic, BODY, key=b"warm")
        while received < 1:
            await asyncio.sleep(0.01)
        warm = int(rate)  # the first second is not measured: fetch sessions settle
        total = int(rate * seconds) + warm
        start = time.monotonic()
        for i in range(total):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            key = f"r{i}".encode()
            sent[key] = time.monotonic()
            await producer.send(topic, BODY, key=key)
            if i == warm:
                latencies.clear()
        await producer.flush()
        deadline = time.monotonic() + 30
        while received < total + 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        total -= warm
        at_rate = {"rate": rate, "records": total, "produce_to_consume_ms": summary(latencies)}
        count = 20_000
        before = received
        start = time.monotonic()
        for i in range(count):
            await producer.send(topic, BODY, key=f"t{i % 200}".encode())
        await producer.flush()
        while received < before + count and time.monotonic() < deadline + 60:
            await asyncio.sleep(0.005)
        elapsed = time.monotonic() - start
        return {
            "latency_at_rate": at_rate,
            "throughput": {"records": count, "per_second": round(count / elapsed)},
        }
    finally:
        reader.cancel()
        await consumer.stop()
        await producer.stop()
        admin.delete_topics([topic])
        admin.close()


async def _postgres(settings: Settings, rate: float, seconds: float) -> dict[str, Any]:
    raw = settings.replace(pg_db=f"{settings.pg_db}_bench_raw")
    admin = settings.replace(pg_db="postgres").pg_conninfo
    with psycopg.connect(admin, autocommit=True) as server:
        server.execute(f'DROP DATABASE IF EXISTS "{raw.pg_db}" WITH (FORCE)')
        server.execute(f'CREATE DATABASE "{raw.pg_db}"')
    try:
        conns = [await psycopg.AsyncConnection.connect(raw.pg_conninfo) for _ in range(8)]
        await conns[0].execute(
            "CREATE TABLE messages (chat uuid, seq bigint, body bytea, PRIMARY KEY (chat, seq))"
        )
        await conns[0].commit()
        idle: asyncio.Queue[psycopg.AsyncConnection[Any]] = asyncio.Queue()
        for conn in conns:
            idle.put_nowait(conn)
        latencies: list[float] = []
        chats = [uuid.uuid4() for _ in range(200)]

        async def insert(i: int) -> None:
            conn = await idle.get()
            try:
                t0 = time.monotonic()
                await conn.execute(
                    "INSERT INTO messages VALUES (%s, %s, %s)", (chats[i % 200], i, BODY)
                )
                await conn.commit()
                latencies.append((time.monotonic() - t0) * 1000)
            finally:
                idle.put_nowait(conn)

        total = int(rate * seconds)
        tasks = []
        start = time.monotonic()
        for i in range(total):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(insert(i)))
        await asyncio.gather(*tasks)
        at_rate = {"rate": rate, "rows": total, "commit_ms": summary(latencies)}
        rows, batch = 20_000, 100
        start = time.monotonic()
        async with conns[0].cursor() as cur:
            for b in range(rows // batch):
                await cur.executemany(
                    "INSERT INTO messages VALUES (%s, %s, %s)",
                    [(chats[i % 200], total + b * batch + i, BODY) for i in range(batch)],
                )
                await conns[0].commit()
        elapsed = time.monotonic() - start
        for conn in conns:
            await conn.close()
        return {
            "latency_at_rate": at_rate,
            "throughput": {
                "rows": rows,
                "per_transaction": batch,
                "per_second": round(rows / elapsed),
            },
        }
    finally:
        with psycopg.connect(admin, autocommit=True) as server:
            server.execute(f'DROP DATABASE IF EXISTS "{raw.pg_db}" WITH (FORCE)')


def main() -> None:
    which, rate, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    settings = load_settings()
    run = _kafka if which == "kafka" else _postgres
    print(json.dumps(uvloop.run(run(settings, rate, seconds))))


if __name__ == "__main__":
    main()
