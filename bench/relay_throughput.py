"""Relay benchmark: throughput, and the latency from commit to Kafka ack, against a raw producer.

`run(settings)` measures, on the running stack and in one process:

- raw producer: `events` envelopes sent with the relay's own producer settings, flushed
  (events/s); then `rate` events/s for `seconds`, latency from `send` to ack;
- relay: `events` events stored first, then the relay drains them (events/s, from its
  first acknowledged batch to its last); then a writer commits `rate` events/s (ten per
  transaction every 10 ms) for `seconds`, latency from the writer's commit to the
  relay's Kafka ack.

It uses a database and topics of its own (`<pg_db>_bench_relay`, `bench-<id>.`), removed
at the end, so a developer's data is never touched. Run: `parley bench relay`.
"""

from __future__ import annotations

import itertools
import statistics
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from infra.scratch import delete_topics, drop_database, fresh_database
from infra.settings import Settings
from infra.topics import EVENTS, ensure_topics
from projections.schema import migrate

CHATS = 200
PER_COMMIT = 10
_message_ids = itertools.count(1)


def run(
    settings: Settings, events: int = 20_000, rate: int = 1_000, seconds: float = 10.0
) -> dict[str, Any]:
    """Measure the relay against a raw producer; return the figures (see the docstring)."""
    bench = settings.replace(
        pg_db=f"{settings.pg_db}_bench_relay",
        topic_prefix=f"bench-{uuid.uuid4().hex[:8]}.",
        relay_name="bench",
    )
    fresh_database(settings, bench.pg_db)
    migrate(bench)
    ensure_topics(bench)
    try:
        raw = _raw_producer(bench, events, rate, seconds)
        relay = _relay(bench, events, rate, seconds)
    finally:
        drop_database(settings, bench.pg_db)
        delete_topics(bench)
    return {
        "scenario": "relay",
        "events": events,
        "rate": rate,
        "seconds": seconds,
        "partitions": bench.events_partitions,
        "batch_max": bench.relay_batch_max,
        "raw_producer": raw,
        "relay": relay,
        "relay_added_p99_ms": round(relay["latency_ms"]["p99"] - raw["latency_ms"]["p99"], 2),
    }


def _raw_producer(settings: Settings, events: int, rate: int, seconds: float) -> dict[str, Any]:
    from confluent_kafka import Producer

    from infra.producer import producer_config

    topic = settings.topic(EVENTS)
    records = _sample_records(events)
    producer = Producer(producer_config(settings, "parley-bench-raw"))
    producer.list_topics(topic, timeout=10)
    started = time.perf_counter()
    for key, value in records:
        _produce(producer, topic, key, value, None)
    producer.flush()
    throughput = events / (time.perf_counter() - started)

    latencies: list[float] = []

    def acked(sent_at: float) -> Any:
        return lambda error, _: latencies.append(time.perf_counter() - sent_at)

    for key, value in _paced(records, rate, seconds):
        _produce(producer, topic, key, value, acked(time.perf_counter()))
        producer.poll(0)
    producer.flush()
    return {"events_per_s": round(throughput), "latency_ms": _percentiles(latencies)}


def _produce(producer: Any, topic: str, key: bytes, value: bytes, callback: Any) -> None:
    while True:
        try:
            producer.produce(topic, value=value, key=key, on_delivery=callback)
            return
        except BufferError:
            producer.poll(0.05)


