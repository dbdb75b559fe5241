"""Erasure for real: a message deleted for everyone, or disappeared, leaves no trace of
its content in PostgreSQL (every table, the event store included), `parley.events`,
`parley.commands` (its send leaves once decided) or Redis, before and after `parley
replay rebuild`; its media object goes from the store once no live message carries it.
On the package's own stack (tests/actions/conftest.py).
"""

from __future__ import annotations

import asyncio
import io
import time
from typing import Any

import psycopg
from PIL import Image

from client import Ack, upload_media
from domain.media import object_key
from infra.objectstore import ObjectStore
from infra.settings import Settings
from projections.replay.listing import PROJECTIONS
from projections.replay.rebuild import RebuildOptions, rebuild
from tests.actions.conftest import ERASE_GRACE_S, SHORT_TIMER_S
from tests.actions.test_message_actions import account, client, history, refused, text
from tests.actions.traces import anywhere, in_postgres, out_of_commands_topic
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
    out_of_commands_topic(settings, secret.encode())  # its send and edit, in plaintext
    out_of_commands_topic(settings, family.encode())  # the reaction
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
    out_of_commands_topic(settings, flag.encode())
    assert anywhere(settings, flag.encode()) == []
    before = asyncio.run(history(live, bob, sent))

    rebuilt(settings)
    assert anywhere(settings, secret.encode()) == []
    after = asyncio.run(history(live, bob, sent))
    assert kept(after, {sent.seq}) == kept(before, {sent.seq})
    shown = {m["seq"]: m for m in after}
    assert shown[sent.seq]["deleted"] and shown[sent.seq]["body"] == ""
    assert text(shown[hello.seq]) == "hello"


# The media object


def a_picture() -> bytes:
    picture = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(picture, "PNG")
    return picture.getvalue()


async def stored_object(settings: Settings, media_id: str) -> bool:
    return await ObjectStore(settings).head(object_key(media_id)) is not None


def noted(settings: Settings, media_id: str) -> bool:
    """Whether the erasure sweep has still to look at the media."""
    with psycopg.connect(settings.pg_conninfo) as conn:
        row = conn.execute("SELECT 1 FROM erased_media WHERE media_id = %s", (media_id,)).fetchone()
    return row is not None


async def object_deleted(settings: Settings, media_id: str, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while await stored_object(settings, media_id):
        assert time.monotonic() < deadline, "the object is still stored"
        await asyncio.sleep(0.2)


async def swept(settings: Settings, media_id: str, deadline_s: float = 30.0) -> None:
    """Until the erasure sweep has looked at the media (and dropped its note)."""
    deadline = time.monotonic() + deadline_s
    while not noted(settings, media_id):  # noted when the keys go, on the delete
        assert time.monotonic() < deadline, "the media was never noted"
        await asyncio.sleep(0.1)
    while noted(settings, media_id):
        assert time.monotonic() < deadline, "the sweep did not look at it"
        await asyncio.sleep(0.2)


def test_a_deleted_messages_media_goes_once_no_forward_carries_it(live: FullStack) -> None:
    alice, bob, carol = (account(live, n) for n in ("alice", "bob", "carol"))
    settings = live.settings

    async def scenario() -> dict[str, Any]:
        a, b, c = [await client(live, who) for who in (alice, bob, carol)]
        try:
            photo = await asyncio.to_thread(upload_media, live.base, bob, a_picture(), "image/png")
            sent = await b.send_media(photo, caption="the view", to=alice.user_id)
            with_carol = (await a.send_text("hi", to=carol.user_id)).chat_id
            await history(live, alice, sent)  # forwards read the read model
            answer = await a.forward(sent.chat_id, sent.seq, [with_carol])
            copy = answer["results"][0]
            await c.wait_until(lambda: copy["seq"] in c.chats[with_carol].messages)
            thumbnail = c.chats[with_carol].messages[copy["seq"]]["media"]["thumbnail"]
            assert thumbnail and in_postgres(settings, thumbnail[:24].encode()) != []

            # The original goes; the copy still carries the object.
            await b.delete(sent.chat_id, sent.seq)
            await swept(settings, photo["media_id"])
            assert await stored_object(settings, photo["media_id"])
            # The copy goes: nothing carries it any more.
            await a.delete(with_carol, copy["seq"])
            await object_deleted(settings, photo["media_id"], deadline_s=30)
            settle(settings)
            assert in_postgres(settings, thumbnail[:24].encode()) == []
            assert await refused(b.send_media(photo, to=carol.user_id)) == "media_expired"
            return photo
        finally:
            for each in (a, b, c):
                await each.close()

    photo = asyncio.run(scenario())
    with psycopg.connect(settings.pg_conninfo) as conn:
        row = conn.execute(
            "SELECT fate FROM media.uploads WHERE media_id = %s", (photo["media_id"],)
        ).fetchone()
    assert row == ("erased",)


def test_a_disappeared_messages_media_goes_from_the_store(live: FullStack) -> None:
    alice, bob = account(live, "alice"), account(live, "bob")
    settings = live.settings

    async def scenario() -> str:
        a = await client(live, alice)
        try:
            hello = await a.send_text("hello", to=bob.user_id)
            await a.set_timer(hello.chat_id, SHORT_TIMER_S)
            photo = await asyncio.to_thread(
                upload_media, live.base, alice, a_picture(), "image/png"
            )
            await a.send_media(photo, chat_id=hello.chat_id)
            return str(photo["media_id"])
        finally:
            await a.close()

    media_id = asyncio.run(scenario())
    assert asyncio.run(stored_object(settings, media_id))
    asyncio.run(object_deleted(settings, media_id, SHORT_TIMER_S + ERASE_GRACE_S + 30))
