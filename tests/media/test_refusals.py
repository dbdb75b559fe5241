"""Each bad upload gets its own error code and leaves nothing behind in the store."""

from __future__ import annotations

import asyncio
import hashlib
import io
import time
from typing import Any

import httpx
import pytest
from PIL import Image

from client import Account, CommandFailed
from client.media import confirm_upload, put_object, request_upload, upload_media
from domain.media import object_key, upload_key
from tests.media.conftest import (
    GC_GRACE_S,
    MAX_DURATION_S,
    UNSENT_GRACE_S,
    UPLOAD_BURST,
    MediaStack,
    photo,
    voice_note,
)


async def _ask(stack: MediaStack, account: Account, **body: Any) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.post(
            f"{stack.base}/v1/media/uploads",
            json=body,
            headers={"Authorization": f"Bearer {account.access_token}"},
        )


async def _refused_on_confirm(
    stack: MediaStack, data: bytes, declared: dict[str, Any], code: str
) -> None:
    """Upload `data` as `declared`; the confirm fails with `code` and nothing is left."""
    owner = await stack.account()
    upload = await asyncio.to_thread(
        request_upload,
        stack.base,
        owner,
        declared.get("size", len(data)),
        declared.get("mime_type", "image/png"),
        declared.get("sha256", hashlib.sha256(data).hexdigest()),
        declared.get("kind", "image"),
    )
    await asyncio.to_thread(put_object, upload["upload_url"], data, upload["headers"])
    with pytest.raises(CommandFailed) as refused:
        await asyncio.to_thread(confirm_upload, stack.base, owner, upload["media_id"])
    assert refused.value.code == code
    media_id = upload["media_id"]
    assert await stack.objects.head(upload_key(media_id)) is None
    assert await stack.objects.head(object_key(media_id)) is None
    with pytest.raises(CommandFailed) as again:
        await asyncio.to_thread(confirm_upload, stack.base, owner, media_id)
    assert again.value.code == "unknown_media"


def _png(width: int, height: int, mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, (width, height)).save(out, "PNG")
    return out.getvalue()


async def test_a_declared_size_that_differs_is_refused(media_stack: MediaStack) -> None:
    data = _png(20, 20)
    await _refused_on_confirm(media_stack, data, {"size": len(data) + 1}, "size_mismatch")


async def test_a_declared_hash_that_differs_is_refused(media_stack: MediaStack) -> None:
    await _refused_on_confirm(
        media_stack, _png(20, 20), {"sha256": hashlib.sha256(b"other").hexdigest()}, "hash_mismatch"
    )


async def test_bytes_that_are_not_the_declared_type_are_refused(media_stack: MediaStack) -> None:
    # A JPEG declared as PNG, and a script with a photo's name and type.
    await _refused_on_confirm(
        media_stack, photo(16, 16), {"mime_type": "image/png"}, "type_mismatch"
    )
    script = b"#!/bin/sh\necho not a photo\n"
    await _refused_on_confirm(media_stack, script, {"mime_type": "image/jpeg"}, "type_mismatch")


async def test_a_decompression_bomb_is_refused(media_stack: MediaStack) -> None:
    bomb = _png(10_000, 10_000, mode="1")  # 100 Mpixels in a few kilobytes
    assert len(bomb) < 100_000
    await _refused_on_confirm(media_stack, bomb, {}, "media_bomb")


async def test_a_sound_longer_than_allowed_is_refused(media_stack: MediaStack) -> None:
    long_note = voice_note(seconds=MAX_DURATION_S + 5)
    declared = {"mime_type": "audio/ogg", "kind": "audio"}
    await _refused_on_confirm(media_stack, long_note, declared, "media_too_long")


async def test_a_broken_video_is_refused(media_stack: MediaStack) -> None:
    broken = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8  # MP4's magic, then noise
    declared = {"mime_type": "video/mp4", "kind": "video"}
    await _refused_on_confirm(media_stack, broken, declared, "media_unreadable")


async def test_a_broken_image_is_refused(media_stack: MediaStack) -> None:
    broken = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4  # a JPEG's magic, then noise
    await _refused_on_confirm(media_stack, broken, {"mime_type": "image/jpeg"}, "media_unreadable")


async def test_requests_outside_the_rules_are_refused(media_stack: MediaStack) -> None:
    user = await media_stack.account()
    sha = hashlib.sha256(b"x").hexdigest()
    cases = [
        (
            {"kind": "image", "size": 17 * 1024 * 1024, "mime_type": "image/png"},
            413,
            "media_too_large",
        ),
        (
            {"kind": "image", "size": 10, "mime_type": "application/pdf"},
            415,
            "media_type_not_allowed",
        ),
        ({"kind": "hologram", "size": 10, "mime_type": "image/png"}, 400, "bad_upload"),
        ({"kind": "image", "size": -1, "mime_type": "image/png"}, 400, "bad_upload"),
        (
            {"kind": "image", "size": 10, "mime_type": "image/png", "sha256": "zz"},
            400,
            "bad_upload",
        ),
    ]
    for body, status, code in cases:
        answer = await _ask(media_stack, user, **{"sha256": sha, **body})
        assert (answer.status_code, answer.json()["error"]["code"]) == (status, code), body
    # A document may be 2 GiB, and of any type (another user: each refusal took a token).
    answer = await _ask(
        media_stack,
        await media_stack.account(),
        kind="document",
        size=2 * 1024**3,
        mime_type="text/plain",
        sha256=sha,
    )
    assert answer.status_code == 201


