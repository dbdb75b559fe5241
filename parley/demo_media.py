"""The photo step of `parley demo`: Alice sends Bob a photo; its thumbnail arrives first.

Alice's client uploads a JPEG it draws (with a camera make and GPS position in its
EXIF) straight to the object store, confirms it, and sends it; Bob's phone shows the
thumbnail that came inside the message, without EXIF, then downloads the photo with a
short-lived URL from the query API and gets the same bytes.
"""

from __future__ import annotations

import asyncio
import base64
import io
import time
from collections.abc import Callable
from typing import Any

from PIL import Image

from bench.photos import holiday_photo
from client import Account, ChatClient, fetch_media, upload_media
from client.chat import CommandFailed


class PhotoFailed(Exception):
    """The photo did not arrive as the step says."""


async def send_a_photo(
    base: str,
    queries: str,
    chat: str,
    sender: tuple[Account, ChatClient],
    receiver: tuple[Account, ChatClient],
    say: Callable[[str, str], None],
) -> str:
    (alice, a), (bob, b) = sender, receiver
    photo = holiday_photo()
    started = time.monotonic()
    media = await asyncio.to_thread(upload_media, base, alice, photo, "image/jpeg")
    say(
        "alice",
        f"uploads a {len(photo) // 1024} KiB photo straight to the object store, "
        f"confirmed in {time.monotonic() - started:.2f}s",
    )
    ack = await a.send_media(media, caption="The view from the hotel", chat_id=chat)
    await b.wait_until(lambda: ack.seq in b.chats[chat].messages)
    arrived: dict[str, Any] = b.chats[chat].messages[ack.seq]["media"] or {}
    if not arrived.get("thumbnail"):
        raise PhotoFailed(f"the message came without a thumbnail: {arrived}")
    thumbnail = Image.open(io.BytesIO(base64.b64decode(arrived["thumbnail"])))
    if thumbnail.getexif():
        raise PhotoFailed("the thumbnail carries EXIF data")
    say(
        "bob",
        f"sees the thumbnail at once: {thumbnail.width}x{thumbnail.height} WebP, "
        f"{len(base64.b64decode(arrived['thumbnail']))} bytes, no EXIF "
        f"(the photo is {arrived['width']}x{arrived['height']})",
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            got = await asyncio.to_thread(fetch_media, queries, bob, chat, media["media_id"])
            break
        except CommandFailed:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)
    if got != photo:
        raise PhotoFailed("the downloaded photo differs from the one sent")
    say("bob", f"taps it: {len(got) // 1024} KiB downloaded with a 5-minute URL, byte for byte")
    return f"thumbnail {thumbnail.width}x{thumbnail.height} in the message, photo downloaded"
