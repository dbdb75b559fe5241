"""What docs/protocol.md promises a client writer about frames, held against a live gateway:
hostile input gets its typed error (never `internal`), a text frame that is not UTF-8
closes with 1007 and one short log line, `hello` and `sent_at` look as shown, a `typing`
frame is never answered, and a sync's pages stop at the `last_seq` it announced."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from client import Account
from tests.gateway.conftest import Stack
from tests.gateway.test_forged_tokens import queries  # noqa: F401 (a fixture)

WIRE_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def nested(levels: int) -> str:
    """A ping frame whose objects and arrays nest `levels` deep (the frame is one)."""
    inner = "[" * (levels - 1) + "]" * (levels - 1)
    return '{"type": "ping", "id": "p", "x": ' + (inner or "0") + "}"


class Raw:
    """A WebSocket held by hand: frames as sent, answers as they come."""

    def __init__(self, ws: ClientConnection, hello: str) -> None:
        self.ws = ws
        self.hello = hello

    async def send(self, frame: dict[str, Any] | str) -> None:
        await self.ws.send(frame if isinstance(frame, str) else json.dumps(frame))

    async def next(self, timeout_s: float = 10.0) -> dict[str, Any]:
        frame: dict[str, Any] = json.loads(await asyncio.wait_for(self.ws.recv(), timeout_s))
        return frame

    async def answer(self, request_id: str, timeout_s: float = 10.0) -> dict[str, Any]:
        """The next frame carrying `request_id` (pushes in between are skipped)."""
        while True:
            frame = await self.next(timeout_s)
            if frame.get("id") == request_id:
                return frame


@asynccontextmanager
async def raw(stack: Stack, account: Account) -> AsyncIterator[Raw]:
    url = stack.base.replace("http", "ws", 1) + "/ws?access_token=" + account.access_token
    async with websockets.connect(url, max_size=2**22) as ws:
        yield Raw(ws, str(await ws.recv()))


def test_a_body_that_is_not_ascii_base64_is_invalid_body(stack: Stack) -> None:
    alice, bob = stack.account(), stack.account()

    async def scenario() -> list[tuple[str, str]]:
        async with raw(stack, alice) as ws:
            answers = []
            for n, body in enumerate(["\u202e\u0000\ud7ff", "héllo==", "not base64!", "YWJj="]):
                frame = {"type": "send", "id": f"s{n}", "to": bob.user_id, "local_id": f"l{n}"}
                await ws.send({**frame, "kind": "media", "body": body})
                answer = await ws.answer(f"s{n}")
                answers.append((answer["type"], answer.get("code", "")))
            await ws.send({"type": "ping", "id": "still-there"})
            answers.append(((await ws.answer("still-there"))["type"], ""))
            return answers

    assert asyncio.run(scenario()) == [("error", "invalid_body")] * 4 + [("pong", "")]
    assert "frame_failed" not in stack.services["commands"].text()


def test_a_deeply_nested_frame_is_bad_json_and_the_connection_stays(stack: Stack) -> None:
    alice, bob = stack.account(), stack.account()
    deep_media: dict[str, Any] = {"media": {}}
    inner: dict[str, Any] = deep_media["media"]
    for _ in range(500):
        inner["x"] = {}
        inner = inner["x"]

    async def scenario() -> list[tuple[str, str]]:
        async with raw(stack, alice) as ws:
            answers = []
            frames: list[str] = [
                '{"type": "ping", "id": "d1", "x": ' + "[" * 1000 + "]" * 1000 + "}",
                json.dumps(
                    {"type": "send", "id": "d2", "to": bob.user_id, "local_id": "l", **deep_media}
                ),
                nested(17),
            ]
            for text in frames:
                await ws.send(text)
                answer = await ws.next()
                answers.append((answer["type"], answer.get("code", "")))
            await ws.send({"type": "ping", "id": "ok"})
            answers.append(((await ws.answer("ok"))["type"], ""))
            return answers

    assert asyncio.run(scenario()) == [("error", "bad_json")] * 3 + [("pong", "")]


def test_sixteen_levels_are_fine(stack: Stack) -> None:
    alice = stack.account()

    async def scenario() -> str:
        async with raw(stack, alice) as ws:
            await ws.send(nested(16))
            return str((await ws.next())["type"])

    assert asyncio.run(scenario()) == "pong"


def test_a_text_frame_that_is_not_utf8_closes_1007_with_one_short_log_line(
    stack: Stack,
) -> None:
    alice = stack.account()
    log = stack.services["commands"]
    before = len(log.text())

    async def scenario() -> int:
        async with raw(stack, alice) as ws:
            await ws.ws.send(b'{"type": "ping", "x": "\xff\xfe"}', text=True)
            with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                await ws.next()
            assert closed.value.rcvd is not None
            return closed.value.rcvd.code

    codes = [asyncio.run(scenario()) for _ in range(3)]
    assert codes == [1007] * 3
    log.wait_for_log(r"(?s)(event=ws_bad_utf8.*){3}", after=before)
    written = log.text()[before:]
    assert written.count("event=ws_bad_utf8") == 3
    assert "Traceback" not in written and "Invalid UTF-8" not in written
    assert "level=ERROR" not in written


def test_hello_says_heartbeat_as_a_whole_number(stack: Stack) -> None:
    alice = stack.account()

    async def scenario() -> str:
        async with raw(stack, alice) as ws:
            return ws.hello

    hello = asyncio.run(scenario())
    assert '"heartbeat_s":20,' in hello
    assert json.loads(hello)["heartbeat_s"] == 20


def test_a_typing_frame_with_an_id_gets_no_answer(stack: Stack) -> None:
    alice, bob = stack.account(), stack.account()

    async def scenario() -> tuple[list[dict[str, Any]], dict[str, Any]]:
        async with raw(stack, alice) as a, raw(stack, bob) as b:
            await a.send(
                {"type": "send", "id": "s", "to": bob.user_id, "local_id": "l", "text": "hi"}
            )
            chat = (await a.answer("s"))["chat_id"]
            for n in range(100):  # until the chat's members reach the read model
                await a.send({"type": "typing", "id": f"t{n}", "chat_id": chat, "state": "stop"})
                await a.send({"type": "ping", "id": f"p{n}"})
                # One connection's frames are answered in order: an answer to the typing
                # frame would come before the pong.
                seen = []
                while (frame := await a.next())["type"] != "pong":
                    seen.append(frame)
                if not any(f.get("code") == "unknown_chat" for f in seen):
                    break
                await asyncio.sleep(0.1)
            while (typing := await b.next())["type"] != "typing":
                pass
            return [f for f in seen if f.get("id") == f"t{n}"], typing

    answers, typing = asyncio.run(scenario())
    assert answers == []
    assert typing["state"] == "stop"  # it was taken, and passed on, without an answer


def test_sent_at_is_one_format_on_push_sync_and_http(stack: Stack, queries: str) -> None:  # noqa: F811
    alice, bob = stack.account(), stack.account()

    async def scenario() -> tuple[str, str, str]:
        async with raw(stack, bob) as b, raw(stack, alice) as a:
            await a.send(
                {"type": "send", "id": "s", "to": bob.user_id, "local_id": "l", "text": "t"}
            )
            ack = await a.answer("s")
            while (pushed := await b.next())["type"] != "message":
                pass
            await b.send({"type": "sync", "id": "y", "cursors": {}})
            while (page := await b.answer("y"))["type"] != "sync_page":
                pass
            synced = next(m for m in page["messages"] if m["seq"] == ack["seq"])
        async with httpx.AsyncClient() as http:
            for _ in range(100):  # the query side is a projection: wait for it
                answer = await http.get(
                    f"{queries}/v1/chats/{ack['chat_id']}/messages",
                    headers={"Authorization": f"Bearer {bob.access_token}"},
                )
                messages = answer.json().get("messages", [])
                if messages:
                    break
                await asyncio.sleep(0.1)
        return pushed["sent_at"], synced["sent_at"], messages[0]["sent_at"]

    pushed, synced, read = asyncio.run(scenario())
    assert WIRE_TIME.match(pushed), pushed
    assert pushed == synced == read


def test_sync_pages_never_go_beyond_the_last_seq_they_announce(stack: Stack) -> None:
    """Bob syncs while alice keeps writing: each sync's pages stop at its `last_seq`."""
    alice, bob = stack.account(), stack.account()

    async def scenario() -> list[tuple[int, int]]:
        async with raw(stack, alice) as a, raw(stack, bob) as b:
            await a.send(
                {"type": "send", "id": "s0", "to": bob.user_id, "local_id": "l0", "text": "0"}
            )
            chat = (await a.answer("s0"))["chat_id"]
            stop = asyncio.Event()

            async def keep_writing() -> None:
                n = 1
                while not stop.is_set():
                    await a.send(
                        {"type": "send", "chat_id": chat, "local_id": f"l{n}", "text": "x"}
                    )
                    n += 1
                    await asyncio.sleep(0.005)

            async def read_acks() -> None:  # a client that reads is not closed with 1013
                async for _ in a.ws:
                    pass

            writer = asyncio.create_task(keep_writing())
            reader = asyncio.create_task(read_acks())
            seen: list[tuple[int, int]] = []
            try:
                deadline = time.monotonic() + 60
                n = 0
                # Syncs until 20 found the chat and it grew between them (under load the
                # projection may take a while to show it, or to move).
                while len(seen) < 20 or seen[-1][0] <= seen[0][0]:
                    assert time.monotonic() < deadline, seen
                    n += 1
                    await b.send({"type": "sync", "id": f"y{n}", "cursors": {chat: 0}})
                    last_seq, highest = -1, 0
                    while True:
                        frame = await b.answer(f"y{n}")
                        if frame["type"] == "sync_chats":
                            last_seq = next(
                                (c["last_seq"] for c in frame["chats"] if c["chat_id"] == chat),
                                -1,  # not projected yet
                            )
                        elif frame["type"] == "sync_page":
                            highest = max([highest] + [m["seq"] for m in frame["messages"]])
                        else:
                            break
                    if last_seq >= 0:
                        seen.append((last_seq, highest))
            finally:
                stop.set()
                await writer
                reader.cancel()
            return seen

    seen = asyncio.run(scenario())
    assert all(highest == last_seq for last_seq, highest in seen), seen
