"""The gateway's WebSocket protocol keeps less per socket and still speaks WebSocket.

A real uvicorn serves a small Starlette app over `LeanWebSocketProtocol` on a loopback
port; the clients are the `websockets` library's.
"""

from __future__ import annotations

import asyncio
import gc
import json
import socket
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
import websockets
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.frames import Frame
from websockets.http11 import Request
from websockets.typing import Origin

from bench.servers import free_port
from commands.gateway.wsprotocol import LeanWebSocketProtocol
from infra.http import serve

pytestmark = pytest.mark.unit

MAX_FRAME = 64 * 1024
FLOOD_FRAMES = 400  # x 64 KiB: far beyond the transport's write buffer high-water mark


class Recording(LeanWebSocketProtocol):
    """The protocol under test, noting the handshake requests, write pauses and pongs."""

    requests: ClassVar[list[weakref.ref[Request]]] = []
    pauses: ClassVar[int] = 0
    pongs: ClassVar[int] = 0

    def handle_connect(self, event: Request) -> None:
        Recording.requests.append(weakref.ref(event))
        super().handle_connect(event)

    def pause_writing(self) -> None:
        Recording.pauses += 1
        super().pause_writing()

    def handle_pong(self, event: Frame) -> None:
        Recording.pongs += 1
        super().handle_pong(event)


async def echo(ws: WebSocket) -> None:
    seen = {name.decode().lower(): value.decode() for name, value in ws.scope["headers"]}
    await ws.accept()
    after = len(ws.scope["headers"])
    await ws.send_text(json.dumps({"origin": seen.get("origin"), "headers": after}))
    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await ws.send_text(message["text"])
            else:
                await ws.send_bytes(message["bytes"])
    except WebSocketDisconnect:
        return


async def flood(ws: WebSocket) -> None:
    await ws.accept()
    for n in range(FLOOD_FRAMES):
        await ws.send_bytes(n.to_bytes(4, "big") + bytes(MAX_FRAME - 4))
    await ws.receive()  # the client's close


async def refuse(ws: WebSocket) -> None:
    await ws.close(1008)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    app = Starlette(
        routes=[
            WebSocketRoute("/echo", echo),
            WebSocketRoute("/flood", flood),
            WebSocketRoute("/refuse", refuse),
        ]
    )
    port = free_port()
    stop = threading.Event()
    options: dict[str, Any] = {
        "ws": Recording,
        "ws_max_size": MAX_FRAME,
        "ws_per_message_deflate": False,
        "ws_ping_interval": 0.2,
        "ws_ping_timeout": 0.2,
    }
    thread = threading.Thread(
        target=serve, args=(app, "wstest", "127.0.0.1", port, stop), kwargs=options, daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "the test server did not start"
            time.sleep(0.05)
    yield f"ws://127.0.0.1:{port}"
    stop.set()
    thread.join(timeout=10)


def _released(ref: weakref.ref[Request]) -> bool:
    deadline = time.monotonic() + 5
    while ref() is not None and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.01)
    return ref() is None


def test_echoes_in_order_and_lets_the_handshake_go(server: str) -> None:
    async def scenario() -> None:
        async with websockets.connect(server + "/echo", origin=Origin("http://Example.test")) as ws:
            hello = json.loads(await ws.recv())
            # The app saw the headers before accepting; after, the scope holds none.
            assert hello == {"origin": "http://Example.test", "headers": 0}
            sent = [f"m{n}-" + "é" * (n % 50) for n in range(500)]
            for text in sent:
                await ws.send(text)
            await ws.send(b"\x00\xffbinary")
            got = [await ws.recv() for _ in sent]
            assert got == sent
            assert await ws.recv() == b"\x00\xffbinary"
            assert _released(Recording.requests[-1])
            # Still serving after the parser was replaced, and across keepalive pings
            # (every 0.2 s, answered by the client, or the server would close at 0.4 s).
            pongs, deadline = Recording.pongs, time.monotonic() + 10
            while Recording.pongs < pongs + 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert Recording.pongs >= pongs + 3, "no keepalive round trips"
            await ws.send("after the pings")
            assert await ws.recv() == "after the pings"

    asyncio.run(scenario())


def test_an_oversized_frame_closes_with_1009(server: str) -> None:
    async def scenario() -> int:
        async with websockets.connect(server + "/echo", max_size=2**22) as ws:
            await ws.recv()
            await ws.send("x" * (MAX_FRAME + 1))
            with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None
            return closed.value.rcvd.code

    assert asyncio.run(scenario()) == 1009


def test_a_slow_reader_pauses_the_writer_and_gets_everything_in_order(server: str) -> None:
    pauses_before = Recording.pauses

    async def scenario() -> list[int]:
        async with websockets.connect(server + "/flood", max_size=2**22, max_queue=1) as ws:
            # Not reading until the server's transport has paused it: 25 MiB is far more
            # than the loopback socket buffers hold.
            deadline = time.monotonic() + 10
            while Recording.pauses == pauses_before and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert Recording.pauses > pauses_before, "the server never paused writing"
            return [int.from_bytes(_raw(await ws.recv())[:4], "big") for _ in range(FLOOD_FRAMES)]

    assert asyncio.run(scenario()) == list(range(FLOOD_FRAMES))


def test_a_refused_handshake_answers_403_and_keeps_nothing(server: str) -> None:
    async def scenario() -> int:
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            async with websockets.connect(server + "/refuse"):
                pass
        return int(refused.value.response.status_code)

    assert asyncio.run(scenario()) == 403
    assert _released(Recording.requests[-1])


def _raw(frame: str | bytes) -> bytes:
    """A frame the server sent as bytes (the flood is binary)."""
    assert isinstance(frame, bytes)
    return frame