def _relay(settings: Settings, events: int, rate: int, seconds: float) -> dict[str, Any]:
    from infra.event_store import max_position, open_store
    from streams.relay import run_relay

    store = open_store(settings)
    chats = _open_chats(store)
    while max_position(store) < events:
        _send_round(store, chats, len(chats))
    backlog = max_position(store)

    acked_at: dict[int, float] = {}
    batches: list[tuple[float, int]] = []
    caught_up = threading.Event()
    target = [backlog]

    def on_published(positions: Sequence[int]) -> None:
        now = time.perf_counter()
        batches.append((now, len(positions)))
        acked_at.update(dict.fromkeys(positions, now))
        if positions[-1] >= target[0]:
            caught_up.set()

    stop = threading.Event()
    thread = threading.Thread(
        target=run_relay, args=(settings, stop), kwargs={"on_published": on_published}
    )
    thread.start()
    try:
        if not caught_up.wait(timeout=300):
            raise RuntimeError("the relay did not drain the backlog within 300 s")
        (first_at, first_count), last_at = batches[0], batches[-1][0]
        throughput = (backlog - first_count) / (last_at - first_at)

        committed_at: dict[int, float] = {}
        interval = PER_COMMIT / rate
        next_at = time.perf_counter()
        deadline = next_at + seconds
        offset = 0
        while next_at < deadline:
            time.sleep(max(0.0, next_at - time.perf_counter()))
            some = chats[offset : offset + PER_COMMIT]
            offset = (offset + PER_COMMIT) % len(chats)
            positions = _send_round(store, some, PER_COMMIT)
            now = time.perf_counter()
            committed_at.update(dict.fromkeys(positions, now))
            next_at += interval
        caught_up.clear()
        target[0] = max(committed_at)
        if max(acked_at) < target[0] and not caught_up.wait(timeout=60):
            raise RuntimeError("the relay did not publish the paced events within 60 s")
    finally:
        stop.set()
        thread.join(timeout=30)
        store.close()
    latencies = [acked_at[p] - t for p, t in committed_at.items()]
    return {"events_per_s": round(throughput), "latency_ms": _percentiles(latencies)}


def _open_chats(store: Any) -> list[Any]:
    from domain.chat import Chat

    chats = []
    for _ in range(CHATS):
        a, b = uuid.uuid4(), uuid.uuid4()
        chats.append(Chat.open_direct(a, b, opened_by=a))
    store.save(*chats)
    return chats


def _send_round(store: Any, chats: list[Any], count: int) -> list[int]:
    """One message in each of the first `count` chats, in one transaction; their positions."""
    for chat in chats[:count]:
        sender = next(iter(chat.members))
        message_id = next(_message_ids)
        chat.send(sender, "bench", str(message_id), "text", b"x" * 100, None, message_id, 0)
    return [r.notification.id for r in store.save(*chats[:count])]


def _sample_records(count: int) -> list[tuple[bytes, bytes]]:
    """Envelopes like the relay's: messages in `CHATS` direct chats, built in memory."""
    from domain.chat import Chat
    from infra.log_envelope import encode_event

    chats = []
    for _ in range(CHATS):
        a, b = uuid.uuid4(), uuid.uuid4()
        chats.append(Chat.open_direct(a, b, opened_by=a))
    records: list[tuple[bytes, bytes]] = []
    while len(records) < count:
        for chat in chats:
            sender = next(iter(chat.members))
            n = len(records)
            chat.send(sender, "bench", str(n), "text", b"x" * 100, None, n, 0)
            (event,) = chat.collect_events()[-1:]
            records.append(encode_event(event, n + 1))
    return records[:count]


def _paced(
    records: list[tuple[bytes, bytes]], rate: int, seconds: float
) -> Iterator[tuple[bytes, bytes]]:
    """Yield `PER_COMMIT` records every `PER_COMMIT / rate` seconds, for `seconds`."""
    interval = PER_COMMIT / rate
    next_at = time.perf_counter()
    deadline = next_at + seconds
    index = 0
    while next_at < deadline:
        time.sleep(max(0.0, next_at - time.perf_counter()))
        for _ in range(PER_COMMIT):
            yield records[index % len(records)]
            index += 1
        next_at += interval


def _percentiles(samples: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples)
    cuts = statistics.quantiles(ms, n=100)
    return {
        "samples": len(ms),
        "p50": round(cuts[49], 2),
        "p99": round(cuts[98], 2),
        "max": round(ms[-1], 2),
    }
