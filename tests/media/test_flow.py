"""A photo from upload to the receiver's thumbnail and download, against the real store."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import time
from typing import Any

import httpx
import psycopg
import pytest
from PIL import Image

from client import CommandFailed, fetch_media, upload_media
from client.media import download_url
from domain.media import object_key, upload_key
from projections.replay.locks import pause_workers, resume_workers
from tests.media.conftest import DOWNLOAD_TTL_S, MediaStack, photo, video, voice_note


async def test_a_photo_arrives_with_its_thumbnail_and_downloads(media_stack: MediaStack) -> None:
    alice, bob = await media_stack.account(), await media_stack.account()
    data = photo(800, 600)
    media = await asyncio.to_thread(upload_media, media_stack.base, alice, data, "image/jpeg")
    assert media["media_id"] and len(media["media_id"]) == 32
    assert (media["kind"], media["width"], media["height"]) == ("image", 800, 600)
    assert media["size"] == len(data) and media["sha256"] == hashlib.sha256(data).hexdigest()

    sender, receiver = await media_stack.client(alice), await media_stack.client(bob)
    try:
        ack = await sender.send_media(media, caption="the view", to=bob.user_id)
        await receiver.wait_until(lambda: ack.seq in receiver.chats[ack.chat_id].messages)
        pushed = receiver.chats[ack.chat_id].messages[ack.seq]
    finally:
        await sender.close()
        await receiver.close()
    assert pushed["kind"] == "media"
    assert base64.b64decode(pushed["body"]) == b"the view"
    assert pushed["media"] == media

    thumbnail = Image.open(io.BytesIO(base64.b64decode(pushed["media"]["thumbnail"])))
    assert thumbnail.format == "WEBP"
    assert max(thumbnail.size) <= 160 and thumbnail.size[0] > thumbnail.size[1]
    assert "exif" not in thumbnail.info and not thumbnail.getexif()

    # The pushed message's position: the download waits for the query side to hold it.
    got = await asyncio.to_thread(
        fetch_media, media_stack.queries, bob, ack.chat_id, media["media_id"], pushed["position"]
    )
    assert got == data
    # The URL is a plain presigned GET: a range of the file comes back as asked.
    found = await asyncio.to_thread(
        download_url, media_stack.queries, bob, ack.chat_id, media["media_id"]
    )
    async with httpx.AsyncClient() as http:
        part = await http.get(found["url"], headers={"Range": "bytes=0-9"})
    assert part.status_code == 206 and part.content == data[:10]
    # Parley keeps the bytes where the client cannot write them any more.
    assert await media_stack.objects.head(upload_key(media["media_id"])) is None
    assert (await media_stack.objects.head(object_key(media["media_id"]))) is not None


async def test_media_pushed_before_it_is_projected_downloads_with_its_position(
    media_stack: MediaStack,
) -> None:
    alice, bob = await media_stack.account(), await media_stack.account()
    data = photo(48, 48)
    media = await asyncio.to_thread(upload_media, media_stack.base, alice, data, "image/jpeg")
    sender, receiver = await media_stack.client(alice), await media_stack.client(bob)
    # The projections wait (the replay's pause): the push still comes, the query side lags.
    paused = psycopg.connect(media_stack.stack.settings.pg_conninfo, autocommit=True)
    try:
        pause_workers(paused)
        ack = await sender.send_media(media, to=bob.user_id)
        await receiver.wait_until(lambda: ack.seq in receiver.chats[ack.chat_id].messages)
        position = receiver.chats[ack.chat_id].messages[ack.seq]["position"]
        assert isinstance(position, int)
        with pytest.raises(CommandFailed) as unseen:
            await asyncio.to_thread(
                download_url, media_stack.queries, bob, ack.chat_id, media["media_id"]
            )
        assert unseen.value.code == "unknown_chat"  # not projected: the chat is new too
        with pytest.raises(CommandFailed) as waited:  # for the 2 s the service waits
            await asyncio.to_thread(
                download_url, media_stack.queries, bob, ack.chat_id, media["media_id"], position
            )
        assert waited.value.code == "not_yet_projected"
    finally:
        resume_workers(paused)
        paused.close()
        await sender.close()
        await receiver.close()
    got = await asyncio.to_thread(
        fetch_media, media_stack.queries, bob, ack.chat_id, media["media_id"], position
    )
    assert got == data


async def test_a_download_url_expires(media_stack: MediaStack) -> None:
    alice, bob = await media_stack.account(), await media_stack.account()
    data = photo(64, 64)
    media = await asyncio.to_thread(upload_media, media_stack.base, alice, data, "image/jpeg")
    sender = await media_stack.client(alice)
    try:
        ack = await sender.send_media(media, to=bob.user_id)
    finally:
        await sender.close()
    found = await _when_projected(
        lambda: download_url(media_stack.queries, bob, ack.chat_id, media["media_id"])
    )
    async with httpx.AsyncClient() as http:
        assert (await http.get(found["url"])).content == data
        deadline = time.monotonic() + DOWNLOAD_TTL_S + 10
        status = 200
        while status == 200 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            status = (await http.get(found["url"])).status_code
    assert status == 403


async def test_only_members_who_saw_the_message_may_download(media_stack: MediaStack) -> None:
    alice, bob, carol = [await media_stack.account() for _ in range(3)]
    media = await asyncio.to_thread(
        upload_media, media_stack.base, alice, photo(32, 32), "image/jpeg"
    )
    sender = await media_stack.client(alice)
    try:
        ack = await sender.send_media(media, to=bob.user_id)
        other = await sender.send_text("hi carol", to=carol.user_id)
    finally:
        await sender.close()
    await _when_projected(
        lambda: download_url(media_stack.queries, bob, ack.chat_id, media["media_id"])
    )
    # Carol is in no chat where it was sent; in her own chat with alice it was not sent.
    for chat_id in (ack.chat_id, other.chat_id):
        with pytest.raises(CommandFailed) as refused:
            await asyncio.to_thread(
                download_url, media_stack.queries, carol, chat_id, media["media_id"]
            )
        assert refused.value.code in ("unknown_media", "unknown_chat")
    # Once her own chat is projected (until then it is an unknown chat to her), the media
    # is unknown there.
    deadline = time.monotonic() + 30
    while True:
        with pytest.raises(CommandFailed) as refused:
            await asyncio.to_thread(
                download_url, media_stack.queries, carol, other.chat_id, media["media_id"]
            )
        if refused.value.code != "unknown_chat" or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert refused.value.code == "unknown_media"


async def _when_projected(read: object) -> dict[str, Any]:
    """The answer of `read` once the projection has the message (it follows the ack)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return await asyncio.to_thread(read)  # type: ignore[arg-type]
        except CommandFailed as exc:
            if exc.code not in ("unknown_media", "unknown_chat") or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.1)


