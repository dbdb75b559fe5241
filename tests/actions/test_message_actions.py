"""Replies, reactions, edits, deletes, timers and forwards end to end: WebSocket frames,
the query API, the Redis cache and a rebuild of every projection, on the real stack
(docs/protocol.md, "What members do with a message"). The stack is this package's own:
another package's would hold the relay's lock (one relay per database is active)."""

from __future__ import annotations

import asyncio
import base64
import io
import time
import uuid
from typing import Any

import httpx
import psycopg
import pytest
import redis
from PIL import Image

from bench.stand_ins import stand_in_account
from client import Account, Ack, ChatClient, CommandFailed, upload_media
from infra.settings import Settings
from projections.cache import PREFIX
from projections.replay.listing import PROJECTIONS
from projections.replay.rebuild import RebuildOptions, rebuild
from tests.actions.conftest import EDIT_WINDOW_S, SHORT_TIMER_S
from tests.fullstack import FullStack
from tests.replay.conftest import settle


def account(live: FullStack, name: str) -> Account:
    return asyncio.run(stand_in_account(live.settings, name))


async def client(live: FullStack, who: Account) -> ChatClient:
    chat = ChatClient(live.base, who)
    await chat.connect()
    return chat


async def history(live: FullStack, who: Account, ack: Ack) -> list[dict[str, Any]]:
    """The chat's history as `who` reads it, once the query side has `ack`'s write."""
    assert live.queries is not None
    headers = {
        "Authorization": f"Bearer {who.access_token}",
        "X-Parley-Position": f"{ack.chat_id}:{ack.position}",
    }
    async with httpx.AsyncClient() as http:
        answer = await http.get(
            f"{live.queries}/v1/chats/{ack.chat_id}/messages", headers=headers, timeout=30
        )
    assert answer.status_code == 200, answer.text
    messages: list[dict[str, Any]] = answer.json()["messages"]
    return messages


async def versions(live: FullStack, who: Account, ack: Ack, seq: int) -> httpx.Response:
    assert live.queries is not None
    headers = {
        "Authorization": f"Bearer {who.access_token}",
        "X-Parley-Position": f"{ack.chat_id}:{ack.position}",
    }
    async with httpx.AsyncClient() as http:
        return await http.get(
            f"{live.queries}/v1/chats/{ack.chat_id}/messages/{seq}/versions",
            headers=headers,
            timeout=30,
        )


