"""Media for the Python client: upload a file, fetch one (docs/media.md).

`upload_media` asks the commands service for an upload, PUTs the bytes straight to the
object store with the presigned URL, and confirms; it returns the stored reference, to
send with `ChatClient.send_media`. `fetch_media` asks the queries service for a download
URL and GETs the bytes from the store. Both block: call them in a thread from asyncio.
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from typing import Any

from client.chat import Account, CommandFailed, _post


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


def confirm_upload(base: str, account: Account, media_id: str) -> dict[str, Any]:
    """`POST /v1/media/{media_id}/confirm`: the checked, sendable media reference."""
    answer = _post(base, f"/v1/media/{media_id}/confirm", {}, account.access_token)
    media: dict[str, Any] = answer["media"]
    return media


def download_url(queries: str, account: Account, chat_id: str, media_id: str) -> dict[str, Any]:
    """`GET /v1/chats/{chat_id}/media/{media_id}`: a short-lived download URL."""
    request = urllib.request.Request(
        f"{queries}/v1/chats/{chat_id}/media/{media_id}",
        headers={"Authorization": f"Bearer {account.access_token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            found: dict[str, Any] = json.loads(response.read())
            return found
    except urllib.error.HTTPError as exc:
        raise CommandFailed(json.loads(exc.read() or b"{}").get("error", {})) from None


def fetch_media(queries: str, account: Account, chat_id: str, media_id: str) -> bytes:
    """The bytes of media sent in a chat the account sees."""
    found = download_url(queries, account, chat_id, media_id)
    with urllib.request.urlopen(found["url"], timeout=120) as response:
        data: bytes = response.read()
    return data
