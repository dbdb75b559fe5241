"""Replay benchmark: how fast `parley replay rebuild` rebuilds projections from the log.

`run(settings)` writes `events` envelopes of a mix of 1:1 and group traffic (made by the
real domain: sends, delivery and read receipts, a few membership changes) straight to a
scratch topic, then times, on the running stack:

- `rebuild --all` (the four PostgreSQL projections and the Redis cache), end to end:
  shadow creation, reading, applying, the swap;
- the four PostgreSQL projections alone;
- the per-event live `Projector` on the first `baseline_events`, for comparison.

It uses a database, topic and Redis database of its own (`<pg_db>_bench_replay`,
`bench-<id>.parley.events`, `PARLEY_BENCH_REPLAY_REDIS_DB`), removed at the end; the
cache part is skipped if that Redis database holds Parley keys it did not write.
Run: `parley bench replay`.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import redis

from domain.chat import Chat
from domain.errors import DomainError
from infra.scratch import delete_topics, drop_database, fresh_database, redis_db
from infra.settings import Settings
from infra.topics import EVENTS, ensure_topics

USERS = 5_000
DIRECT_CHATS = 2_000
GROUPS = 100


def run(
    settings: Settings, events: int = 100_000, baseline_events: int = 20_000, seed: int = 7
) -> dict[str, Any]:
    """Measure replay speed (see the module docstring); return the figures."""
    bench = settings.replace(
        pg_db=f"{settings.pg_db}_bench_replay",
        topic_prefix=f"bench-{uuid.uuid4().hex[:8]}.",
        redis_url=redis_db(settings.redis_url, settings.bench_replay_redis_db),
    )
    fresh_database(settings, bench.pg_db)
    ensure_topics(bench)
    try:
        mix = _write_traffic(bench, events, seed)
        cache = _redis_is_free(bench)
        figures: dict[str, Any] = {
            "scenario": "replay",
            "events": events,
            "mix": mix,
            "partitions": bench.events_partitions,
            "batch_max": bench.replay_batch_max,
            "load_average_before": list(os.getloadavg()),
        }
        if cache:
            figures["rebuild_all"] = _time_rebuild(bench, all_projections=True)
        else:
            figures["rebuild_all"] = "skipped: the bench Redis database holds other keys"
        figures["rebuild_postgres"] = _time_rebuild(bench, all_projections=False)
        figures["per_event_projector"] = _time_per_event(bench, baseline_events)
        figures["load_average_after"] = list(os.getloadavg())
        return figures
    finally:
        drop_database(settings, bench.pg_db)
        delete_topics(bench)
        _clear_redis(bench)


def _write_traffic(settings: Settings, events: int, seed: int) -> dict[str, int]:
    """Domain events of 1:1 and group chats, as the relay would publish them."""
    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=20, batch_size=1 << 20
    )
    topic = settings.topic(EVENTS)
    counts: dict[str, int] = {}
    for key, value, name in traffic(events, seed):
        producer.send(topic, key=key, value=value)
        counts[name] = counts.get(name, 0) + 1
    producer.flush()
    producer.close()
    return counts


def traffic(
    events: int,
    seed: int,
    group_share: float | None = None,
    group_sizes: tuple[int, int] = (3, 50),
    readers: int = 3,
) -> Iterator[tuple[bytes, bytes, str]]:
    """(key, envelope, event type) of `events` events made by the real domain: chats
    opened, then messages (a `group_share` of them to groups of `group_sizes` members;
    None: the replay benchmark's mix, 30 % to any chat, the rest to 1:1 chats), each
    followed by delivery and read receipts of up to `readers` members."""
    from infra.log_envelope import encode_event

    rng = random.Random(seed)
    users = [uuid.UUID(int=rng.getrandbits(128)) for _ in range(USERS)]
    directs = DIRECT_CHATS if group_share is None or group_share < 1 else 0
    groups = GROUPS if group_share is None or group_share > 0 else 0
    chats: list[tuple[Chat, list[uuid.UUID]]] = []
    for _ in range(directs):
        a, b = rng.sample(users, 2)
        chats.append((Chat.open_direct(a, b, opened_by=a), [a, b]))
    for _ in range(groups):
        members = rng.sample(users, rng.randint(*group_sizes))
        group = Chat.create_group(uuid.UUID(int=rng.getrandbits(128)), "g", members[0], members[1:])
        chats.append((group, members))
    written, message_id = 0, 0

    def flush(chat: Chat) -> Iterator[tuple[bytes, bytes, str]]:
        nonlocal written
        for event in chat.collect_events():
            if written >= events:
                return
            key, value = encode_event(event, written + 1)
            written += 1
            yield key, value, type(event).__name__

    for chat, _ in chats:
        yield from flush(chat)
    while written < events:
        if group_share is None:
            any_chat = rng.random() < 0.3
            chat, members = chats[rng.randrange(len(chats) if any_chat else directs)]
        elif groups and (not directs or rng.random() < group_share):
            chat, members = chats[directs + rng.randrange(groups)]
        else:
            chat, members = chats[rng.randrange(directs)]
        message_id += 1
        try:
            if chat.kind == "group" and rng.random() < 0.01:
                outsider = rng.choice(users)
                if outsider not in members and chat.add_member(outsider, by=members[0]):
                    members.append(outsider)
            sender = rng.choice([m for m in members if m in chat.members] or members)
            chat.send(sender, "d", f"l{message_id}", "text", b"hello there", None, message_id, 0)
            for reader in rng.sample(members, min(len(members), readers)):
                if reader == sender or reader not in chat.members:
                    continue
                if rng.random() < 0.6:
                    chat.mark_delivered(reader, chat.last_seq)
                if rng.random() < 0.4:
                    chat.mark_read(reader, chat.last_seq)
        except DomainError:
            chat.collect_events()
            continue
        yield from flush(chat)


def _time_rebuild(settings: Settings, all_projections: bool) -> dict[str, Any]:
    from projections.projector import ORDER
    from projections.replay.listing import PROJECTIONS
    from projections.replay.rebuild import RebuildOptions, rebuild

    names = PROJECTIONS if all_projections else ORDER
    cpu = time.process_time()
    with BackendCpu(settings.pg_db) as backends:
        summary = asyncio.run(rebuild(settings, RebuildOptions(tuple(names))))
    client = time.process_time() - cpu
    figures: dict[str, Any] = {
        "projections": list(names),
        "records": summary.records,
        "seconds": round(summary.seconds, 2),
        "events_per_s": round(summary.rate),
        "client_cpu_s": round(client, 2),
        "postgres_cpu_s": None,
        "pauses_ms": [round(p, 1) for p in summary.pauses_ms],
    }
    if backends.seconds:  # PostgreSQL runs here: what an idle 2-core machine would allow
        figures["postgres_cpu_s"] = round(backends.seconds, 2)
        figures["cpu_bound_events_per_s"] = {
            "serial": round(summary.records / (client + backends.seconds)),
            "overlapped": round(summary.records / max(client, backends.seconds)),
        }
    return figures


class BackendCpu:
    """CPU time of this host's PostgreSQL backends of one database, sampled from /proc.

    The machine is shared, so wall-clock rates depend on what else runs; CPU seconds
    say what the replay itself costs. Zero if PostgreSQL is not on this host.
    """

    def __init__(self, database: str) -> None:
        self.marker = f" {database} "
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    @property
    def seconds(self) -> float:
        return sum(self.last[p] - self.first.get(p, 0.0) for p in self.last)

    def __enter__(self) -> BackendCpu:
        self._once(initial=True)
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join()

    def _sample(self) -> None:
        while not self.stop.wait(0.05):
            self._once(initial=False)

    def _once(self, initial: bool) -> None:
        tick = os.sysconf("SC_CLK_TCK")
        for pid in (int(d) for d in os.listdir("/proc") if d.isdigit()):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    title = f.read().decode(errors="replace")
                if not title.startswith("postgres:") or self.marker not in title:
                    continue
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            used = (int(fields[11]) + int(fields[12])) / tick
            if initial:
                self.first[pid] = used
            self.last[pid] = used


def _time_per_event(settings: Settings, events: int) -> dict[str, Any]:
    """The live per-event `Projector` over the first `events` records, into a scratch schema."""
    from projections.projector import Projector, Record
    from projections.replay.logreader import LogReader
    from projections.schema import migrate

    schema = "bench_per_event"
    migrate(settings, schema)
    reader = LogReader(settings)
    reader.start_at()
    ends = reader.log_end()
    budget = {p: min(end, reader.position[p] + events // len(ends) + 1) for p, end in ends.items()}
    records: list[Record] = [r for batch in reader.read(budget, 5_000) for r in batch][:events]
    reader.close()

    async def apply() -> float:
        projector = Projector(schema=schema)
        async with await psycopg.AsyncConnection.connect(settings.pg_conninfo) as conn:
            await conn.execute("SET synchronous_commit TO off")
            await conn.commit()
            started = time.perf_counter()
            for start in range(0, len(records), 500):
                async with conn.transaction():
                    await projector.apply_batch(conn, records[start : start + 500])
            return time.perf_counter() - started

    seconds = asyncio.run(apply())
    return {
        "records": len(records),
        "seconds": round(seconds, 2),
        "events_per_s": round(len(records) / seconds),
    }


def _redis_is_free(settings: Settings) -> bool:
    client = redis.Redis.from_url(settings.redis_url)
    try:
        return not client.keys("parley:*")
    finally:
        client.close()


def _clear_redis(settings: Settings) -> None:
    from projections.replay.cache_shadow import LIVE_PATTERNS

    client = redis.Redis.from_url(settings.redis_url)
    try:
        for pattern in (*LIVE_PATTERNS, "replay:*"):
            for key in client.scan_iter(match=f"parley:{pattern}", count=1000):
                client.unlink(key)
    finally:
        client.close()
