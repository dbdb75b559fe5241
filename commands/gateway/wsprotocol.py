"""uvicorn's sans-I/O WebSocket protocol, kept small for connections that live for hours.

A gateway holds tens of thousands of mostly idle sockets, so what each one keeps after
its handshake is the gateway's memory. uvicorn's `websockets-sansio` protocol (the
`websockets` library's state machine, keepalive pings on timers rather than tasks) is
the leanest of uvicorn's three; `LeanWebSocketProtocol` changes what it keeps, not what
it does:

- the handshake's request and response, with their headers (about 4 KiB), are let go
  once the connection is accepted, and so are the headers in the ASGI scope: an app
  reads what it needs from them before it accepts (the gateway: origin and token);
- the receive queue is a list and one future instead of an `asyncio.Queue` (three
  deques of 64 slots each), and the "transport writable" flag a bool and a future made
  only while writing is paused, instead of an `asyncio.Event` (one more deque).

One thing it does differently: a text frame that is not UTF-8 closes the connection
with 1007 as uvicorn does, but logs one INFO line (`event=ws_bad_utf8`) where uvicorn
logs an ERROR with a traceback, which any client could repeat to fill the disk.

uvicorn takes the class as its `ws` option (`commands/service.py`). The frames on the
wire, the limits (close 1009 above `ws_max_size`), pings and closing are uvicorn's and
`websockets`'; `tests/gateway/test_wsprotocol.py` holds them to that.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request
from websockets.protocol import Protocol

log = logging.getLogger("parley.gateway")


class Mailbox:
    """The `asyncio.Queue` methods the protocol uses, for one reader (the gateway queues
    a connection's outgoing frames in one too)."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        self._items.clear()

    async def get(self) -> Any:
        # Reading is paused after every message until the app takes it (uvicorn's
        # `receive`), and the gateway's writer takes frames as they come, so the list
        # stays a few items long and pop(0) is cheap.
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.pop(0)


class Flag:
    """The `asyncio.Event` methods the protocol uses; waiters only while it is clear."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = True
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        if self._set:
            return True
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        await waiter
        return True


class LeanWebSocketProtocol(WebSocketsSansIOProtocol):
    """`websockets-sansio` that lets go of what it no longer needs (module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = Mailbox()  # type: ignore[assignment]
        self.writable = Flag()  # type: ignore[assignment]
        self.let_go = False  # the handshake's response and scope headers

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        del self.request
        if self.response.status_code != 101:
            return
        # The `websockets` parser is a generator that parsed the request and went on to
        # read frames with the request still in its frame. When no frame bytes follow
        # the request (a client waits for the 101 before sending), it sits at its first
        # "anything more?" having consumed nothing, and a fresh frame parser in its place
        # is the same parser without the request.
        conn = self.conn
        if not conn.reader.buffer:
            parser = Protocol.parse(conn)
            next(parser)
            conn.parser = parser

    async def send(self, message: Any) -> None:
        await super().send(message)
        if self.handshake_complete and not self.let_go:
            self.let_go = True  # accepted or refused: nothing reads them again
            del self.response
            self.scope["headers"] = []

    def send_receive_event_to_app(self) -> None:
        """uvicorn's, with a short log line for a text frame that is not UTF-8."""
        if self.curr_msg_data_type != "text" or self.close_sent:
            super().send_receive_event_to_app()
            return
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        try:
            text = data.decode()
        except UnicodeDecodeError:
            log.info("event=ws_bad_utf8 client=%s", self.client[0] if self.client else "-")
            self.conn.send_close(1007)
            self.handle_parser_exception()
            return
        self.queue.put_nowait({"type": "websocket.receive", "text": text})
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()
