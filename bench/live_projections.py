"""Live projection benchmark: how fast `parley serve workers` projects, and how late.

`run(settings)` measures a workers process of its own (own database, topics, consumer
group and Redis database: `bench.stack.private_resources`) on the running stack:

- **backlog**, twice: `events` envelopes of 1:1 traffic, then of group traffic (groups
  of `group_sizes` members), made by the real domain (`bench.replay_speed.traffic`:
  sends, each followed by delivery and read receipts of up to three members), are
  written to the topic first; then a workers process starts and drains them. Events/s
  and inbox rows/s (one row per message and recipient, the seed's write fan-out) are
  timed from the first checkpoint the worker records to the one covering the last
  event; the worker's CPU time over that span is read from /proc.
- **latency**: with a worker caught up, the same 1:1-and-group mix is published at
  `rate` messages/s (each message with its receipts) for `seconds`, with the relay's
  producer settings (acks=all, idempotent). Each event's latency runs from its append
  to the log (the broker's timestamp: `parley.events` is stamped at append,
  `infra/topics.py`) to the moment a projection checkpoint covers it, polled every
  2 ms: commit->projection, minus the relay's own share (`parley bench relay`). The
  load generator and the poller run at a lower CPU priority than the stack
  (`LOAD_NICE`): on two cores they would otherwise take 0.4-0.5 of them from the worker
  they measure, as they would not from another machine. With the broker's clock as
  the reference, their own delays can only make the figure worse: a late poll shows a
  later projection, a late send only a later append.

Run: `parley bench projection`.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bench.procfs import cpu_seconds
from bench.replay_speed import traffic
from bench.stack import private_resources, started
from bench.stats import summary
from infra.settings import ROOT, Settings
from infra.topics import EVENTS
from projections.projector import ORDER
from projections.schema import LIVE_SCHEMA

POLL_S = 0.002
LOAD_NICE = 10
"""The latency phase's publisher and poller run this much nicer than the stack."""


def run(
    settings: Settings,
    phases: tuple[str, ...] = ("oneone", "group", "latency"),
    events: int = 60_000,
    rate: float = 1_000.0,
    seconds: float = 15.0,
    group_sizes: tuple[int, int] = (20, 256),
) -> dict[str, Any]:
    """Measure the live workers (see the module docstring); return the figures."""
    workdir = ROOT / ".state" / "bench" / f"projection-{os.getpid()}"
    figures: dict[str, Any] = {"scenario": "projection", "events": events}
    for name, share in (("oneone", 0.0), ("group", 1.0)):
        if name not in phases:
            continue
        print(f"parley bench projection: {name} backlog of {events} events", flush=True)
        figures[f"backlog_{name}"] = _backlog(settings, workdir / name, events, share, group_sizes)
        print(f"parley bench projection: {figures[f'backlog_{name}']}", flush=True)
    if "latency" in phases:
        print(f"parley bench projection: latency at {rate:.0f} messages/s", flush=True)
        figures["latency"] = _latency(settings, workdir / "latency", rate, seconds)
    figures["workdir"] = str(workdir)
    return figures


def _backlog(
    settings: Settings, workdir: Path, events: int, group_share: float, sizes: tuple[int, int]
) -> dict[str, Any]:
    with private_resources(settings) as bench:
        ends, counts = _publish_all(bench, traffic(events, 11, group_share, sizes))
        marks = Marks(bench)
        with started(bench, workdir, ["workers"]) as services:
            pid = services.pids["workers"]
            first = marks.wait(lambda m: bool(m), deadline_s=120)
            cpu_first = cpu_seconds(pid)
            last = marks.wait(lambda m: _covers(m, ends), deadline_s=600)
            cpu_last = cpu_seconds(pid)
        span = last - first
        inbox_rows = _count(bench, "receipts")
        marks.close()
    return {
        "events": sum(counts.values()),
        "mix": counts,
        "seconds": round(span, 2),
        "events_per_s": round(sum(counts.values()) / span),
        "inbox_rows": inbox_rows,
        "inbox_rows_per_s": round(inbox_rows / span),
        "worker_cpu_us_per_event": round(1e6 * (cpu_last - cpu_first) / sum(counts.values())),
    }


def _latency(settings: Settings, workdir: Path, rate: float, seconds: float) -> dict[str, Any]:
    messages = int(rate * seconds)
    records = list(traffic(10 * messages, 13))
    with private_resources(settings) as bench:
        marks = Marks(bench)
        with started(bench, workdir, ["workers"]):
            load = Load(bench, marks, records, rate, messages)
            load.start()
            load.join()
        marks.close()
    if load.failure is not None:
        raise load.failure
    late = [1000 * (load.seen.at(p, o) - t) for p, o, t in load.published]
    return {
        "messages": load.sent,
        "events": len(load.published),
        "rate_offered": rate,
        "messages_per_s": round(load.sent / load.window, 1),
        "commit_to_projection_ms": summary(late),
        "poll_ms": POLL_S * 1000,
        "load_nice": LOAD_NICE,
    }


