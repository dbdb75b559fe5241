"""Erasure for real: a message deleted for everyone, or disappeared, leaves no trace of
its content in PostgreSQL (every table, the event store included), `parley.events` or
Redis, before and after `parley replay rebuild`. On the package's own stack
(tests/actions/conftest.py).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg

from client import Ack
from infra.settings import Settings
from projections.replay.listing import PROJECTIONS
from projections.replay.rebuild import RebuildOptions, rebuild
from tests.actions.conftest import SHORT_TIMER_S
from tests.actions.test_message_actions import account, client, history, text
from tests.actions.traces import anywhere
from tests.fullstack import FullStack
from tests.replay.conftest import settle


def keys_of(settings: Settings, chat_id: str, seq: int) -> int:
    """How many keys of a message's content are left."""
    with psycopg.connect(settings.pg_conninfo) as conn:
        row = conn.execute(
            "SELECT count(*) FROM message_keys WHERE chat_id = %s AND seq = %s", (chat_id, seq)
        ).fetchone()
    return int(row[0]) if row else 0


def rebuilt(settings: Settings) -> None:
    summary = asyncio.run(rebuild(settings, RebuildOptions(tuple(PROJECTIONS))))
    assert summary.swapped
    settle(settings)


def kept(messages: list[dict[str, Any]], gone: set[int]) -> list[dict[str, Any]]:
    """The messages a test did not erase, as the query API shows them."""
    return [m for m in messages if m["seq"] not in gone]


def test_a_deleted_message_leaves_no_trace_before_or_after_a_rebuild(live: FullStack) -> None:
    alice, bob, carol = (account(live, n) for n in ("alice", "bob", "carol"))
    secret = f"launch code {time.time_ns()}"
    family = "👩\u200d👩\u200d👧\u200d👦"  # a reaction long enough not to be found by chance
    settings = live.settings

    async def scenario() -> tuple[str, int, list[dict[str, Any]], Ack]:
        a, b, c = [await client(live, who) for who in (alice, bob, carol)]
        try:
            group = await a.create_group("Ops", [bob.user_id, carol.user_id])
            sent = await b.send_text(secret, chat_id=group)
            await b.edit(group, sent.seq, secret + " (fixed)")
            await c.send_text("noted", chat_id=group, reply_to=sent.seq)
            await c.react(group, sent.seq, family)
            last = await b.send_text("lunch?", chat_id=group)
            await a.wait_until(lambda: last.seq in a.chats[group].messages)
            settle(settings)
            # Projected, cached and pushed in plaintext; stored and published sealed.
            places = anywhere(settings, secret.encode())
            assert any(p.startswith("read.") for p in places)
            assert any(p.startswith("redis") for p in places)
            assert not [p for p in places if "events" in p or "snapshots" in p], places
            assert keys_of(settings, group, sent.seq) == 4  # its body, edit, quote, reaction

            gone = await a.delete(group, sent.seq)  # Alice, the group's admin
            await c.wait_until(lambda: c.shown(group)[sent.seq].deleted)
            settle(settings)
            return group, sent.seq, await history(live, carol, gone), gone
        finally:
            for each in (a, b, c):
                await each.close()

    group, seq, before, gone = asyncio.run(scenario())
    assert keys_of(settings, group, seq) == 0
    assert anywhere(settings, secret.encode()) == []
    assert anywhere(settings, family.encode()) == []

    rebuilt(settings)
    assert anywhere(settings, secret.encode()) == []
    after = asyncio.run(history(live, carol, gone))
    assert after == before  # every other message replays unchanged
    shown = {m["seq"]: m for m in after}
    assert (shown[seq]["deleted"], shown[seq]["body"]) == (True, "")
    assert shown[seq + 2]["quote"] == {"seq": seq, "deleted": True}
    assert text(shown[seq + 4]) == "lunch?"


def test_a_disappeared_message_leaves_no_trace_before_or_after_a_rebuild(
    live: FullStack,
) -> None:
    alice, bob = account(live, "alice"), account(live, "bob")
    secret = f"self-destruct {time.time_ns()}"
    flag = "🏳️\u200d🌈"
    settings = live.settings

    async def scenario() -> tuple[str, Ack, Ack]:
        a, b = await client(live, alice), await client(live, bob)
        try:
            hello = await a.send_text("hello", to=bob.user_id)
            chat = hello.chat_id
            await a.set_timer(chat, SHORT_TIMER_S)
            sent = await a.send_text(secret, chat_id=chat)
            await b.react(chat, sent.seq, flag)
            await b.wait_until(lambda: sent.seq in b.chats[chat].messages)
            return chat, hello, sent
        finally:
            await a.close()
            await b.close()

    chat, hello, sent = asyncio.run(scenario())
    assert keys_of(settings, chat, sent.seq) == 2
    deadline = time.monotonic() + SHORT_TIMER_S + 30
    while keys_of(settings, chat, sent.seq) or anywhere(settings, secret.encode()):
        assert time.monotonic() < deadline, anywhere(settings, secret.encode())
        time.sleep(0.5)
    assert anywhere(settings, flag.encode()) == []
    before = asyncio.run(history(live, bob, sent))

    rebuilt(settings)
    assert anywhere(settings, secret.encode()) == []
    after = asyncio.run(history(live, bob, sent))
    assert kept(after, {sent.seq}) == kept(before, {sent.seq})
    shown = {m["seq"]: m for m in after}
    assert shown[sent.seq]["deleted"] and shown[sent.seq]["body"] == ""
    assert text(shown[hello.seq]) == "hello"