async def last_message(live: FullStack, who: Account, chat_id: str, position: int) -> Any:
    """The chat's `last_message` in `who`'s chat list, once the query side has `position`."""
    assert live.queries is not None
    headers = {
        "Authorization": f"Bearer {who.access_token}",
        "X-Parley-Position": f"{chat_id}:{position}",
    }
    async with httpx.AsyncClient() as http:
        answer = await http.get(f"{live.queries}/v1/chats", headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    [chat] = [c for c in answer.json()["chats"] if c["chat_id"] == chat_id]
    return chat["last_message"]


def text(message: dict[str, Any]) -> str:
    return base64.b64decode(message["body"]).decode()


async def refused(call: Any) -> str:
    with pytest.raises(CommandFailed) as failure:
        await call
    return failure.value.code


def test_a_reply_quotes_its_message_and_shows_it_deleted_once_it_is(live: FullStack) -> None:
    alice, bob = account(live, "alice"), account(live, "bob")

    async def scenario() -> None:
        a, b = await client(live, alice), await client(live, bob)
        try:
            first = await a.send_text("lunch at noon?", to=bob.user_id)
            chat = first.chat_id
            await b.wait_until(lambda: 1 in b.chats[chat].messages)
            reply = await b.send_text("yes!", chat_id=chat, reply_to=1)
            await a.wait_until(lambda: reply.seq in a.chats[chat].messages)
            pushed = a.chats[chat].messages[reply.seq]
            assert pushed["ref"] == 1
            assert pushed["quote"] == {
                "seq": 1,
                "sender": alice.user_id,
                "kind": "text",
                "excerpt": "lunch at noon?",
            }
            assert await refused(b.send_text("?", chat_id=chat, reply_to=99)) == ("unknown_message")
            gone = await a.delete(chat, 1)
            messages = await history(live, bob, gone)
            assert messages[1]["quote"] == {"seq": 1, "deleted": True}
            await b.wait_until(
                lambda: b.shown(chat)[reply.seq].quote == {"seq": 1, "deleted": True}
            )
        finally:
            await a.close()
            await b.close()

    asyncio.run(scenario())


def test_reactions_one_per_member_counted_and_pushed(live: FullStack) -> None:
    alice, bob, carol, dave = (account(live, n) for n in ("alice", "bob", "carol", "dave"))

    async def scenario() -> None:
        a, b, c, d = [await client(live, who) for who in (alice, bob, carol, dave)]
        try:
            group = await a.create_group("Climbing", [bob.user_id, carol.user_id])
            sent = await a.send_text("Saturday?", chat_id=group)
            await b.react(group, sent.seq, "👍")
            await b.react(group, sent.seq, "❤️")  # changed: still one from Bob
            last = await c.react(group, sent.seq, "❤️")
            await a.wait_until(
                lambda: a.shown(group)[sent.seq].reactions == {bob.user_id: "❤️", carol.user_id: "❤️"}
            )
            messages = await history(live, bob, last)
            counted = {m["seq"]: m["reactions"] for m in messages}
            assert counted[sent.seq] == [{"emoji": "❤️", "count": 2, "mine": True}]
            assert all(counted[m["seq"]] == [] for m in messages if m["seq"] != sent.seq)
            removed = await b.react(group, sent.seq, "")
            messages = await history(live, carol, removed)
            assert messages[sent.seq - 1]["reactions"] == [{"emoji": "❤️", "count": 1, "mine": True}]
            # Someone never in the chat is told nothing of it; a former member is refused.
            assert await refused(d.react(group, sent.seq, "👍")) == "unknown_chat"
            await a.group("remove_member", group, user_id=carol.user_id)
            assert await refused(c.react(group, sent.seq, "👍")) == "not_member"
            for bad in ("ok", "👍👍", "a👍"):
                assert await refused(b.react(group, sent.seq, bad)) == "invalid_reaction"
            assert await refused(b.react(group, removed.seq, "👍")) == "unknown_message"
        finally:
            for each in (a, b, c, d):
                await each.close()

    asyncio.run(scenario())


def test_an_edit_shows_everywhere_and_its_versions_to_the_sender_only(live: FullStack) -> None:
    alice, bob = account(live, "alice"), account(live, "bob")

    async def scenario() -> None:
        a, b = await client(live, alice), await client(live, bob)
        try:
            sent = await a.send_text("see you at 7", to=bob.user_id)
            chat = sent.chat_id
            await a.edit(chat, sent.seq, "see you at 8")
            edited = await a.edit(chat, sent.seq, "see you at 9")
            await b.wait_until(lambda: b.shown(chat)[1].text == "see you at 9")
            assert b.shown(chat)[1].edited
            messages = await history(live, bob, edited)
            assert (text(messages[0]), messages[0]["edited"]) == ("see you at 9", True)
            # The texts edits replaced are the sender's: an earlier edit has no text left.
            assert [text(m) for m in messages[1:]] == ["", "see you at 9"]
            mine = await versions(live, alice, edited, sent.seq)
            assert [text(v) for v in mine.json()["versions"]] == [
                "see you at 7",
                "see you at 8",
                "see you at 9",
            ]
            theirs = await versions(live, bob, edited, sent.seq)
            assert (theirs.status_code, theirs.json()["error"]["code"]) == (403, "not_sender")
            assert await refused(b.edit(chat, sent.seq, "mine now")) == "not_sender"
        finally:
            await a.close()
            await b.close()

    asyncio.run(scenario())


def test_an_edit_after_the_window_is_refused(live: FullStack) -> None:
    alice, bob = account(live, "alice"), account(live, "bob")

    async def scenario() -> None:
        a = await client(live, alice)
        try:
            sent = await a.send_text("typo", to=bob.user_id)
            acked = time.monotonic()
            # The window is the behaviour under test: it has to pass.
            await asyncio.sleep(EDIT_WINDOW_S + 0.5 - (time.monotonic() - acked))
            assert await refused(a.edit(sent.chat_id, sent.seq, "fixed")) == "too_late"
        finally:
            await a.close()

    asyncio.run(scenario())


def test_an_offline_member_catches_up_on_edits_and_deletes_in_seq_order(
    live: FullStack,
) -> None:
    alice, bob = account(live, "alice"), account(live, "bob")

    async def scenario() -> None:
        a, b = await client(live, alice), await client(live, bob)
        try:
            first = await a.send_text("hello", to=bob.user_id)
            chat = first.chat_id
            await b.wait_until(lambda: 1 in b.chats[chat].messages)
            await b.close()  # Bob is offline
            await a.edit(chat, 1, "hello, Bob")
            await a.send_text("secret", chat_id=chat)
            await a.delete(chat, 3)
            await a.send_text("bye", chat_id=chat)
            await b.reconnect()
            await b.wait_until(lambda: b.chats[chat].contiguous == 5)
            shown = b.shown(chat)
            assert [(s.seq, s.text, s.edited, s.deleted) for s in shown.values()] == [
                (1, "hello, Bob", True, False),
                (3, "", False, True),
                (5, "bye", False, False),
            ]
            assert "secret" not in str(b.frames)  # synced after the delete: never seen
        finally:
            await a.close()
            await b.close()

    asyncio.run(scenario())


def _stored_anywhere(settings: Settings, needle: bytes) -> list[str]:
    """Where a body is still found in the read model (PostgreSQL) and the Redis cache."""
    places = []
    with psycopg.connect(settings.pg_conninfo) as conn:
        for table, column in (("messages", "body"), ("message_versions", "body")):
            row = conn.execute(
                f"SELECT count(*) FROM read.{table} WHERE position(%s IN {column}) > 0",
                (needle,),
            ).fetchone()
            if row and row[0]:
                places.append(table)
        row = conn.execute(
            "SELECT count(*) FROM read.messages WHERE quote::text LIKE %s",
            (f"%{needle.decode()}%",),
        ).fetchone()
        if row and row[0]:
            places.append("quotes")
    cache = redis.Redis.from_url(settings.redis_url)
    try:
        encoded = base64.b64encode(needle)
        for key in cache.scan_iter(match=f"{PREFIX}chat:*:recent", count=1000):
            members: Any = cache.zrange(key, 0, -1)
            if any(needle in m or encoded in m for m in members):
                places.append(f"redis {key.decode()}")
    finally:
        cache.close()
    return places


def test_a_delete_after_projection_cache_and_push_is_gone_everywhere_even_after_a_rebuild(
    live: FullStack,
) -> None:
    alice, bob, carol = (account(live, n) for n in ("alice", "bob", "carol"))
    secret = f"the code is {time.time_ns()}"

    async def scenario() -> None:
        a, b, c = [await client(live, who) for who in (alice, bob, carol)]
        try:
            group = await a.create_group("Ops", [bob.user_id, carol.user_id])
            sent = await b.send_text(secret, chat_id=group)
            edited = await b.edit(group, sent.seq, secret + "!")
            reply = await c.send_text("noted", chat_id=group, reply_to=sent.seq)
            await a.wait_until(lambda: reply.seq in a.chats[group].messages)
            assert text(a.chats[group].messages[sent.seq]) == secret  # pushed
            settle(live.settings)  # projected, and cached in Redis
            assert "messages" in _stored_anywhere(live.settings, secret.encode())
            assert any(
                p.startswith("redis") for p in _stored_anywhere(live.settings, secret.encode())
            )
            assert (await history(live, carol, edited))[sent.seq - 1]["edited"]

            gone = await a.delete(group, sent.seq)  # Alice, the group's admin
            await b.wait_until(lambda: b.shown(group)[sent.seq].deleted)
            await c.wait_until(lambda: c.shown(group)[sent.seq].deleted)
            messages = {m["seq"]: m for m in await history(live, carol, gone)}
            tombstone = messages[sent.seq]
            assert (tombstone["deleted"], tombstone["body"], tombstone["media"]) == (True, "", None)
            assert messages[reply.seq]["quote"] == {"seq": sent.seq, "deleted": True}
            settle(live.settings)
            assert _stored_anywhere(live.settings, secret.encode()) == []
            mine = await versions(live, bob, gone, sent.seq)
            assert mine.json()["versions"] == []
            # A device syncing from scratch gets the tombstone.
            fresh = await client(live, carol)
            try:
                assert fresh.chats[group].contiguous == 0  # a cursor: from the start
                await fresh.sync()
                await fresh.wait_until(lambda: fresh.chats[group].contiguous >= gone.seq)
                assert fresh.shown(group)[sent.seq].deleted
                assert secret not in str(fresh.frames)
            finally:
                await fresh.close()
        finally:
            for each in (a, b, c):
                await each.close()

    asyncio.run(scenario())
    summary = asyncio.run(rebuild(live.settings, RebuildOptions(tuple(PROJECTIONS))))
    assert summary.swapped
    settle(live.settings)
    assert _stored_anywhere(live.settings, secret.encode()) == []


# Disappearing messages: the stack allows a 3-second timer (PARLEY_DISAPPEARING_TIMERS_S).


def _restart_everything(live: FullStack) -> None:
    ready = {
        "processor": r"partitions_assigned partitions=\[\d",
        "relay": r"event=relay_active",
        "workers": r"Worker ready",
        "commands": r"event=commands_listening",
        "queries": r"event=queries_listening",
    }
    for name, service in live.services.items():
        service.stop()
        after = len(service.text())
        service.start()
        service.wait_for_log(ready[name], deadline_s=90, after=after)


def test_a_timer_is_announced_and_messages_disappear_after_a_restart_of_everything(
    live: FullStack,
) -> None:
    alice, bob = account(live, "alice"), account(live, "bob")
    secret = f"burn after reading {time.time_ns()}"

    async def first_part() -> tuple[str, Ack, Ack]:
        a, b = await client(live, alice), await client(live, bob)
        try:
            hello = await a.send_text("hello", to=bob.user_id)
            chat = hello.chat_id
            assert await refused(a.set_timer(chat, 60)) == "invalid_timer"
            await a.set_timer(chat, SHORT_TIMER_S)
            await b.wait_until(lambda: b.timer_of(chat) == SHORT_TIMER_S)  # announced
            sent = await a.send_text(secret, chat_id=chat)
            await b.wait_until(lambda: sent.seq in b.chats[chat].messages)
            assert b.chats[chat].messages[sent.seq]["expires_at"] is not None
            return chat, hello, sent
        finally:
            await a.close()
            await b.close()

    chat, hello, sent = asyncio.run(first_part())
    settle(live.settings)
    _restart_everything(live)

    async def second_part() -> None:
        deadline = time.monotonic() + SHORT_TIMER_S + 60
        while _stored_anywhere(live.settings, secret.encode()):
            assert time.monotonic() < deadline, "the message did not disappear in time"
            await asyncio.sleep(0.5)
        messages = {m["seq"]: m for m in await history(live, bob, sent)}
        assert messages[sent.seq]["deleted"] and messages[sent.seq]["body"] == ""
        assert text(messages[hello.seq]) == "hello"  # sent before the timer: stays
        b = await client(live, bob)
        try:
            assert b.chats[chat].contiguous == 0
            await b.sync()
            await b.wait_until(lambda: b.chats[chat].contiguous >= sent.seq)
            assert b.shown(chat)[sent.seq].deleted
            assert secret not in str(b.frames)
        finally:
            await b.close()

    asyncio.run(second_part())


# Forwarding


async def _projected(live: FullStack, who: Account, chat_id: str, position: int) -> None:
    """Wait (by read-your-writes) until the query side has a copy: forwards read it there."""
    await history(live, who, Ack(chat_id, "", "", 0, position, False))


def test_a_forward_copies_text_and_media_to_a_few_chats_counting_hops(live: FullStack) -> None:
    alice, bob, carol = (account(live, n) for n in ("alice", "bob", "carol"))
    picture = io.BytesIO()
    Image.new("RGB", (24, 16)).save(picture, "PNG")

    async def scenario() -> None:
        a, b, c = [await client(live, who) for who in (alice, bob, carol)]
        try:
            photo = await asyncio.to_thread(
                upload_media, live.base, bob, picture.getvalue(), "image/png"
            )
            sent = await b.send_media(photo, caption="the view", to=alice.user_id)
            with_carol = (await a.send_text("hi", to=carol.user_id)).chat_id
            group = await a.create_group("Friends", [carol.user_id])
            await _projected(live, alice, sent.chat_id, sent.position)
            answer = await a.forward(sent.chat_id, sent.seq, [with_carol, group])
            assert answer["forwarded"] == 1
            assert [r["chat_id"] for r in answer["results"] if "seq" in r] == [with_carol, group]
            copy = answer["results"][0]
            await c.wait_until(lambda: copy["seq"] in c.chats[with_carol].messages)
            got = c.chats[with_carol].messages[copy["seq"]]
            assert (got["kind"], text(got), got["forwarded"]) == ("media", "the view", 1)
            assert got["media"]["media_id"] == photo["media_id"]  # no re-upload
            assert c.shown(with_carol)[copy["seq"]].forwarded == 1
            assert live.queries is not None
            async with httpx.AsyncClient() as http:
                download = await http.get(
                    f"{live.queries}/v1/chats/{with_carol}/media/{photo['media_id']}",
                    headers={
                        "Authorization": f"Bearer {carol.access_token}",
                        "X-Parley-Position": f"{with_carol}:{copy['position']}",
                    },
                    timeout=30,
                )
            assert download.status_code == 200, download.text
            # Hop by hop between two chats: "forwarded many times" from the fifth.
            chat, seq, position = with_carol, copy["seq"], copy["position"]
            for hop in range(2, 7):
                await _projected(live, carol, chat, position)
                other = group if chat == with_carol else with_carol
                answer = await c.forward(chat, seq, [other])
                assert answer["forwarded"] == hop
                chat, seq, position = (
                    other,
                    answer["results"][0]["seq"],
                    answer["results"][0]["position"],
                )
            await a.wait_until(lambda: seq in a.chats[chat].messages)
            assert a.shown(chat)[seq].forwarded == 6
            # At most five chats at once; nothing one cannot see.
            six = [with_carol, group, sent.chat_id, *(str(uuid.uuid4()) for _ in range(3))]
            assert await refused(a.forward(sent.chat_id, sent.seq, six)) == "too_many_chats"
            assert await refused(c.forward(sent.chat_id, sent.seq, [group])) == "unknown_message"
            gone = await b.delete(sent.chat_id, sent.seq)
            await _projected(live, alice, sent.chat_id, gone.position)
            assert await refused(a.forward(sent.chat_id, sent.seq, [group])) == "unknown_message"
            # A chat the forwarder is not in is refused like any send there.
            stranger = await b.create_group("Bob's", [])
            answer = await a.forward(with_carol, 1, [stranger])
            assert answer["results"][0]["error"]["code"] == "unknown_chat"
        finally:
            for each in (a, b, c):
                await each.close()

    asyncio.run(scenario())


def test_the_chat_list_shows_the_message_its_actions_act_on_not_the_actions(
    live: FullStack,
) -> None:
    alice, bob, carol, dave = (account(live, n) for n in ("alice", "bob", "carol", "dave"))

    def state(last: dict[str, Any]) -> tuple[Any, ...]:
        return last["seq"], last["kind"], last["edited"], last["deleted"]

    async def scenario() -> None:
        a, b, c = [await client(live, who) for who in (alice, bob, carol)]
        try:
            group = await a.create_group("Dinner", [bob.user_id, carol.user_id])
            await a.send_text("at 8?", chat_id=group)
            second = await a.send_text("or 9?", chat_id=group)
            await b.wait_until(lambda: second.seq in b.chats[group].messages)
            reacted = await b.react(group, second.seq, "👍")  # seq 3
            assert state(await last_message(live, carol, group, reacted.position)) == (
                2,
                "text",
                False,
                False,
            )
            edited = await a.edit(group, second.seq, "or 9:30?")  # seq 4
            assert state(await last_message(live, carol, group, edited.position)) == (
                2,
                "text",
                True,
                False,
            )
            await c.group("leave_group", group)  # Carol saw seqs 1-4
            gone = await a.delete(group, second.seq)  # seq 5
            assert state(await last_message(live, bob, group, gone.position)) == (
                2,
                "text",
                False,
                True,
            )
            # Carol left before the delete: her last message is the one she saw, in the
            # state it is in now (deleted for everyone since), as in her history.
            assert state(await last_message(live, carol, group, gone.position)) == (
                2,
                "text",
                False,
                True,
            )
            later = await a.send_text("9:30 then", chat_id=group)  # seq 6
            await b.react(group, later.seq, "🍝")
            again = await b.react(group, 1, "👍")  # seq 8
            assert state(await last_message(live, bob, group, again.position)) == (
                6,
                "text",
                False,
                False,
            )
            # Dave joins after seq 8 and sees only a reaction since: no last message.
            await a.group("add_member", group, user_id=dave.user_id)
            since = await b.react(group, later.seq, "👍")
            assert await last_message(live, dave, group, since.position) is None
        finally:
            await a.close()
            await b.close()
            await c.close()

    asyncio.run(scenario())
