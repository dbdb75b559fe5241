"""The processor publishing what it stores (`PARLEY_EVENTS_PUBLISHER=processor`), with no
relay: every stored event reaches `parley.events` in per-chat order, through a SIGKILL,
and a processor that gets partitions publishes their last owner's unpublished tail
before anything newer of the same chats."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from commands.gateway.bus import CommandBus
from infra import publish_marks
from infra.scratch import delete_topics, drop_database, fresh_database
from infra.settings import Settings
from infra.topics import ensure_topics
from projections.schema import migrate
from tests.commands.client import new_users, send_until_acked
from tests.services import running
from tests.streams.published import check_order, event_ids, read_until, stored_event_ids

READY = r"partitions_assigned partitions=\[\d"


@pytest.fixture(scope="module")
def own(topics: Settings) -> Iterator[Settings]:
    """A database and topics of this module's own: the log must hold only its events."""
    settings = topics.replace(
        topic_prefix=f"{topics.topic_prefix}pub{uuid.uuid4().hex[:6]}.",
        pg_db=f"{topics.pg_db}_publishing",
        events_publisher="processor",
    )
    fresh_database(topics, settings.pg_db)
    migrate(settings)
    ensure_topics(settings)
    yield settings
    delete_topics(settings)
    drop_database(topics, settings.pg_db)


def _env(settings: Settings) -> dict[str, str]:
    return {
        "PARLEY_TOPIC_PREFIX": settings.topic_prefix,
        "PARLEY_PG_DB": settings.pg_db,
        "PARLEY_EVENTS_PUBLISHER": "processor",
    }


def _traffic(settings: Settings, pairs: list[list[uuid.UUID]], count: int, first: int) -> None:
    """`count` new messages in each pair's chat, local ids from `first` on."""

    async def scenario() -> None:
        bus = CommandBus(settings.replace(command_timeout_s=3.0), reply_to=f"t-{uuid.uuid4().hex}")
        await bus.start()
        try:
            await asyncio.gather(
                *(send_until_acked(bus, a, b, count, first=first) for a, b in pairs)
            )
        finally:
            await bus.stop()

    asyncio.run(scenario())


def test_every_stored_event_is_published_in_order_through_a_kill(
    own: Settings, tmp_path: Path
) -> None:
    """Two processors publish; one is SIGKILLed while clients keep sending and resending.
    Every stored event is in the log, each chat's first copies in version order."""
    env = _env(own)
    pairs = [new_users(own, 2) for _ in range(16)]
    with (
        running("processor", tmp_path / "first.log", env) as first,
        running("processor", tmp_path / "second.log", env) as second,
    ):
        first.wait_for_log(READY)
        second.wait_for_log(READY)

        progress: list[int] = []

        async def scenario() -> None:
            bus = CommandBus(own.replace(command_timeout_s=3.0), reply_to=f"t-{uuid.uuid4().hex}")
            await bus.start()
            try:
                work = asyncio.gather(
                    *(send_until_acked(bus, a, b, 25, progress) for a, b in pairs)
                )
                # Kill the second processor while traffic flows through both: a fifth in.
                async with asyncio.timeout(60):
                    while len(progress) < len(pairs) * 25 // 5:
                        await asyncio.sleep(0.01)
                second.kill()
                await work
            finally:
                await bus.stop()

        asyncio.run(scenario())
        assert "event=relay" not in first.text()
        records = read_until(own, stored_event_ids(own))
    assert len(stored_event_ids(own)) >= 16 * 26  # each chat's opening and 25 messages
    check_order(records)
    assert event_ids(records) == stored_event_ids(own)


def test_a_new_owner_publishes_the_unpublished_tail_first(own: Settings, tmp_path: Path) -> None:
    """A processor that died before Kafka acknowledged anything leaves its partitions'
    marks at its first unpublished event. The next owner publishes every stored event of
    those partitions from there, before it decides anything new."""
    env = _env(own)
    pairs = [new_users(own, 2) for _ in range(6)]
    with running("processor", tmp_path / "one.log", env) as one:
        one.wait_for_log(READY)
        _traffic(own, pairs, 5, first=0)
    # As if the processor had died with nothing acknowledged since the first event.
    with psycopg.connect(own.pg_conninfo, autocommit=True) as conn:
        claimed = publish_marks.marks(conn)
        assert claimed and all(mark is None for _, mark in claimed.values())
        owners = {owner for owner, _ in claimed.values()}
        for owner in owners:
            publish_marks.move(conn, owner, dict.fromkeys(claimed, 1))
    with running("processor", tmp_path / "two.log", env) as two:
        two.wait_for_log(READY)
        claim_line = r"event=partitions_claimed partitions=\[[\d, ]*\] republished=(\d+)"
        found = re.search(claim_line, two.text())
        assert found is not None and int(found.group(1)) == len(stored_event_ids(own))
        _traffic(own, pairs, 3, first=5)  # and then newer events of the same chats
        records = read_until(own, stored_event_ids(own))
        # The marks move on once Kafka took everything (the processor records them
        # every 0.5 s): nothing is owed any more.
        after = _marks_settled(own, deadline_s=10.0)
    assert check_order(records) >= int(found.group(1))  # the tail again, as duplicates
    assert {mark for _, mark in after.values()} == {None}


def _marks_settled(settings: Settings, deadline_s: float) -> dict[int, tuple[str, int | None]]:
    """The publish marks once none is owed, or as they are when the deadline passes."""
    end = time.monotonic() + deadline_s
    while True:
        with psycopg.connect(settings.pg_conninfo, autocommit=True) as conn:
            marks = publish_marks.marks(conn)
        if all(mark is None for _, mark in marks.values()) or time.monotonic() > end:
            return marks
        time.sleep(0.05)


def test_a_processor_that_lost_its_partitions_cannot_store(own: Settings, tmp_path: Path) -> None:
    """Claiming a partition fences its last owner: the save of a processor that missed
    losing it is refused whole, and it rejoins instead of storing or committing."""
    env = _env(own)
    pairs = [new_users(own, 2) for _ in range(4)]
    with running("processor", tmp_path / "zombie.log", env) as zombie:
        zombie.wait_for_log(READY)
        _traffic(own, pairs, 2, first=0)
        with psycopg.connect(own.pg_conninfo, autocommit=True) as conn:
            partitions = list(publish_marks.marks(conn))
            publish_marks.claim(conn, "someone-else", partitions, None)
        offset = len(zombie.text())
        _traffic(own, pairs, 2, first=2)  # answered after the zombie rejoined and claimed again
        assert "event=fenced" in zombie.text()[offset:]
        zombie.wait_for_log(r"event=partitions_claimed", after=offset)
    records = read_until(own, stored_event_ids(own))
    check_order(records)
    assert event_ids(records) == stored_event_ids(own)
