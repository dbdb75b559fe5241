"""`parley bench actions`: what a reaction, an edit and a delete for everyone cost on the
write path next to a send, and what sealing message content costs.

Like `parley bench processor`: one `parley serve processor` subprocess on a database and
topics of its own (`bench.processor_throughput.private_processor`), commands submitted
through the gateway's `CommandBus` in this process, over 200 1:1 chats.

- throughput: N sends, then a reaction to each (by the peer), an edit of each and a
  delete of each (by the sender), 2,000 in flight;
- latency at a rate: `rate * seconds` sends paced at `rate`, then as many reactions to
  them, then as many deletes of them; ack p50, p95, p99;
- seal: in this process, the CPU of making a key and sealing a message, and of opening
  it, per message (a 100-byte text, and a 64 KiB body); on PostgreSQL, the round trip of
  the key statements a batch adds (insert a batch's keys, look them up, erase one
  message's), next to a bare `SELECT 1` and to an insert that waits for the WAL flush;
  and a save of one send (or one delete) with its keys in PostgreSQL against one with
  them in memory, and a snapshot of a chat with 1,000 recent messages.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable
from contextlib import nullcontext
from functools import partial
from typing import Any
from uuid import UUID

import psycopg
import uvloop

from bench.processor_throughput import at_rate, private_processor, throughput
from commands.command import Command, CommandType, Outcome, encode_body
from commands.gateway.bus import CommandBus
from domain.chat import Chat
from domain.ids import direct_chat_id
from infra.body_seal import key_seqs, new_key, open_message, seal_message
from infra.event_store import SNAPSHOT_INTERVAL, open_store
from infra.message_keys import PUT_STATEMENT, MemoryMessageKeys, PgMessageKeys, key_columns
from infra.settings import Settings
from projections.directory import enrol_stand_ins

CHATS = 200
IN_FLIGHT = 2_000

Target = tuple[UUID, UUID, UUID, int]
"""(chat, sender, peer, seq) of a sent message."""


def _command(
    chat: UUID, actor: UUID, reply_to: str, args: dict[str, Any], to: UUID | None = None
) -> Command:
    if to is not None:
        args["to"] = str(to)
    return Command(CommandType.SEND, chat, actor, args, device_id="bench", reply_to=reply_to)


def _send(chat: UUID, actor: UUID, local_id: str, reply_to: str, to: UUID | None = None) -> Command:
    args = {"local_id": local_id, "kind": "text", "body": encode_body(b"x" * 100)}
    return _command(chat, actor, reply_to, args, to)


def _act(target: Target, kind: str, reply_to: str) -> Command:
    chat, sender, peer, seq = target
    actor = peer if kind == "reaction" else sender
    body = {"reaction": "👍".encode(), "edit": b"y" * 100, "delete": b""}[kind]
    args = {"local_id": f"{kind}-{uuid.uuid4().hex}", "kind": kind, "ref": seq}
    args["body"] = encode_body(body)
    return _command(chat, actor, reply_to, args)


def _targets(sends: list[Command], outcomes: dict[int, Outcome]) -> list[Target]:
    found = []
    for i, command in enumerate(sends):
        outcome = outcomes.get(i)
        if outcome is None or not outcome.ok or outcome.result is None:
            continue
        peer = UUID(str(command.args["to"]))
        found.append((command.chat_id, command.actor, peer, int(outcome.result["seq"])))
    return found


async def _write_path(
    settings: Settings, messages: int, rate: int, seconds: float
) -> dict[str, Any]:
    bus = CommandBus(settings, reply_to=f"bench-{uuid.uuid4().hex[:8]}")
    await bus.start()
    try:
        pairs = [(uuid.uuid4(), uuid.uuid4()) for _ in range(CHATS)]
        enrol_stand_ins(settings.pg_conninfo, [user for pair in pairs for user in pair])
        warm = [_send(direct_chat_id(a, b), a, "warm", bus.reply_to, to=b) for a, b in pairs]
        await throughput(bus, warm, CHATS)

        def send(i: int, prefix: str) -> Command:
            a, b = pairs[i % CHATS]
            return _send(direct_chat_id(a, b), a, f"{prefix}{i}", bus.reply_to, to=b)

        sends = [send(i, "m") for i in range(messages)]
        outcomes: dict[int, Outcome] = {}
        results: dict[str, Any] = {"send": await throughput(bus, sends, IN_FLIGHT, outcomes)}
        targets = _targets(sends, outcomes)
        for kind in ("reaction", "edit", "delete"):
            commands = [_act(t, kind, bus.reply_to) for t in targets]
            results[kind] = await throughput(bus, commands, IN_FLIGHT)

        paced: dict[str, Any] = {}
        outcomes = {}
        paced["send"] = await at_rate(bus, lambda i: send(i, "r"), rate, seconds, outcomes)
        targets = _targets([send(i, "r") for i in range(len(outcomes))], outcomes)
        for kind in ("reaction", "delete"):
            paced[kind] = await at_rate(bus, _on(targets, kind, bus.reply_to), rate, seconds)
        results["latency_at_rate"] = paced
        return results
    finally:
        await bus.stop()


def _on(targets: list[Target], kind: str, reply_to: str) -> Callable[[int], Command]:
    return lambda i: _act(targets[i % len(targets)], kind, reply_to)


def _per_call_us(call: Callable[[], object], repeat: int) -> float:
    started = time.perf_counter()
    for _ in range(repeat):
        call()
    return round((time.perf_counter() - started) / repeat * 1e6, 2)


def _sealing(repeat: int = 20_000) -> dict[str, Any]:
    """CPU per message in this process: make a key and seal; open."""
    chat = uuid.uuid4()
    figures: dict[str, Any] = {}
    for name, size, times in (("text_100b", 100, repeat), ("body_64kib", 64 * 1024, repeat // 20)):
        state = {"seq": 7, "kind": "text", "body": b"x" * size, "media": None, "quote": None}
        keys = {part: new_key(chat, seq) for part, seq in key_seqs(state).items()}
        once = seal_message(state, chat, keys)
        found = {k.key_id: k.key for k in keys.values()}
        figures[name] = {
            "seal_us": _per_call_us(partial(_seal_fresh, state, chat), times),
            "open_us": _per_call_us(partial(open_message, once, chat, found), times),
        }
    return figures


def _seal_fresh(state: dict[str, Any], chat: UUID) -> dict[str, Any]:
    """What the store does per message: a key for each sealed part, then the seal."""
    keys = {part: new_key(chat, seq) for part, seq in key_seqs(state).items()}
    return seal_message(state, chat, keys)


def _round_trips(settings: Settings, repeat: int = 300) -> dict[str, Any]:
    """Milliseconds per key statement on PostgreSQL (median of `repeat`), next to a
    bare round trip on the same connection."""
    with psycopg.connect(settings.pg_conninfo, autocommit=True) as conn:
        keys = PgMessageKeys(lambda: nullcontext(conn))
        chat = uuid.uuid4()

        def timed(call: Callable[[int], object]) -> float:
            took = []
            for i in range(repeat):
                started = time.perf_counter()
                call(i)
                took.append(time.perf_counter() - started)
            return round(statistics.median(took) * 1000, 3)

        def hundred(_: int) -> None:
            keys.put([new_key(chat, 0) for _ in range(100)])

        batch = [new_key(chat, 0) for _ in range(100)]
        keys.put(batch)
        ids = [k.key_id for k in batch]
        return {
            "select_1_ms": timed(lambda _: conn.execute("SELECT 1").fetchone()),
            "put_1_key_ms": timed(lambda i: keys.put([new_key(chat, i + 1)])),
            "put_1_key_waiting_for_the_flush_ms": timed(
                lambda i: conn.execute(PUT_STATEMENT, key_columns([new_key(chat, -i - 1)]))
            ),
            "put_100_keys_ms": timed(hundred),
            "get_100_keys_ms": timed(lambda _: keys.get(ids)),
            "erase_1_message_ms": timed(lambda i: keys.erase([(chat, i + 1)])),
        }


def _saves(settings: Settings, repeat: int = 300) -> dict[str, Any]:
    """One chat saved in this process, a send (or a delete) a save, with its keys in
    PostgreSQL or in memory, alternately: what the key statement adds to a save
    (median wall µs, and CPU µs of this process), and a snapshot of a chat holding
    1,000 recent messages, 200 of them new since its last snapshot (ms)."""
    store = open_store(settings, AGGREGATE_CACHE_MAXSIZE="")
    on_disk, in_memory = store.seal.keys, MemoryMessageKeys()
    alice, bob = uuid.uuid4(), uuid.uuid4()
    chat = Chat.open_direct(alice, bob, alice)
    store.save(chat)
    took: dict[str, list[tuple[float, float]]] = {}

    def save(name: str) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        store.save(chat)
        took.setdefault(name, []).append((time.perf_counter() - wall, time.process_time() - cpu))

    try:
        now = int(time.time() * 1000)
        for i in range(repeat):
            for where, keys in (("postgres", on_disk), ("memory", in_memory)):
                store.seal.keys = keys
                sent = chat.send(alice, "d", f"{where}{i}", "text", b"x" * 100, None, i, now)
                save(f"send_keys_in_{where}")
                chat.act(alice, "d", f"{where}-d{i}", "delete", sent.seq, b"", i, now)
                save(f"delete_keys_in_{where}")
        figures: dict[str, Any] = {
            name: {
                "wall_us": round(statistics.median(w for w, _ in runs) * 1e6),
                "cpu_us": round(statistics.median(c for _, c in runs) * 1e6),
            }
            for name, runs in took.items()
        }
        store.seal.keys = on_disk
        full = Chat.open_direct(uuid.uuid4(), bob, bob)
        for i in range(1_000):
            full.send(bob, "d", f"f{i}", "text", b"y" * 100, None, i, now)
        store.save(full)
        snapshots = []
        for i in range(10):  # as the processor does: a snapshot every 200 events
            for j in range(SNAPSHOT_INTERVAL):
                full.send(bob, "d", f"g{i}-{j}", "text", b"z" * 100, None, j, now)
            store.save(full)
            wall = time.perf_counter()
            store.snapshot([full])
            snapshots.append(time.perf_counter() - wall)
        figures["snapshot_1000_recent_ms"] = round(statistics.median(snapshots) * 1000, 2)
        return figures
    finally:
        store.close()


def run(
    settings: Settings, messages: int = 10_000, rate: int = 1_000, seconds: float = 10.0
) -> dict[str, Any]:
    """Run the actions benchmark against the local stack; return its figures."""
    with private_processor(settings) as bench:
        results = uvloop.run(_write_path(bench, messages, rate, seconds))
        results["seal"] = {
            **_sealing(),
            "postgres": _round_trips(bench),
            "store": _saves(bench),
        }
    return {"scenario": "actions", "messages": messages, **results}