async def test_confirming_before_uploading_is_refused(media_stack: MediaStack) -> None:
    owner = await media_stack.account()
    upload = await asyncio.to_thread(
        request_upload, media_stack.base, owner, 10, "image/png", "0" * 64, "image"
    )
    with pytest.raises(CommandFailed) as refused:
        await asyncio.to_thread(confirm_upload, media_stack.base, owner, upload["media_id"])
    assert refused.value.code == "media_not_uploaded"


async def test_only_the_owners_confirmed_upload_can_be_sent(media_stack: MediaStack) -> None:
    alice, mallory, bob = [await media_stack.account() for _ in range(3)]
    data = photo(24, 24)
    confirmed = await asyncio.to_thread(upload_media, media_stack.base, alice, data, "image/jpeg")
    pending = await asyncio.to_thread(
        request_upload,
        media_stack.base,
        alice,
        len(data),
        "image/jpeg",
        hashlib.sha256(data).hexdigest(),
        "image",
    )
    # Someone else's media id, confirmed or not, is unknown to them (on confirm too).
    with pytest.raises(CommandFailed) as refused:
        await asyncio.to_thread(confirm_upload, media_stack.base, mallory, pending["media_id"])
    assert refused.value.code == "unknown_media"
    thief, owner = await media_stack.client(mallory), await media_stack.client(alice)
    try:
        for media_id, client, code in (
            (confirmed["media_id"], thief, "unknown_media"),
            ("A" * 32, owner, "unknown_media"),
            (pending["media_id"], owner, "media_not_confirmed"),
        ):
            with pytest.raises(CommandFailed) as refused:
                await client.send_media({"media_id": media_id}, to=bob.user_id)
            assert refused.value.code == code
        # A client cannot dress a reference up: the stored one is sent, whatever it said.
        frame = {
            "type": "send",
            "local_id": "l-forged",
            "to": bob.user_id,
            "kind": "media",
            "media": {**confirmed, "size": 1, "thumbnail": "Zm9yZ2Vk"},
        }
        ack = await owner.request(frame)
        assert ack["type"] == "ack"
    finally:
        await thief.close()
        await owner.close()


async def test_uploads_are_rate_limited_per_user(media_stack: MediaStack) -> None:
    user = await media_stack.account()
    body = {"kind": "image", "size": 10, "mime_type": "image/png", "sha256": "0" * 64}
    for _ in range(UPLOAD_BURST):
        assert (await _ask(media_stack, user, **body)).status_code == 201
    refused = await _ask(media_stack, user, **body)
    assert (refused.status_code, refused.json()["error"]["code"]) == (429, "rate_limited")
    assert int(refused.headers["Retry-After"]) >= 1


async def test_an_upload_never_confirmed_is_collected(media_stack: MediaStack) -> None:
    owner = await media_stack.account()
    data = _png(8, 8)
    upload = await asyncio.to_thread(
        request_upload,
        media_stack.base,
        owner,
        len(data),
        "image/png",
        hashlib.sha256(data).hexdigest(),
        "image",
    )
    await asyncio.to_thread(put_object, upload["upload_url"], data, upload["headers"])
    key = upload_key(upload["media_id"])
    assert await media_stack.objects.head(key) is not None
    deadline = time.monotonic() + GC_GRACE_S + 30
    while await media_stack.objects.head(key) is not None:
        assert time.monotonic() < deadline, "the unconfirmed upload was not collected"
        await asyncio.sleep(0.25)
    with pytest.raises(CommandFailed) as refused:
        await asyncio.to_thread(confirm_upload, media_stack.base, owner, upload["media_id"])
    assert refused.value.code == "unknown_media"


async def test_a_confirmed_upload_never_sent_is_collected(media_stack: MediaStack) -> None:
    owner, peer = await media_stack.account(), await media_stack.account()
    kept = await asyncio.to_thread(
        upload_media, media_stack.base, owner, photo(16, 16), "image/jpeg"
    )
    dropped = await asyncio.to_thread(
        upload_media, media_stack.base, owner, photo(20, 20), "image/jpeg"
    )
    client = await media_stack.client(owner)
    try:
        await client.send_media(kept, to=peer.user_id)
        key = object_key(dropped["media_id"])
        deadline = time.monotonic() + UNSENT_GRACE_S + 30
        while await media_stack.objects.head(key) is not None:
            assert time.monotonic() < deadline, "the unsent upload was not collected"
            await asyncio.sleep(0.25)
        with pytest.raises(CommandFailed) as refused:
            await client.send_media(dropped, to=peer.user_id)
        assert refused.value.code == "unknown_media"
    finally:
        await client.close()
    assert await media_stack.objects.head(object_key(kept["media_id"])) is not None