async def test_a_video_gets_a_poster_frame_and_its_duration(media_stack: MediaStack) -> None:
    alice, bob = await media_stack.account(), await media_stack.account()
    clip = video(seconds=2.0, width=320, height=240)
    media = await asyncio.to_thread(
        upload_media, media_stack.base, alice, clip, "video/mp4", "video"
    )
    assert (media["kind"], media["width"], media["height"]) == ("video", 320, 240)
    assert 1900 <= media["duration_ms"] <= 2100
    poster = Image.open(io.BytesIO(base64.b64decode(media["thumbnail"])))
    assert poster.format == "WEBP" and poster.size == (160, 120) and not poster.getexif()
    sender, receiver = await media_stack.client(alice), await media_stack.client(bob)
    try:
        ack = await sender.send_media(media, to=bob.user_id)
        await receiver.wait_until(lambda: ack.seq in receiver.chats[ack.chat_id].messages)
        assert receiver.chats[ack.chat_id].messages[ack.seq]["media"] == media
    finally:
        await sender.close()
        await receiver.close()


async def test_a_voice_note_gets_its_duration(media_stack: MediaStack) -> None:
    alice = await media_stack.account()
    note = voice_note(seconds=3.0)
    media = await asyncio.to_thread(
        upload_media, media_stack.base, alice, note, "audio/ogg", "audio"
    )
    assert media["kind"] == "audio" and 2900 <= media["duration_ms"] <= 3100
    assert "thumbnail" not in media and "width" not in media
