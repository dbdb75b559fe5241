"""`BulkProjector` gives the same tables as the per-event `Projector` and as the fold.

Random conversations from the real domain (sends, joins, leaves, removals, receipts) in
random batches with redeliveries and re-published tails, as in
tests/projections/test_fold_property.py, applied by both projectors into two schemas.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infra.settings import Settings
from projections.bulk import BulkProjector, Run, steps
from projections.fold import ReadModel
from projections.projector import Projector, Record
from projections.schema import metadata, migrate
from tests.projections.model import (
    comparable,
    delivered_at_least_once,
    envelopes,
    read_back,
    records,
)
from tests.projections.test_fold_property import _events, op

BULK, PER_EVENT = "replay_prop_bulk", "replay_prop_event"


@pytest.fixture(scope="module")
def conninfo(settings: Settings) -> Iterator[str]:
    for schema in (BULK, PER_EVENT):
        with psycopg.connect(settings.pg_conninfo, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        migrate(settings, schema)
    yield settings.pg_conninfo
    with psycopg.connect(settings.pg_conninfo, autocommit=True) as conn:
        for schema in (BULK, PER_EVENT):
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def _project(conninfo: str, projector: Projector, batches: list[list[Record]]) -> None:
    async with await psycopg.AsyncConnection.connect(conninfo) as conn:
        for batch in batches:
            async with conn.transaction():
                await projector.apply_batch(conn, batch)


def _truncate(conninfo: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for schema in (BULK, PER_EVENT):
            names = ", ".join(f'"{schema}"."{t.name}"' for t in metadata.sorted_tables)
            conn.execute(f"TRUNCATE {names}")


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=st.lists(op, max_size=60), data=st.data())
def test_bulk_and_per_event_projectors_give_the_same_tables(
    conninfo: str, ops: list[tuple[Any, ...]], data: st.DataObject
) -> None:
    envs = envelopes(_events(ops))
    # Long batches make long runs; short ones carry receipts' cursors across batches.
    batches = delivered_at_least_once(envs, data.draw, data.draw(st.sampled_from([4, 40])))

    oracle = ReadModel()
    for e in envs:
        oracle.apply(e)
    _truncate(conninfo)
    asyncio.run(_project(conninfo, BulkProjector(schema=BULK), batches))
    asyncio.run(_project(conninfo, Projector(schema=PER_EVENT), batches))
    bulk = read_back(conninfo, BULK)
    assert comparable(bulk) == comparable(read_back(conninfo, PER_EVENT))
    assert comparable(bulk) == comparable(oracle)


@pytest.mark.unit
def test_events_other_than_messages_and_receipts_fall_back_to_the_per_event_handlers() -> None:
    """A membership change or rename ends a run and is applied on its own, in log order,
    by the `Projector`'s per-event handler; the messages around it stay in bulk runs."""
    from domain.chat import Chat
    from tests.projections.model import user

    group = Chat.create_group(uuid.uuid4(), "g", user(0), [user(1)])
    group.send(user(0), "d", "l1", "text", b"x", None, 1, 0)
    group.mark_delivered(user(1), 1)
    group.add_member(user(2), by=user(0))
    group.send(user(2), "d", "l2", "text", b"x", None, 2, 0)
    group.rename("h", by=user(0))
    envs = envelopes(list(group.collect_events()))
    planned = list(steps([(e, ("chats", "receipts")) for e in envs]))
    shapes = [[e.type for e in s.of("chats")] if isinstance(s, Run) else s[0].type for s in planned]
    assert shapes == [
        "GroupCreated",
        ["MessageSent", "MessagesDelivered"],
        "MemberAdded",
        ["MessageSent"],
        "GroupRenamed",
    ]
    assert [e for s in planned for e in (s.of("chats") if isinstance(s, Run) else [s[0]])] == envs


@pytest.mark.unit
def test_a_send_whose_seq_a_receipt_already_covered_starts_a_new_run() -> None:
    from domain.chat import Chat
    from tests.projections.model import user

    chat = Chat.open_direct(user(0), user(1), opened_by=user(0))
    chat.send(user(0), "d", "l1", "text", b"x", None, 1, 0)
    chat.mark_read(user(1), 1)
    chat.send(user(0), "d", "l2", "text", b"x", None, 2, 0)
    envs = envelopes(list(chat.collect_events()))
    kinds = [type(s).__name__ for s in steps([(e, ("receipts",)) for e in envs])]
    assert kinds == ["tuple", "Run"]  # the opening alone; then one run (seq 2 > 1)
    late = envs[2]  # the receipt, moved after a send it covers (as an old log could have)
    forged = [envs[1], late, envs[1]]
    assert [type(s).__name__ for s in steps([(e, ("receipts",)) for e in forged])] == [
        "Run",
        "Run",
    ]


