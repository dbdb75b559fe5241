"""Rebuilds next to live traffic: clients keep sending through the processor while the
read model is rebuilt and swapped; queries against `read` and the cache during the swap
never fail and never see an empty answer; a second rebuild of a projection is refused."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from typing import Any
from uuid import UUID

import psycopg
import pytest
import redis

from infra.settings import Settings
from projections.cache import recent_key
from projections.replay.errors import RebuildRunning
from projections.replay.listing import PROJECTIONS, replay_status
from projections.replay.rebuild import RebuildOptions, rebuild
from tests.projections.model import comparable
from tests.projections.test_pipeline import oracle
from tests.replay.conftest import chatter, conversation, read_model, settle
from tests.services import ROOT, Service

QUERIES = {
    "messages": "SELECT count(*) FROM read.messages WHERE chat_id = %s",
    "members": "SELECT count(*) FROM read.members WHERE chat_id = %s AND active",
    "history": "SELECT count(*) FROM read.membership_history WHERE chat_id = %s",
    "chats": "SELECT count(*) FROM read.chats WHERE chat_id = %s",
    "receipts": "SELECT count(*) FROM read.receipts WHERE chat_id = %s",
    "counts": "SELECT count(*) FROM read.receipt_counts WHERE chat_id = %s",
    "unread": "SELECT count(*) FROM read.unread WHERE chat_id = %s",
}


class Reader(threading.Thread):
    """Asks every table (prepared statements) and the cache about one chat, in a loop."""

    def __init__(self, settings: Settings, chat_id: UUID) -> None:
        super().__init__(daemon=True)
        self.settings, self.chat_id = settings, chat_id
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.empty: list[str] = []
        self.queries = 0

    def run(self) -> None:
        cache = redis.Redis.from_url(self.settings.redis_url)
        with psycopg.connect(self.settings.pg_conninfo, autocommit=True) as conn:
            conn.prepare_threshold = 0  # prepared plans must survive the swap as well
            while not self.stop.is_set():
                for name, query in QUERIES.items():
                    try:
                        row = conn.execute(query, (self.chat_id,)).fetchone()
                    except psycopg.Error as exc:
                        self.errors.append(f"{name}: {exc}")
                        continue
                    self.queries += 1
                    if row is None or row[0] == 0:
                        self.empty.append(name)
                if cache.zcard(recent_key(self.chat_id)) == 0:
                    self.empty.append("cache")
        cache.close()


class Sender(threading.Thread):
    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True)
        self.settings = settings
        self.stop = threading.Event()
        self.rounds = 0
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                chatter(self.settings, pairs=5, messages=4)
                self.rounds += 1
        except BaseException as exc:
            self.failure = exc


def test_a_rebuild_while_clients_send_loses_nothing_and_queries_never_notice(
    topics: Settings, pipeline: dict[str, Service]
) -> None:
    chats = conversation(topics)
    chatter(topics, pairs=20, messages=10)
    settle(topics)
    readers = [Reader(topics, chats["group"]), Reader(topics, chats["direct"])]
    sender = Sender(topics)
    for thread in (*readers, sender):
        thread.start()
    while sender.rounds < 1:
        time.sleep(0.05)

    summary = asyncio.run(rebuild(topics, RebuildOptions(PROJECTIONS)))
    rounds_at_swap = sender.rounds

    while sender.rounds < rounds_at_swap + 2:  # traffic after the swap, too
        time.sleep(0.05)
    sender.stop.set()
    sender.join(timeout=60)
    for reader in readers:
        reader.stop.set()
        reader.join(timeout=60)
    assert sender.failure is None
    assert summary.swapped
    settle(topics, deadline_s=90)
    assert read_model(topics) == comparable(oracle(topics))
    for reader in readers:
        assert reader.errors == [] and reader.empty == []
        assert reader.queries > 100


class Gate:
    """A progress sink that holds a rebuild at its first batch until released."""

    def __init__(self) -> None:
        self.reached, self.release = threading.Event(), threading.Event()

    def phase(self, name: str, total: int) -> None:
        pass

    def advance(self, records: int) -> None:
        self.reached.set()
        self.release.wait(60)


def test_a_second_rebuild_of_the_same_projection_is_refused(
    topics: Settings, pipeline: dict[str, Service]
) -> None:
    conversation(topics)
    settle(topics)
    gate = Gate()
    outcome: dict[str, Any] = {}

    def first() -> None:
        options = RebuildOptions(("messages",))
        outcome["summary"] = asyncio.run(rebuild(topics, options, gate))

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert gate.reached.wait(60)
        with pytest.raises(RebuildRunning) as refused:
            asyncio.run(rebuild(topics, RebuildOptions(("chats", "messages"))))
        assert refused.value.code == "rebuild_running"
        assert "'messages' is already being rebuilt" in str(refused.value)
        cli = subprocess.run(
            [sys.executable, "-m", "parley.cli", "replay", "rebuild", "messages"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert cli.returncode == 3
        assert "error [rebuild_running]" in cli.stderr
        states = {s.projection: s for s in replay_status(topics)}
        assert states["messages"].state == "rebuilding"
        assert states["chats"].state == "live"
        run = states["messages"].run
        assert run is not None and run.state == "building"
        # Other projections can be rebuilt meanwhile; `chats` was not left locked.
        assert asyncio.run(rebuild(topics, RebuildOptions(("chats",)))).swapped
    finally:
        gate.release.set()
        thread.join(timeout=120)
    assert outcome["summary"].swapped
    assert {s.projection: s.state for s in replay_status(topics)}["messages"] == "live"


def test_a_query_queued_behind_the_swap_reads_the_new_table(
    topics: Settings, pipeline: dict[str, Service]
) -> None:
    chats = conversation(topics)
    settle(topics)
    group = chats["group"]
    query = "SELECT count(*) FROM read.messages WHERE chat_id = %s"
    blocker = psycopg.connect(topics.pg_conninfo)  # a long query holds the live table
    expected = blocker.execute(query, (group,)).fetchone()
    assert expected is not None and expected[0] == 4
    outcome: dict[str, Any] = {}

    def swap() -> None:
        outcome["summary"] = asyncio.run(rebuild(topics, RebuildOptions(("messages",))))

    def queued() -> None:
        with psycopg.connect(topics.pg_conninfo, autocommit=True) as conn:
            conn.prepare_threshold = 0
            try:
                outcome["queued"] = conn.execute(query, (group,)).fetchone()
            except psycopg.Error as exc:
                outcome["queued"] = exc

    rebuilder = threading.Thread(target=swap)
    rebuilder.start()
    waiting = "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = %s::regclass"
    with psycopg.connect(topics.pg_conninfo, autocommit=True) as watch:
        _wait(lambda: _count(watch, waiting, "read.messages") >= 1)  # the swap waits
        reader = threading.Thread(target=queued)
        reader.start()
        _wait(lambda: _count(watch, waiting, "read.messages") >= 2)  # the query, behind it
        old = _count(watch, "SELECT %s::regclass::oid::int8", "read.messages")
        blocker.commit()
        reader.join(timeout=30)
        rebuilder.join(timeout=120)
        new = _count(watch, "SELECT %s::regclass::oid::int8", "read.messages")
    blocker.close()
    assert outcome["summary"].swapped and new != old
    assert outcome["queued"] == expected  # not an error, not the dropped table's emptiness


def _count(conn: psycopg.Connection[Any], query: str, arg: str) -> int:
    row = conn.execute(query, (arg,)).fetchone()
    return int(row[0]) if row else 0


def _wait(condition: Any, deadline_s: float = 60.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