class Load(threading.Thread):
    """The latency phase's publisher, in a thread of its own at LOAD_NICE (a thread's
    nice value is its own on Linux, and the threads it starts inherit it: the producer's
    I/O thread and the poller; not the worker, nor the caller)."""

    def __init__(
        self, bench: Settings, marks: Marks, records: list[Any], rate: float, messages: int
    ) -> None:
        super().__init__(daemon=True)
        self.bench, self.marks, self.records = bench, marks, records
        self.rate, self.messages = rate, messages
        self.seen = Seen(marks)
        self.published: list[tuple[int, int, float]] = []  # (partition, offset, appended at)
        self.sent, self.window = 0, 0.0
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            os.nice(LOAD_NICE)
            self._publish()
        except BaseException as exc:
            self.failure = exc

    def _publish(self) -> None:
        from kafka import KafkaProducer

        bench, marks = self.bench, self.marks
        producer = KafkaProducer(
            bootstrap_servers=bench.kafka_bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=1,
        )
        topic = bench.topic(EVENTS)
        acked: list[tuple[int, int, float]] = []
        lock = threading.Lock()

        def on_ack(metadata: Any) -> None:
            # The broker's append time (wall clock, ms), returned with the ack.
            with lock:
                acked.append((metadata.partition, metadata.offset, metadata.timestamp / 1000))

        try:
            # Warm up: the chats' opening events, until the worker has projected them.
            opening = [r for r in self.records if r[2] in ("DirectChatOpened", "GroupCreated")]
            ends, _ = _publish_all(bench, opening, producer)
            marks.wait(lambda m: _covers(m, ends), deadline_s=120)
            acked.clear()
            self.seen.start()
            start = time.monotonic()
            for key, value, name in self.records[len(opening) :]:
                if name == "MessageSent":
                    if self.sent == self.messages:
                        break
                    wait = start + self.sent / self.rate - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                    self.sent += 1
                producer.send(topic, key=key, value=value).add_callback(on_ack)
            producer.flush()
            self.window = time.monotonic() - start
            with lock:
                self.published = list(acked)
            ends = {}
            for partition, offset, _ in self.published:
                ends[partition] = max(ends.get(partition, -1), offset + 1)
            self.seen.wait(ends, deadline_s=120)
        finally:
            if self.seen.is_alive():
                self.seen.stop()
            producer.close()


class Marks:
    """The projections' checkpoints: partition -> the offset every projection passed."""

    def __init__(self, settings: Settings) -> None:
        self.conn = psycopg.connect(settings.pg_conninfo, autocommit=True)
        self.query = sql.SQL(
            'SELECT partition, min("offset"), count(*) FROM {s}.checkpoints GROUP BY partition'
        ).format(s=sql.Identifier(LIVE_SCHEMA))

    def read(self) -> dict[int, int]:
        try:
            rows = self.conn.execute(self.query).fetchall()
        except psycopg.errors.UndefinedTable:
            return {}  # the worker has not migrated yet
        return {p: offset for p, offset, n in rows if n == len(ORDER)}

    def wait(self, done: Any, deadline_s: float) -> float:
        """Poll until `done(marks)`; return when it was first seen."""
        deadline = time.monotonic() + deadline_s
        while True:
            now = time.monotonic()
            if done(self.read()):
                return now
            if now > deadline:
                raise RuntimeError("the workers did not catch up in time")
            time.sleep(0.05)

    def close(self) -> None:
        self.conn.close()


class Seen(threading.Thread):
    """Polls the checkpoints every POLL_S and remembers when (wall clock) each offset was
    covered."""

    def __init__(self, marks: Marks) -> None:
        super().__init__(daemon=True)
        self.marks = marks
        self.steps: dict[int, list[tuple[int, float]]] = {}  # partition -> (offset, first seen)
        self.last: dict[int, int] = {}
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            polled_at = time.time()
            for partition, offset in self.marks.read().items():
                if offset != self.last.get(partition):
                    self.steps.setdefault(partition, []).append((offset, polled_at))
                    self.last[partition] = offset
            time.sleep(POLL_S)

    def wait(self, ends: dict[int, int], deadline_s: float) -> None:
        """Until this poller has seen every partition's end covered. (Waiting on a read
        of its own instead let the poller stop before it saw the last step.)"""
        deadline = time.monotonic() + deadline_s
        while not _covers(dict(self.last), ends):
            if time.monotonic() > deadline:
                raise RuntimeError("the workers did not catch up in time")
            time.sleep(0.01)

    def stop(self) -> None:
        self._done.set()
        self.join()

    def at(self, partition: int, offset: int) -> float:
        """When a checkpoint of `partition` was first seen at or past `offset`."""
        for covered, when in self.steps.get(partition, []):
            if covered >= offset:
                return when
        raise RuntimeError(f"offset {offset} of partition {partition} was never projected")


def _publish_all(
    bench: Settings, records: Any, producer: Any = None
) -> tuple[dict[int, int], dict[str, int]]:
    """Publish `records`; return each partition's end offset and the events by type."""
    from kafka import KafkaProducer

    own = producer is None
    if own:
        producer = KafkaProducer(
            bootstrap_servers=bench.kafka_bootstrap, acks="all", linger_ms=20, batch_size=1 << 20
        )
    futures: list[Any] = []
    counts: dict[str, int] = {}
    for key, value, name in records:
        futures.append(producer.send(bench.topic(EVENTS), key=key, value=value))
        counts[name] = counts.get(name, 0) + 1
    producer.flush()
    ends: dict[int, int] = {}
    for future in futures:
        metadata = future.get()
        ends[metadata.partition] = max(ends.get(metadata.partition, -1), metadata.offset + 1)
    if own:
        producer.close()
    return ends, counts


def _covers(marks: dict[int, int], ends: dict[int, int]) -> bool:
    """Whether the checkpoints (last offsets applied) reach every partition's end."""
    return all(marks.get(p, -1) >= end - 1 for p, end in ends.items())


def _count(bench: Settings, table: str) -> int:
    with psycopg.connect(bench.pg_conninfo) as conn:
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {s}.{t}").format(
                s=sql.Identifier(LIVE_SCHEMA), t=sql.Identifier(table)
            )
        ).fetchone()
    return int(row[0]) if row else 0
