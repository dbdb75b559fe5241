"""Media for the Python client: upload a file, fetch one (docs/media.md).

`upload_media` asks the commands service for an upload, PUTs the bytes straight to the
object store with the presigned URL, and confirms; it returns the stored reference, to
send with `ChatClient.send_media`. `upload_large_media` does the same for a big file in
parts (a multipart upload), reading the file a part at a time and PUTting a part that
failed again with a fresh URL. `fetch_media` asks the queries service for a download
URL and GETs the bytes from the store; given the position of the message carrying the
media, it can be called as soon as that message is pushed. Both block: call them in a
thread from asyncio.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from client.chat import Account, CommandFailed, _post

log = logging.getLogger("parley.client.media")

PART_TRIES = 5
"""How many times a part is PUT before the upload gives up (each with a fresh URL)."""
PART_RETRY_FIRST_S = 0.5
"""The wait before a part's second PUT; it doubles each time (0.5, 1, 2, 4 s)."""


def upload_media(
    base: str, account: Account, data: bytes, mime_type: str, kind: str = "image"
) -> dict[str, Any]:
    """Upload `data` and confirm it; the confirmed media reference."""
    upload = request_upload(
        base, account, len(data), mime_type, hashlib.sha256(data).hexdigest(), kind
    )
    put_object(upload["upload_url"], data, upload["headers"])
    return confirm_upload(base, account, upload["media_id"])


def request_upload(
    base: str, account: Account, size: int, mime_type: str, sha256: str, kind: str
) -> dict[str, Any]:
    """`POST /v1/media/uploads`: a media id and its presigned PUT URL."""
    body = {"kind": kind, "size": size, "mime_type": mime_type, "sha256": sha256}
    return _post(base, "/v1/media/uploads", body, account.access_token)


def put_object(url: str, data: bytes, headers: dict[str, str]) -> None:
    """PUT the bytes to the object store with a presigned URL."""
    request = urllib.request.Request(url, data=data, method="PUT", headers=headers)
    with urllib.request.urlopen(request, timeout=120) as response:
        response.read()


def upload_large_media(
    base: str,
    account: Account,
    path: str | Path,
    mime_type: str,
    kind: str = "document",
    part_size: int | None = None,
    on_part: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Upload the file at `path` in parts and confirm it; the confirmed media reference.

    A part whose PUT fails (the network, the store, an expired URL) is PUT again with a
    fresh URL, up to `PART_TRIES` times with growing waits; `on_part(done, parts)` is
    called after each part (a progress bar). The file is read a part at a time."""
    size = os.path.getsize(path)
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1024 * 1024):
            digest.update(chunk)
    body: dict[str, Any] = {
        "kind": kind,
        "size": size,
        "mime_type": mime_type,
        "sha256": digest.hexdigest(),
        "multipart": True,
    }
    if part_size is not None:
        body["part_size"] = part_size
    upload = _post(base, "/v1/media/uploads", body, account.access_token)
    media_id, plan = upload["media_id"], upload["multipart"]
    etags = []
    with open(path, "rb") as file:
        for number in range(1, plan["parts"] + 1):
            file.seek((number - 1) * plan["part_size"])
            data = file.read(plan["part_size"])
            etags.append(
                {"part_number": number, "etag": _put_part(base, account, media_id, number, data)}
            )
            if on_part is not None:
                on_part(number, plan["parts"])
    _post(base, f"/v1/media/{media_id}/complete", {"parts": etags}, account.access_token)
    return confirm_upload(base, account, media_id)


def part_urls(
    base: str, account: Account, media_id: str, numbers: list[int]
) -> list[dict[str, Any]]:
    """`POST /v1/media/{media_id}/parts`: fresh presigned PUT URLs for these parts."""
    answer = _post(
        base, f"/v1/media/{media_id}/parts", {"part_numbers": numbers}, account.access_token
    )
    parts: list[dict[str, Any]] = answer["parts"]
    return parts


def _put_part(base: str, account: Account, media_id: str, number: int, data: bytes) -> str:
    """PUT one part, retrying with a fresh URL; its ETag."""
    for attempt in range(1, PART_TRIES + 1):
        url = part_urls(base, account, media_id, [number])[0]["url"]
        request = urllib.request.Request(url, data=data, method="PUT")
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                response.read()
                return str(response.headers["ETag"]).strip('"')
        except OSError as exc:  # urllib's HTTPError and URLError are OSErrors
            if attempt == PART_TRIES:
                raise
            log.info("event=part_retry media_id=%s part=%d error=%s", media_id, number, exc)
            time.sleep(PART_RETRY_FIRST_S * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


def abort_upload(base: str, account: Account, media_id: str) -> None:
    """`DELETE /v1/media/{media_id}`: drop an upload no message carries."""
    request = urllib.request.Request(
        f"{base}/v1/media/{media_id}",
        method="DELETE",
        headers={"Authorization": f"Bearer {account.access_token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        raise CommandFailed(json.loads(exc.read() or b"{}").get("error", {})) from None


def confirm_upload(base: str, account: Account, media_id: str) -> dict[str, Any]:
    """`POST /v1/media/{media_id}/confirm`: the checked, sendable media reference."""
    answer = _post(base, f"/v1/media/{media_id}/confirm", {}, account.access_token)
    media: dict[str, Any] = answer["media"]
    return media


def download_url(
    queries: str, account: Account, chat_id: str, media_id: str, position: int | None = None
) -> dict[str, Any]:
    """`GET /v1/chats/{chat_id}/media/{media_id}`: a short-lived download URL.

    `position` is that of the message carrying the media (a pushed `message` frame's, or
    the sender's `ack`): a push can come before the query side holds the message, and
    with the position the service waits for it (`X-Parley-Position`, docs/queries.md)
    instead of answering `unknown_media`; `not_yet_projected` if it waited too long."""
    headers = {"Authorization": f"Bearer {account.access_token}"}
    if position is not None:
        headers["X-Parley-Position"] = f"{chat_id}:{position}"
    request = urllib.request.Request(
        f"{queries}/v1/chats/{chat_id}/media/{media_id}", headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            found: dict[str, Any] = json.loads(response.read())
            return found
    except urllib.error.HTTPError as exc:
        raise CommandFailed(json.loads(exc.read() or b"{}").get("error", {})) from None


def fetch_media(
    queries: str, account: Account, chat_id: str, media_id: str, position: int | None = None
) -> bytes:
    """The bytes of media sent in a chat the account sees (`position`: as for
    `download_url`)."""
    found = download_url(queries, account, chat_id, media_id, position)
    with urllib.request.urlopen(found["url"], timeout=120) as response:
        data: bytes = response.read()
    return data
