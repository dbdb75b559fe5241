"""The gateway's WebSocket (`commands.gateway.wire`) speaks WebSocket as clients expect.

A real uvicorn serves `/ws` through `upgrade_slot` on a loopback port, with a handler
chosen by the query string. The clients are the `websockets` library's, and a raw socket
where a client must misbehave (text that is not UTF-8, no answer to pings, a bad upgrade).
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest
import websockets
from hypothesis import given
from hypothesis import strategies as st
from websockets.typing import Origin

from bench.servers import free_port
from commands.gateway.connection import credentials
from commands.gateway.wire import Options, WebSocket, _request, upgrade_slot
from infra.http import serve

pytestmark = pytest.mark.unit

MAX_FRAME = 64 * 1024
HEARTBEAT_S = 0.3
SEND_QUEUE = 500  # more than the flood leaves held (the socket buffers take the rest)
FLOOD_FRAMES = 400  # x 32 KiB: far beyond what the loopback socket and transport buffer


class Seen:
    """What the handlers saw, for the tests to read."""

    handshakes: ClassVar[list[tuple[list[tuple[bytes, bytes]], bytes]]] = []
    after_accept: ClassVar[list[list[tuple[bytes, bytes]]]] = []
    ended: ClassVar[list[str]] = []
    flood_held: ClassVar[list[bool]] = []
    overflowed = threading.Event()
    shut_down = threading.Event()  # the app's lifespan shutdown began


async def echo(ws: WebSocket) -> None:
    Seen.handshakes.append((list(ws.headers), ws.query_string))
    assert ws.accept()
    Seen.after_accept.append(ws.headers)
    while (message := await ws.receive()) is not None:
        ws.send(
            message.encode() if isinstance(message, str) else b"binary:" + message.hex().encode()
        )
    Seen.ended.append("echo")


async def flood(ws: WebSocket) -> None:
    """Writes FLOOD_FRAMES frames at once, then closes (1000) after them."""
    assert ws.accept()
    for n in range(FLOOD_FRAMES):
        assert ws.send(b"%05d" % n + b"." * (32 * 1024))
    Seen.flood_held.append(ws.holding)
    ws.close(1000)


async def overflow(ws: WebSocket) -> None:
    """Writes until the socket refuses (the client does not read), then closes 1013."""
    assert ws.accept()
    n = 0
    while ws.send(b"%05d" % n + b"." * (32 * 1024)):
        n += 1
        if n % 50 == 0:
            await asyncio.sleep(0)  # let the transport report that it is full
    Seen.overflowed.set()
    ws.drop_held()
    ws.close(1013)


async def refuse(ws: WebSocket) -> None:
    ws.refuse()


async def fail(ws: WebSocket) -> None:
    raise RuntimeError("a handler's bug")


HANDLERS: dict[bytes, Callable[[WebSocket], object]] = {
    b"echo": echo,
    b"flood": flood,
    b"overflow": overflow,
    b"refuse": refuse,
    b"fail": fail,
}


async def route(ws: WebSocket) -> None:
    mode = dict(p.split(b"=", 1) for p in ws.query_string.split(b"&") if b"=" in p)[b"mode"]
    await HANDLERS[mode](ws)  # type: ignore[misc]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:  # plain HTTP: none here
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            kind = message["type"].rsplit(".", 1)[-1]
            if kind == "shutdown":
                Seen.shut_down.set()
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return


def started(handler: Callable[[WebSocket], Any]) -> tuple[int, threading.Event, threading.Thread]:
    """uvicorn on a free port with `handler` on /ws: its port, its stop, its thread."""
    port = free_port()
    stop = threading.Event()
    slot = upgrade_slot(lambda: handler, Options(MAX_FRAME, HEARTBEAT_S, SEND_QUEUE))
    thread = threading.Thread(
        target=serve,
        args=(app, "wiretest", "127.0.0.1", port, stop),
        kwargs={"ws": slot, "timeout_graceful_shutdown": 5},
        daemon=True,
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
    return port, stop, thread


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, int]]:
    port, stop, thread = started(route)
    yield f"ws://127.0.0.1:{port}/ws", port
    stop.set()
    thread.join(timeout=10)


def test_echoes_text_binary_and_fragments_in_order(server: tuple[str, int]) -> None:
    url, _ = server

    async def scenario() -> None:
        origin = Origin("http://Example.test")
        async with websockets.connect(url + "?mode=echo&access_token=t%20k", origin=origin) as ws:
            sent = [f"m{n}-" + "é" * (n % 50) for n in range(500)]
            for text in sent:
                await ws.send(text)
            await ws.send(b"\x00\xff")
            await ws.send(["in ", "three ", "fragments"])
            got = [await ws.recv() for _ in sent]
            assert got == sent
            assert await ws.recv() == "binary:00ff"
            assert await ws.recv() == "in three fragments"

    asyncio.run(scenario())
    headers, query = Seen.handshakes[-1]
    assert credentials(headers, query) == ("http://Example.test", "t k")
    assert Seen.after_accept[-1] == []  # the handshake's headers are let go once accepted


def test_a_quiet_client_is_pinged_and_stays_while_it_answers(server: tuple[str, int]) -> None:
    url, _ = server

    async def scenario() -> str:
        async with websockets.connect(url + "?mode=echo") as ws:  # answers pings itself
            await asyncio.sleep(HEARTBEAT_S * 5)  # several pings, each answered
            await ws.send("still here")
            return str(await ws.recv())

    assert asyncio.run(scenario()) == "still here"


def test_a_client_that_does_not_answer_pings_is_dropped(server: tuple[str, int]) -> None:
    _, port = server
    with _raw_client(port, "/ws?mode=echo") as sock:
        ping = _read_frame(sock)
        assert ping[0] == 0x9  # a ping, once it was quiet for the heartbeat
        sock.settimeout(HEARTBEAT_S * 10)
        deadline = time.monotonic() + HEARTBEAT_S * 10
        while time.monotonic() < deadline:  # unanswered: the server goes
            try:
                if not sock.recv(4096):
                    return
            except ConnectionResetError:
                return
        pytest.fail("the server kept a client that never answered its pings")


def test_an_oversized_message_closes_with_1009_whole_or_in_fragments(
    server: tuple[str, int],
) -> None:
    url, _ = server

    async def scenario(message: str | list[str]) -> int | None:
        async with websockets.connect(url + "?mode=echo", max_size=2**22) as ws:
            await ws.send(message)
            with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                await ws.recv()
            return closed.value.rcvd.code if closed.value.rcvd else None

    assert asyncio.run(scenario("x" * (MAX_FRAME + 1))) == 1009
    assert asyncio.run(scenario(["x" * (MAX_FRAME // 2)] * 3)) == 1009


def test_text_that_is_not_utf8_closes_with_1007(server: tuple[str, int]) -> None:
    _, port = server
    with _raw_client(port, "/ws?mode=echo") as sock:
        sock.sendall(_masked(0x1, b"\xff\xfe"))
        kind, payload = _read_frame(sock)
        assert (kind, struct.unpack("!H", payload[:2])[0]) == (0x8, 1007)


def test_a_slow_reader_gets_every_frame_in_order_then_the_close(server: tuple[str, int]) -> None:
    url, _ = server

    async def scenario() -> tuple[list[int], int | None]:
        async with websockets.connect(url + "?mode=flood", max_size=2**22, max_queue=1) as ws:
            # Not reading for a while (well within the heartbeat): the flood's writes back
            # up meanwhile, and `flood_held` below checks that they did.
            await asyncio.sleep(HEARTBEAT_S / 2)
            got = [int((await ws.recv())[:5]) for _ in range(FLOOD_FRAMES)]
            with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                await ws.recv()
            return got, closed.value.rcvd.code if closed.value.rcvd else None

    assert asyncio.run(scenario()) == (list(range(FLOOD_FRAMES)), 1000)
    assert Seen.flood_held == [True]  # frames were held, and came out in order after


def test_frames_beyond_the_send_queue_are_refused_and_the_peer_cut_off(
    server: tuple[str, int],
) -> None:
    _, port = server
    Seen.overflowed.clear()
    with _raw_client(port, "/ws?mode=overflow") as sock:  # does not read
        assert Seen.overflowed.wait(10), "send never refused a frame"
        time.sleep(HEARTBEAT_S * 3)  # the close (1013) is not read: the server cuts it off
        sock.settimeout(10)
        try:
            while sock.recv(1 << 20):  # what the kernel had taken, then the end
                pass
        except ConnectionResetError:
            pass


def test_refusing_answers_403_and_a_bad_upgrade_400_and_another_path_404(
    server: tuple[str, int],
) -> None:
    url, port = server

    async def status(path: str) -> int:
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            async with websockets.connect(url.replace("/ws", path)):
                pass
        return int(refused.value.response.status_code)

    assert asyncio.run(status("/ws?mode=refuse")) == 403
    assert asyncio.run(status("/ws?mode=fail")) == 403  # failed before accepting
    assert asyncio.run(status("/elsewhere")) == 404
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(  # an upgrade without its key: uvicorn passes it, picows refuses it
            b"GET /ws?mode=echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        assert sock.recv(4096).startswith(b"HTTP/1.1 400")


def test_a_client_that_closes_is_answered_with_its_code_and_ends_the_handler(
    server: tuple[str, int],
) -> None:
    url, port = server
    ended = len(Seen.ended)

    async def scenario() -> int | None:
        ws = await websockets.connect(url + "?mode=echo")
        await ws.close(4000, "bye")
        return ws.protocol.close_rcvd.code if ws.protocol.close_rcvd else None

    assert asyncio.run(scenario()) == 4000
    for sent in (b"", struct.pack("!H", 5000)):  # no code, one beyond the range: 1000 back
        with _raw_client(port, "/ws?mode=echo") as sock:
            sock.sendall(_masked(0x8, sent))
            kind, payload = _read_frame(sock)
            assert (kind, struct.unpack("!H", payload[:2])[0]) == (0x8, 1000)
    deadline = time.monotonic() + 5
    while len(Seen.ended) == ended and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(Seen.ended) > ended


@given(
    st.lists(
        st.tuples(st.binary(min_size=1, max_size=20), st.binary(max_size=40)).filter(
            lambda h: all(c not in h[0] + h[1] for c in (b"\r", b"\n", b":"))
        ),
        max_size=8,
    ),
    st.binary(max_size=60).filter(lambda q: b" " not in q and b"\r" not in q and b"\n" not in q),
)
def test_the_request_head_is_read_back_whatever_its_values(
    headers: list[tuple[bytes, bytes]], query: bytes
) -> None:
    lines = [b"GET /ws?" + query + b" HTTP/1.1"] + [n + b": " + v for n, v in headers]
    head = b"\r\n".join(lines) + b"\r\n\r\n"
    path, got_query, got_headers = _request(head)
    assert (path, got_query) == (b"/ws", query)
    assert got_headers == [(n.strip().lower(), v.strip()) for n, v in headers]
    credentials(got_headers, got_query)  # any bytes: read, never raised on


class _raw_client:
    """A TCP client that does the upgrade by hand and then does what the test says."""

    def __init__(self, port: int, path: str) -> None:
        self.port, self.path = port, path

    def __enter__(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        key = base64.b64encode(os.urandom(16))
        sock.sendall(
            b"GET " + self.path.encode() + b" HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: "
            + key
            + b"\r\n\r\n"
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1)
        assert head.startswith(b"HTTP/1.1 101"), head
        self.sock = sock
        return sock

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def _masked(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + body


def _read_frame(sock: socket.socket) -> tuple[int, bytes]:
    """One unmasked server frame (short payloads only)."""
    first, second = _exactly(sock, 2)
    length = second & 0x7F
    if length == 126:
        length = struct.unpack("!H", _exactly(sock, 2))[0]
    return first & 0x0F, _exactly(sock, length)


def _exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, "the server closed the connection"
        data += chunk
    return data


def test_stopping_waits_for_handlers_and_not_for_a_peer_that_does_not_read() -> None:
    cleaned = threading.Event()

    async def handler(ws: WebSocket) -> None:
        assert ws.accept()
        for _ in range(SEND_QUEUE // 2):  # more than the peer reads: frames are held
            ws.send(b"." * (64 * 1024))
        try:
            await ws.receive()  # until uvicorn's shutdown closes it (1012)
        finally:
            await asyncio.sleep(HEARTBEAT_S * 2)  # a cleanup outlasting the socket (presence)
            if not Seen.shut_down.is_set():  # the app's links (pools) are still open
                cleaned.set()

    Seen.shut_down.clear()
    port, stop, thread = started(handler)
    with _raw_client(port, "/ws"):  # never reads (the handler writes in the step of its 101)
        began = time.monotonic()
        stop.set()
        thread.join(timeout=20)
        assert not thread.is_alive(), "the server waited for a peer that never reads"
    assert cleaned.is_set(), "the app shut down before the handler finished"
    assert time.monotonic() - began < 3  # the peer is cut off after HEARTBEAT_S
