"""Retention: sent media nobody received goes after the inbox's retention; delivered stays.

The stack's own sweep keeps the 30 days; the operator's `parley media sweep` is run here
with a retention of under a second, against the same database and bucket. A send the
processor refuses gives its upload back, so the unsent collector takes it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from typing import Any

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from client import ChatClient, CommandFailed, fetch_media, upload_media
from client.media import download_url
from commands.media.retention import MediaRetention
from domain.media import object_key
from infra.objectstore import ObjectStore
from infra.settings import Settings
from tests.media.conftest import UNSENT_GRACE_S, MediaStack, photo

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_RETENTION_DAYS = 0.5 / 86400  # half a second
INTERVAL_S = 5


def _sweep(stack: MediaStack) -> str:
    """`parley media sweep` with the tiny retention, as an operator runs it."""
    env = {**os.environ, **stack.stack.env, "PARLEY_INBOX_TTL_DAYS": str(TINY_RETENTION_DAYS)}
    done = subprocess.run(
        [sys.executable, "-m", "parley.cli", "media", "sweep"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


async def _until(check: Any, what: str, deadline_s: float = 30) -> Any:
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            found = await asyncio.to_thread(check)
            if found:
                return found
        except CommandFailed:
            pass
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.2)


async def test_undelivered_media_expires_and_delivered_media_stays(
    media_stack: MediaStack,
) -> None:
    alice, bob, carol = [await media_stack.account() for _ in range(3)]
    received_data, unreceived_data = photo(40, 30), photo(30, 40)
    received = await asyncio.to_thread(
        upload_media, media_stack.base, alice, received_data, "image/jpeg"
    )
    unreceived = await asyncio.to_thread(
        upload_media, media_stack.base, alice, unreceived_data, "image/jpeg"
    )
    sender, receiver = await media_stack.client(alice), await media_stack.client(bob)
    try:
        to_bob = await sender.send_media(received, to=bob.user_id)  # bob's device acks it
        to_carol = await sender.send_media(unreceived, to=carol.user_id)  # carol never connects
        await receiver.wait_until(lambda: to_bob.seq in receiver.chats[to_bob.chat_id].messages)

        # What the sweep reads is projected: bob's delivery, and the message to carol.
        async def bobs_receipt() -> str | None:
            async with httpx.AsyncClient() as http:
                answer = await http.get(
                    f"{media_stack.queries}/v1/chats/{to_bob.chat_id}"
                    f"/messages/{to_bob.seq}/receipts",
                    headers={"Authorization": f"Bearer {alice.access_token}"},
                )
            recipient = answer.json().get("recipient") if answer.status_code == 200 else None
            return recipient["status"] if recipient else None

        deadline = time.monotonic() + 30
        while await bobs_receipt() not in ("DELIVERED", "READ"):
            assert time.monotonic() < deadline, "bob's delivery was not projected"
            await asyncio.sleep(0.2)
    finally:
        await receiver.close()
    await _until(
        lambda: download_url(media_stack.queries, alice, to_carol.chat_id, unreceived["media_id"]),
        "the message to carol was not projected",
    )

    key = object_key(unreceived["media_id"])
    deadline = time.monotonic() + 60
    report = await asyncio.to_thread(_sweep, media_stack)
    while await media_stack.objects.head(key) is not None:
        assert time.monotonic() < deadline, "the undelivered media was not deleted"
        await asyncio.sleep(0.2)
        report = await asyncio.to_thread(_sweep, media_stack)
    assert "sent media expired (never delivered, objects deleted): " in report

    # Never delivered: gone from the store; carol, still a member, is told it expired.
    with pytest.raises(CommandFailed) as expired:
        await asyncio.to_thread(
            download_url, media_stack.queries, carol, to_carol.chat_id, unreceived["media_id"]
        )
    assert expired.value.code == "media_expired"
    with pytest.raises(CommandFailed) as refused:
        await sender.send_media(unreceived, to=bob.user_id)
    assert refused.value.code == "media_expired"
    await sender.close()

    # Delivered to bob: kept, and a second sweep changes nothing.
    _sweep(media_stack)
    assert await media_stack.objects.head(object_key(received["media_id"])) is not None
    got = await asyncio.to_thread(
        fetch_media, media_stack.queries, bob, to_bob.chat_id, received["media_id"]
    )
    assert got == received_data


async def test_a_refused_send_leaves_its_upload_unsent(media_stack: MediaStack) -> None:
    alice = await media_stack.account()
    media = await asyncio.to_thread(
        upload_media, media_stack.base, alice, photo(12, 12), "image/jpeg"
    )
    sender = await media_stack.client(alice)
    try:
        with pytest.raises(CommandFailed) as refused:  # a chat she is not in
            await sender.send_media(media, chat_id=str(uuid.uuid4()))
        assert refused.value.code in ("not_member", "unknown_chat")
    finally:
        await sender.close()
    # Not marked sent: collected like any upload no send took.
    key = object_key(media["media_id"])
    deadline = time.monotonic() + UNSENT_GRACE_S + 30
    while await media_stack.objects.head(key) is not None:
        assert time.monotonic() < deadline, "the upload of a refused send was not collected"
        await asyncio.sleep(0.25)


async def test_the_sweep_runs_once_per_interval_across_processes_and_restarts(
    topics: Settings,
) -> None:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        topics.pg_conninfo, min_size=1, max_size=2, open=False, kwargs={"autocommit": True}
    )
    await pool.open()
    try:
        name = f"test-{uuid.uuid4().hex[:8]}"

        def sweeper(interval_s: float) -> MediaRetention:
            return MediaRetention(ObjectStore(topics), pool, 30 * 86400, 10, interval_s, name)

        first, second = sweeper(INTERVAL_S), sweeper(INTERVAL_S)
        assert await first.claim()
        assert not await second.claim()  # another process: the round is taken
        assert not await sweeper(INTERVAL_S).claim()  # a restarted one: its schedule is kept
        await first.sweep()
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT finished_at IS NOT NULL FROM media.sweeps WHERE name = %s", (name,)
            )
            assert await cur.fetchone() == (True,)
        deadline = time.monotonic() + INTERVAL_S + 30
        while not await second.claim():  # due again after the interval: one takes it
            assert time.monotonic() < deadline, "the next round never came due"
            await asyncio.sleep(0.2)
    finally:
        await pool.close()


async def test_a_forward_of_someone_elses_media_restarts_its_retention(
    media_stack: MediaStack, topics: Settings
) -> None:
    alice, bob, carol = [await media_stack.account() for _ in range(3)]
    media = await asyncio.to_thread(
        upload_media, media_stack.base, alice, photo(20, 20), "image/jpeg"
    )
    media_id = media["media_id"]
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        topics.pg_conninfo, min_size=1, max_size=2, open=False, kwargs={"autocommit": True}
    )
    await pool.open()
    sender = await media_stack.client(alice)
    forwarder = ChatClient(media_stack.base, bob, auto_delivered=False)  # never delivered
    await forwarder.connect()

    async def backdate() -> None:  # as if alice had sent it an hour ago
        async with pool.connection() as conn:
            await conn.execute(
                "UPDATE media.uploads SET sent_at = now() - interval '1 hour' WHERE media_id = %s",
                (media_id,),
            )

    async def upload() -> tuple[Any, ...]:
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT sent_at > now() - interval '1 minute', fate FROM media.uploads "
                "WHERE media_id = %s",
                (media_id,),
            )
            row = await cur.fetchone()
        assert row is not None
        return tuple(row)

    # Undelivered media is kept 30 minutes past its last send by this sweep.
    sweep = MediaRetention(ObjectStore(topics), pool, 1800, 100, 3600, f"test-{uuid.uuid4().hex}")
    try:
        sent = await sender.send_media(media, to=bob.user_id)
        with_carol = (await forwarder.send_text("look", to=carol.user_id)).chat_id
        await forwarder.wait_until(lambda: sent.seq in forwarder.chats[sent.chat_id].messages)
        position = forwarder.chats[sent.chat_id].messages[sent.seq]["position"]
        await asyncio.to_thread(  # the message is projected: a forward reads it there
            download_url, media_stack.queries, bob, sent.chat_id, media_id, position
        )
        await backdate()

        answer = await forwarder.forward(sent.chat_id, sent.seq, [with_carol])
        assert "seq" in answer["results"][0], answer
        assert await upload() == (True, None)  # the forward is its last send
        await sweep.sweep()
        assert await upload() == (True, None)  # not due: kept undecided
        assert await media_stack.objects.head(object_key(media_id)) is not None

        # Past the retention again, never delivered: expired, and no forward revives it.
        await backdate()
        await sweep.sweep()
        assert (await upload())[1] == "expired"
        with pytest.raises(CommandFailed) as refused:
            await forwarder.forward(sent.chat_id, sent.seq, [with_carol])
        assert refused.value.code == "media_expired"
    finally:
        await sender.close()
        await forwarder.close()
        await pool.close()