def test_a_receipt_moves_what_lies_between_the_cursor_it_finds_and_its_own(
    conninfo: str,
) -> None:
    """The bulk SQL starts a receipt at the cursor `members` held before its batch (not at
    seq 0): whatever lies between that cursor and the new one still moves, batch after
    batch, for delivered and read alike."""
    from domain.chat import Chat
    from tests.projections.model import user

    chat = Chat.create_group(uuid.uuid4(), "g", user(0), [user(1), user(2)])
    for seq in range(1, 6):
        chat.send(user(0), "d", f"l{seq}", "text", b"x", None, seq, 0)
    events = list(chat.collect_events())
    batches = [events]
    for up_to in (1, 3, 5):
        chat.mark_delivered(user(1), up_to)
        chat.mark_read(user(2), up_to)
        batches.append(list(chat.collect_events()))
    envs = envelopes([e for batch in batches for e in batch])
    recs = records(envs, partitions=1)
    sizes = [len(batch) for batch in batches]
    cut = [recs[sum(sizes[:n]) : sum(sizes[: n + 1])] for n in range(len(sizes))]

    _truncate(conninfo)
    asyncio.run(_project(conninfo, BulkProjector(schema=BULK), cut))
    model = read_back(conninfo, BULK)
    oracle = ReadModel()
    for e in envs:
        oracle.apply(e)
    assert comparable(model) == comparable(oracle)
    statuses = {(seq, who): r.status for (_, seq, who), r in model.receipts.items()}
    assert all(statuses[(seq, user(1))] == "DELIVERED" for seq in range(1, 6))
    assert all(statuses[(seq, user(2))] == "READ" for seq in range(1, 6))


@pytest.mark.parametrize("kind", [BulkProjector, Projector])
def test_a_batch_takes_statements_before_its_reads_and_after_its_writes(
    conninfo: str, kind: type[Projector]
) -> None:
    """The live worker's use (streams/workers.py): its BEGIN and the swap lock go out with
    the batch's first reads, its reads of the result and COMMIT with the writes, on an
    autocommit connection. Both projectors (the bulk one and the per-event one it falls
    back to) see their own writes in `after`, and leave the session lock held and no
    transaction open."""
    from domain.chat import Chat
    from projections.replay.locks import WORKER_LOCK, WORKER_UNLOCK
    from tests.projections.model import user

    schema = BULK if kind is BulkProjector else PER_EVENT
    chat = Chat.open_direct(user(0), user(1), opened_by=user(0))
    for seq in (1, 2, 3):
        chat.send(user(0), "d", f"l{seq}", "text", b"x", None, seq, 0)
    chat.mark_read(user(1), 2)
    batch = records(envelopes(list(chat.collect_events())), partitions=1)

    async def scenario() -> tuple[Any, ...]:
        _truncate(conninfo)
        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
            async with conn.cursor() as seen:

                async def after() -> None:
                    await seen.execute(
                        f'SELECT (SELECT count(*) FROM "{schema}".messages), '
                        f'(SELECT sum(count) FROM "{schema}".unread)'
                    )
                    await conn.execute("COMMIT")

                applied = await kind(schema=schema).apply_batch(
                    conn, batch, before=[("BEGIN", None), (WORKER_LOCK, None)], after=after
                )
                counted = await seen.fetchone()
            status = conn.info.transaction_status
            locks = await (
                await conn.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                    "AND pid = pg_backend_pid() AND mode = 'ShareLock'"
                )
            ).fetchone()
            await conn.execute(WORKER_UNLOCK)
            return applied, counted, status, locks

    applied, counted, status, locks = asyncio.run(scenario())
    assert applied > 0
    assert counted == (3, 1)  # three messages, one of them unread by user 1
    assert status == psycopg.pq.TransactionStatus.IDLE
    assert locks == (1,)
    model = read_back(conninfo, schema)
    oracle = ReadModel()
    for r in batch:
        oracle.apply(r.envelope)
    assert comparable(model) == comparable(oracle)
