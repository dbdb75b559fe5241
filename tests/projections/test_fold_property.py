"""For random event sequences, the PostgreSQL projections equal the pure fold.

Events come from the real domain (random sends, replies, reactions, edits, deletes, joins,
leaves, removals, receipts over a group and a 1:1 chat), pass through the relay's
envelope, and are applied in random batches, with redeliveries (same offset) and
re-publications (same event, new offset) injected: the tables must equal
`projections.fold.ReadModel` over the same events.
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

from domain.chat import Chat
from domain.errors import DomainError
from infra.settings import Settings
from projections.fold import ReadModel
from projections.projector import Projector, Record
from projections.schema import metadata, migrate
from tests.projections.model import (
    comparable,
    delivered_at_least_once,
    envelopes,
    read_back,
    user,
)

SCHEMA = "prop_fold"
USERS = [user(i) for i in range(6)]
EMOJI = st.sampled_from(["👍", "❤️", ""])
ACTIONS = {"react": "reaction", "edit": "edit", "delete": "delete"}

op = st.one_of(
    st.tuples(st.just("send"), st.integers(0, 5), st.booleans()),
    st.tuples(st.just("add"), st.integers(1, 5)),
    st.tuples(st.just("remove"), st.integers(1, 5)),
    st.tuples(st.just("leave"), st.integers(0, 5)),
    st.tuples(st.just("delivered"), st.integers(0, 5), st.integers(0, 12)),
    st.tuples(st.just("read"), st.integers(0, 5), st.integers(0, 12)),
    st.tuples(st.just("reply"), st.integers(0, 5), st.booleans(), st.integers(1, 12)),
    st.tuples(st.just("react"), st.integers(0, 5), st.booleans(), st.integers(1, 12), EMOJI),
    st.tuples(st.just("edit"), st.integers(0, 5), st.booleans(), st.integers(1, 12)),
    st.tuples(st.just("delete"), st.integers(0, 5), st.booleans(), st.integers(1, 12)),
)
"""An action: (kind, actor, in the 1:1 chat, the seq it names, ...); most are refused
(not the sender, not a message, deleted): those add nothing, as live."""


def _events(ops: list[tuple[Any, ...]]) -> list[Any]:
    group = Chat.create_group(uuid.uuid4(), "g", USERS[0], USERS[1:3])
    direct = Chat.open_direct(USERS[0], USERS[1], opened_by=USERS[0])
    out: list[Any] = [*group.collect_events(), *direct.collect_events()]
    for n, (kind, *args) in enumerate(ops):
        chat = direct if kind in ("send", "reply", *ACTIONS) and args[1] else group
        if kind in ("delivered", "read") and n % 3 == 0:
            chat = direct
        try:
            if kind == "send":
                sender = USERS[args[0]] if chat is group else USERS[args[0] % 2]
                chat.send(sender, "d", f"l{n}", "text", b"hi", None, n + 1, 0)
            elif kind == "reply":
                sender = USERS[args[0]] if chat is group else USERS[args[0] % 2]
                chat.send(sender, "d", f"l{n}", "text", b"re", None, n + 1, 0, reply_to=args[2])
            elif kind in ACTIONS:
                sender = USERS[args[0]] if chat is group else USERS[args[0] % 2]
                body = args[3].encode() if kind == "react" else f"v{n}".encode()
                chat.act(sender, "d", f"l{n}", ACTIONS[kind], args[2], body, n + 1, 0)
            elif kind == "add":
                chat.add_member(USERS[args[0]], by=USERS[0])
            elif kind == "remove":
                chat.remove_member(USERS[args[0]], by=USERS[0])
            elif kind == "leave":
                chat.leave(USERS[args[0]])
            elif kind == "delivered":
                chat.mark_delivered(USERS[args[0]], min(args[1], chat.last_seq))
            else:
                chat.mark_read(USERS[args[0]], min(args[1], chat.last_seq))
        except DomainError:
            pass
        out.extend(chat.collect_events())
    return out


@pytest.fixture(scope="module")
def conninfo(settings: Settings) -> Iterator[str]:
    with psycopg.connect(settings.pg_conninfo, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE')
    migrate(settings, SCHEMA)
    yield settings.pg_conninfo
    with psycopg.connect(settings.pg_conninfo, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE')


async def _project(conninfo: str, batches: list[list[Record]]) -> None:
    projector = Projector(schema=SCHEMA)
    async with await psycopg.AsyncConnection.connect(conninfo) as conn:
        for batch in batches:
            async with conn.transaction():
                await projector.apply_batch(conn, batch)


def _truncate(conninfo: str) -> None:
    names = ", ".join(f'"{SCHEMA}"."{t.name}"' for t in metadata.sorted_tables)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {names}")


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=st.lists(op, max_size=40), data=st.data())
def test_projections_equal_the_fold(
    conninfo: str, ops: list[tuple[Any, ...]], data: st.DataObject
) -> None:
    envs = envelopes(_events(ops))
    batches = delivered_at_least_once(envs, data.draw, max_batch=15)

    oracle = ReadModel()
    for e in envs:
        oracle.apply(e)
    _truncate(conninfo)
    asyncio.run(_project(conninfo, batches))
    assert comparable(read_back(conninfo, SCHEMA)) == comparable(oracle)
