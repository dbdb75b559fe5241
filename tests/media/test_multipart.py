"""A big file in parts: create, part URLs, PUT each part, complete, confirm; and refusals.

The media stack allows parts of 5 to 6 MiB (S3's own floor is 5 MiB), at most four of
them, and 20 s to complete a multipart upload.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import httpx
import pytest

from client import Account, CommandFailed, fetch_media, upload_large_media
from client.media import download_url
from domain.media import object_key, upload_key
from tests.media.conftest import MAX_PARTS, PART_MAX, PART_MIN, MediaStack


def pdf(size: int) -> bytes:
    """A 'PDF' of `size` bytes: the magic, then random bytes."""
    head = b"%PDF-1.7\n"
    return head + os.urandom(size - len(head))


async def _call(
    stack: MediaStack, account: Account, method: str, path: str, body: Any = None
) -> httpx.Response:
    async with httpx.AsyncClient(timeout=60) as http:
        return await http.request(
            method,
            f"{stack.base}{path}",
            json=body,
            headers={"Authorization": f"Bearer {account.access_token}"},
        )


async def _start(stack: MediaStack, account: Account, data: bytes, **extra: Any) -> dict[str, Any]:
    answer = await _call(
        stack,
        account,
        "POST",
        "/v1/media/uploads",
        {
            "kind": "document",
            "size": len(data),
            "mime_type": "application/pdf",
            "sha256": hashlib.sha256(data).hexdigest(),
            "multipart": True,
            **extra,
        },
    )
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


async def _put_parts(
    stack: MediaStack, account: Account, media_id: str, parts: dict[int, bytes]
) -> dict[int, str]:
    """PUT each part with a URL asked for it; the ETags."""
    answer = await _call(
        stack, account, "POST", f"/v1/media/{media_id}/parts", {"part_numbers": list(parts)}
    )
    assert answer.status_code == 200, answer.text
    etags = {}
    async with httpx.AsyncClient(timeout=60) as http:
        for part in answer.json()["parts"]:
            put = await http.put(part["url"], content=parts[part["part_number"]])
            assert put.status_code == 200, put.text
            etags[part["part_number"]] = put.headers["ETag"]
    return etags


def _code(answer: httpx.Response) -> tuple[int, str]:
    return answer.status_code, answer.json()["error"]["code"]


async def test_a_big_file_goes_up_in_parts_with_a_retried_part_and_arrives(
    media_stack: MediaStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob = await media_stack.account(), await media_stack.account()
    data = pdf(2 * PART_MIN + 12345)
    path = tmp_path / "report.pdf"
    path.write_bytes(data)
    # The network drops the first PUT of part 2: the client asks a fresh URL and PUTs again.
    real_urlopen = urllib.request.urlopen
    dropped: list[str] = []

    def flaky(request: Any, *args: Any, **kwargs: Any) -> Any:
        url = request.full_url if isinstance(request, urllib.request.Request) else request
        if "partNumber=2" in url and not dropped:
            dropped.append(url)
            raise urllib.error.URLError("connection reset by peer")
        return real_urlopen(request, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", flaky)
    progress: list[tuple[int, int]] = []
    media = await asyncio.to_thread(
        upload_large_media,
        media_stack.base,
        alice,
        path,
        "application/pdf",
        "document",
        on_part=lambda done, parts: progress.append((done, parts)),
    )
    assert dropped, "the part was never dropped"
    assert progress == [(1, 3), (2, 3), (3, 3)]  # 5 MiB, 5 MiB and the rest
    assert media["size"] == len(data) and media["sha256"] == hashlib.sha256(data).hexdigest()
    assert await media_stack.objects.head(upload_key(media["media_id"])) is None

    sender = await media_stack.client(alice)
    try:
        ack = await sender.send_media(media, caption="the report", to=bob.user_id)
    finally:
        await sender.close()
    deadline = time.monotonic() + 30
    while True:
        try:
            await asyncio.to_thread(
                download_url, media_stack.queries, bob, ack.chat_id, media["media_id"]
            )
            break
        except CommandFailed:
            assert time.monotonic() < deadline, "the message was not projected"
            await asyncio.sleep(0.2)
    got = await asyncio.to_thread(
        fetch_media, media_stack.queries, bob, ack.chat_id, media["media_id"]
    )
    assert got == data


async def test_the_plan_is_bounded(media_stack: MediaStack) -> None:
    user = await media_stack.account()
    sha = "0" * 64
    base: dict[str, Any] = {
        "kind": "document",
        "mime_type": "application/pdf",
        "sha256": sha,
        "multipart": True,
    }
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"size": MAX_PARTS * PART_MAX + 1}, 413, "too_many_parts"),
        ({"size": 3 * PART_MIN, "part_size": PART_MIN - 1}, 400, "bad_upload"),
        ({"size": 3 * PART_MIN, "part_size": PART_MAX + 1}, 400, "bad_upload"),
        ({"size": 10, "multipart": "yes"}, 400, "bad_upload"),
    ]
    for body, status, code in cases:
        answer = await _call(media_stack, user, "POST", "/v1/media/uploads", {**base, **body})
        assert _code(answer) == (status, code), body
    # Within the bounds: the smallest parts that fit, or the part size asked for.
    answer = await _call(
        media_stack, user, "POST", "/v1/media/uploads", {**base, "size": 3 * PART_MIN}
    )
    assert answer.json()["multipart"]["part_size"] == PART_MIN
    assert answer.json()["multipart"]["parts"] == 3


async def test_wrong_part_numbers_and_mismatched_parts_are_refused(
    media_stack: MediaStack,
) -> None:
    owner = await media_stack.account()
    data = pdf(PART_MIN + 1000)
    upload = await _start(media_stack, owner, data)
    media_id = upload["media_id"]
    assert upload["multipart"]["parts"] == 2
    for numbers, expected in (
        ([0], (400, "bad_part_number")),
        ([3], (400, "bad_part_number")),
        ([1, 1], (400, "bad_part_number")),
        ("1", (400, "bad_part_number")),
        ([1, 2, 2], (413, "too_many_parts")),
    ):
        answer = await _call(
            media_stack, owner, "POST", f"/v1/media/{media_id}/parts", {"part_numbers": numbers}
        )
        assert _code(answer) == expected, numbers
    # Confirming before the parts are joined: nothing is uploaded yet.
    answer = await _call(media_stack, owner, "POST", f"/v1/media/{media_id}/confirm", {})
    assert _code(answer) == (409, "media_not_uploaded")

    etags = await _put_parts(media_stack, owner, media_id, {1: data[:PART_MIN]})
    for parts, expected in (
        ([{"part_number": 1, "etag": etags[1]}], (400, "bad_part_number")),  # part 2 missing
        (
            [{"part_number": n, "etag": etags[1]} for n in (1, 2, 3)],
            (413, "too_many_parts"),
        ),
        (
            [{"part_number": 1, "etag": etags[1]}, {"part_number": 2, "etag": etags[1]}],
            (409, "part_mismatch"),  # part 2 never uploaded
        ),
    ):
        answer = await _call(
            media_stack, owner, "POST", f"/v1/media/{media_id}/complete", {"parts": parts}
        )
        assert _code(answer) == expected, parts
    # The upload survives those: part 2 goes up, and a wrong ETag is still refused.
    etags.update(await _put_parts(media_stack, owner, media_id, {2: data[PART_MIN:]}))
    wrong = [{"part_number": 1, "etag": etags[2]}, {"part_number": 2, "etag": etags[2]}]
    answer = await _call(
        media_stack, owner, "POST", f"/v1/media/{media_id}/complete", {"parts": wrong}
    )
    assert _code(answer) == (409, "part_mismatch")
    right = [{"part_number": n, "etag": etags[n]} for n in (1, 2)]
    answer = await _call(
        media_stack, owner, "POST", f"/v1/media/{media_id}/complete", {"parts": right}
    )
    assert answer.status_code == 200, answer.text
    again = await _call(
        media_stack, owner, "POST", f"/v1/media/{media_id}/complete", {"parts": right}
    )
    assert again.json() == answer.json()  # a completion asked again answers the same
    answer = await _call(media_stack, owner, "POST", f"/v1/media/{media_id}/confirm", {})
    assert answer.status_code == 200 and answer.json()["media"]["size"] == len(data)


async def test_a_part_of_the_wrong_size_refuses_the_upload_and_leaves_nothing(
    media_stack: MediaStack,
) -> None:
    owner = await media_stack.account()
    data = pdf(PART_MIN + 1000)
    media_id = (await _start(media_stack, owner, data))["media_id"]
    etags = await _put_parts(
        media_stack, owner, media_id, {1: data[:PART_MIN] + b"extra", 2: data[PART_MIN:]}
    )
    parts = [{"part_number": n, "etag": etags[n]} for n in (1, 2)]
    answer = await _call(
        media_stack, owner, "POST", f"/v1/media/{media_id}/complete", {"parts": parts}
    )
    assert _code(answer) == (422, "size_mismatch")
    answer = await _call(
        media_stack, owner, "POST", f"/v1/media/{media_id}/parts", {"part_numbers": [1]}
    )
    assert _code(answer) == (404, "unknown_media")
    assert await media_stack.objects.head(upload_key(media_id)) is None


async def test_an_aborted_upload_is_gone_from_the_store(media_stack: MediaStack) -> None:
    owner, other = await media_stack.account(), await media_stack.account()
    data = pdf(PART_MIN + 10)
    media_id = (await _start(media_stack, owner, data))["media_id"]
    answer = await _call(
        media_stack, owner, "POST", f"/v1/media/{media_id}/parts", {"part_numbers": [2]}
    )
    late_url = answer.json()["parts"][0]["url"]
    assert _code(await _call(media_stack, other, "DELETE", f"/v1/media/{media_id}")) == (
        404,
        "unknown_media",
    )
    assert (await _call(media_stack, owner, "DELETE", f"/v1/media/{media_id}")).status_code == 204
    answer = await _call(
        media_stack, owner, "POST", f"/v1/media/{media_id}/parts", {"part_numbers": [1]}
    )
    assert _code(answer) == (404, "unknown_media")
    # The store dropped the multipart upload: a part URL handed out before is useless.
    async with httpx.AsyncClient() as http:
        put = await http.put(late_url, content=data[PART_MIN:])
    assert put.status_code == 404 and b"NoSuchUpload" in put.content
    assert _code(await _call(media_stack, owner, "DELETE", f"/v1/media/{media_id}")) == (
        404,
        "unknown_media",
    )


async def test_a_sent_upload_cannot_be_aborted(media_stack: MediaStack) -> None:
    from client import upload_media
    from tests.media.conftest import photo

    alice, bob = await media_stack.account(), await media_stack.account()
    media = await asyncio.to_thread(
        upload_media, media_stack.base, alice, photo(8, 8), "image/jpeg"
    )
    sender = await media_stack.client(alice)
    try:
        await sender.send_media(media, to=bob.user_id)
    finally:
        await sender.close()
    answer = await _call(media_stack, alice, "DELETE", f"/v1/media/{media['media_id']}")
    assert _code(answer) == (409, "media_sent")
    assert await media_stack.objects.head(object_key(media["media_id"])) is not None


async def test_an_upload_not_completed_in_time_expires(media_stack: MediaStack) -> None:
    owner = await media_stack.account()
    media_id = (await _start(media_stack, owner, pdf(PART_MIN + 10)))["media_id"]
    deadline = time.monotonic() + 60
    while True:
        answer = await _call(
            media_stack, owner, "POST", f"/v1/media/{media_id}/parts", {"part_numbers": [1]}
        )
        if answer.status_code != 200:
            break
        assert time.monotonic() < deadline, "the multipart upload never expired"
        await asyncio.sleep(0.5)
    assert _code(answer) == (410, "upload_expired")
    answer = await _call(
        media_stack, owner, "POST", f"/v1/media/{media_id}/parts", {"part_numbers": [1]}
    )
    assert _code(answer) == (404, "unknown_media")  # expired uploads leave nothing behind
