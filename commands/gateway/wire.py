"""The gateway's WebSockets: uvicorn reads the upgrade request, picows speaks the frames.

Why picows: the gateway pays for every frame in and out, and much of that was the
WebSocket layer. The WebSocket baseline (`bench.echo`: the same frames, the same client,
nothing stored), 500 pairs at 1,000 msgs/s, server CPU a message: 317-429 µs on
uvicorn's sans-I/O protocol (the gateway's before), 372-482 on its default, 187-222 on
picows, whose frame parser, masking and writer are C (docs/performance.md, "The hot
path, sixth step").

How one connection goes:
- uvicorn's HTTP protocol reads the request. A request with `Upgrade: websocket` goes to
  uvicorn's `ws` slot, which here makes a `Handshake`: uvicorn hands it the request
  head, rebuilt, as it hands it to its own WebSocket protocols.
- `Handshake` reads the path, query and headers, and runs the handler
  (`Gateway.serve`) with a `WebSocket` that has not answered yet. The handler checks
  origin and token, then accepts or refuses. Refusing answers HTTP 403 and closes, as
  uvicorn does. Accepting hands the socket to picows's protocol, which checks the
  upgrade headers (400 if they are wrong) and answers 101.
- From then on picows reads and writes frames and answers pings. `Keepalive`, one task
  for all the sockets, pings a peer that sent nothing for a whole `heartbeat_s` and
  drops it if it sends nothing (a pong or any frame) in the next (picows's own
  keepalive is a task a connection). A frame above `max_frame_bytes` closes the
  connection with 1009, text that is not UTF-8 with 1007. A message sent in fragments
  is put back together (within the same limit).
- Frames are written at once. While the peer reads slower than the gateway writes (the
  kernel's buffer and the transport's are full), frames wait in the connection, up to
  `send_queue`: beyond it `send` answers False and the gateway closes the connection
  (1013).
- Read frames wait in the connection for the handler, which takes them one at a time;
  after `INBOX_PAUSE` unread frames the socket stops reading until it catches up.

picows's protocol class is made here as `ws_create_server` makes it, so the version is
pinned (pyproject.toml); `tests/gateway/test_wire.py` runs a real uvicorn with it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

from picows import WSAutoPingStrategy, WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport
from picows.picows import WSProtocol  # type: ignore[attr-defined]  # not in its stubs

log = logging.getLogger("parley.gateway")

INBOX_PAUSE = 16
"""Unread frames after which a connection stops reading until its handler catches up."""
EARLY_BYTES = 64 * 1024
"""What a client may send after its request, before it is answered; more closes it."""
PATH = b"/ws"

Serve = Callable[["WebSocket"], Awaitable[None]]

_TEXT = WSMsgType.TEXT
_COPIED = 8192  # payloads picows copies whole (`_write`)
_HEADROOM = 14  # the longest frame header, room picows needs before a payload
_REFUSED = (
    b"HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 9\r\nconnection: close\r\n\r\nForbidden"
)
_NOT_FOUND = (
    b"HTTP/1.1 404 Not Found\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 9\r\nconnection: close\r\n\r\nNot Found"
)


@dataclass(frozen=True, slots=True)
class Options:
    max_frame_bytes: int  # a larger message closes the connection (1009)
    heartbeat_s: float  # a peer quiet this long is pinged, and dropped if it stays quiet
    send_queue: int  # frames held for a peer that reads slowly


class _PicowsLog:
    """picows's log, kept to what an operator needs.

    picows logs a few INFO lines a connection, makes a child logger for each, warns each
    time a slow reader pauses the writer, and logs a frame it cannot parse (a client's
    doing, repeatable at will) as an error. Here those are INFO at most, and no loggers
    are made; what picows reports of the gateway's own callbacks failing stays an error.
    """

    name = "parley.gateway.ws"

    def isEnabledFor(self, level: int) -> bool:  # logging's name
        return level >= logging.WARNING

    def debug(self, *args: Any, **kwargs: Any) -> None:
        pass

    def info(self, *args: Any, **kwargs: Any) -> None:
        pass

    def log(self, level: int, msg: str, *args: Any, **kwargs: Any) -> None:
        if level >= logging.WARNING:
            self.error(msg, *args)

    def warning(self, msg: str, *args: Any, **kwargs: Any) -> None:
        if not msg.startswith("Protocol writing"):  # a slow reader: the gateway holds frames
            self.error(msg, *args)

    def error(self, msg: str, *args: Any, **kwargs: Any) -> None:
        if msg.startswith("WS parser error"):  # what a client sent: it is closed
            log.info("event=ws_bad_frame reason=%s", args[0] if args else "")
        else:
            log.error("event=ws_protocol " + msg, *args)

    def exception(self, msg: str, *args: Any, **kwargs: Any) -> None:
        log.error("event=ws_protocol " + msg, *args, exc_info=True)


_PICOWS_LOG = _PicowsLog()


class WebSocket(WSListener):
    """One connection: its handshake until answered, then its frames both ways."""

    __slots__ = (
        "_abort_timer",
        "_answered",
        "_close_code",
        "_held",
        "_inbox",
        "_owner",
        "_parts",
        "_parts_size",
        "_paused",
        "_pinged",
        "_quiet",
        "_waiter",
        "_ws",
        "ended",
        "headers",
        "query_string",
    )

    def __init__(
        self, owner: Handshake, query_string: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None:
        self.headers = headers  # (name lower-cased, value), until answered
        self.query_string = query_string
        self._owner = owner
        self._quiet = False  # nothing came since the keepalive last looked
        self._pinged = False  # the keepalive pinged it and is waiting
        self._answered = False
        self._ws: WSTransport | None = None
        self._inbox: list[str | bytes | None] = []
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._parts: list[bytes] | None = None  # a fragmented message so far
        self._parts_size = 0
        self._held: list[bytes] | None = None  # frames waiting while the peer reads slowly
        self._close_code: int | None = None  # set once closing
        self._abort_timer: asyncio.TimerHandle | None = None
        self.ended = False

    # The handshake

    @property
    def accepted(self) -> bool:
        return self._ws is not None

    def accept(self) -> bool:
        """Answer 101; False if the client is gone or its upgrade headers are wrong."""
        if self._answered or self.ended:
            return False
        self._answered = True
        self.headers = []
        self.query_string = b""
        self._owner.upgrade(self)
        if self._ws is None:
            self._end()
        return self._ws is not None

    def refuse(self) -> None:
        """Answer HTTP 403 and close (before it was accepted)."""
        if not self._answered:
            self._answered = True
            self.headers = []
            self._owner.answer(_REFUSED)
        self._end()

    # Frames out

    def send(self, data: bytes) -> bool:
        """Write a text frame, or hold it while the peer reads slowly; False when
        `send_queue` frames are held already (nothing is written or held then)."""
        ws = self._ws
        if ws is None or self._close_code is not None:
            return True  # not open, closing or gone: nothing goes out, and it is no overflow
        held = self._held
        if held is None:
            _write(ws, data)
            return True
        if len(held) >= self._owner.options.send_queue:
            return False
        held.append(data)
        return True

    def close(self, code: int) -> None:
        """Close with `code` once the frames held are written (403 if not accepted).

        A peer that reads nothing of it for `heartbeat_s` is cut off all the same."""
        if self._ws is None:
            self.refuse()
            return
        if self._close_code is None:
            self._close_code = code
            if self._held is None:
                self._close_now()
            else:
                self._abort_later()
        self._end()

    @property
    def holding(self) -> bool:
        """Whether frames wait for the peer to read (its socket is full)."""
        return self._held is not None

    def drop_held(self) -> None:
        """Forget the frames held for a peer that does not read."""
        if self._held is not None:
            self._held.clear()

    # Frames in

    async def receive(self) -> str | bytes | None:
        """The next message (text, or bytes for a binary one); None once it has ended."""
        inbox = self._inbox
        while not inbox:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        message = inbox[0]
        if message is None:
            return None  # it stays ended for whoever asks again
        del inbox[0]
        if self._paused and len(inbox) <= INBOX_PAUSE // 2 and self._ws is not None:
            self._paused = False
            self._ws.underlying_transport.resume_reading()
        return message

    # The keepalive's visit, the transport lost early

    def look(self) -> None:
        """The keepalive's visit, once a heartbeat: a socket that sent nothing since the
        last one is pinged; one that did not answer that ping either is dropped."""
        ws = self._ws
        if ws is None or ws.is_disconnected:
            return
        if not self._quiet:
            self._quiet, self._pinged = True, False
        elif self._pinged:
            log.info("event=ws_aborted reason=no_pong")
            ws.disconnect(graceful=False)
        else:
            self._pinged = True
            ws.send_ping()

    def lost(self) -> None:
        """The transport closed before the socket was answered."""
        self._end()

    # picows's callbacks

    def on_ws_connected(self, transport: WSTransport) -> None:
        self._ws = transport
        self._owner.keepalive.sockets.add(self)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        self._quiet = False
        kind = frame.msg_type
        if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
            if self._parts is not None:
                self._fail(WSCloseCode.PROTOCOL_ERROR)  # a new message inside a fragmented one
            elif frame.fin:
                self._message(kind is WSMsgType.TEXT, frame.get_payload_as_bytes())
            else:
                mark = _TEXT_MARK if kind is WSMsgType.TEXT else b""
                self._parts = [mark, frame.get_payload_as_bytes()]
                self._parts_size = frame.payload_size
        elif kind is WSMsgType.CONTINUATION:
            parts = self._parts
            if parts is None:
                self._fail(WSCloseCode.PROTOCOL_ERROR)
                return
            self._parts_size += frame.payload_size
            if self._parts_size > self._owner.options.max_frame_bytes:
                self._fail(WSCloseCode.MESSAGE_TOO_BIG)
                return
            parts.append(frame.get_payload_as_bytes())
            if frame.fin:
                self._parts = None
                self._message(parts[0] is _TEXT_MARK, b"".join(parts[1:]))
        elif kind is WSMsgType.CLOSE:
            if self._close_code is None:  # the client closes: answer with its code
                code = frame.get_close_code().value
                self._close_code = code if _sendable(code) else 1000
                transport.send_close(WSCloseCode(self._close_code))
            transport.disconnect()
            self._end()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self._held = None
        if self._abort_timer is not None:
            self._abort_timer.cancel()
            self._abort_timer = None
        self._end()
        self._owner.keepalive.sockets.discard(self)
        self._owner.ended()

    def pause_writing(self) -> None:
        if self._held is None:
            self._held = []

    def resume_writing(self) -> None:
        held, self._held = self._held, None
        ws = self._ws
        if ws is None or held is None:
            return
        if self._abort_timer is not None:  # closing, and the peer reads: give it longer
            self._abort_timer.cancel()
            self._abort_timer = None
            self._abort_later()
        for index, data in enumerate(held):
            _write(ws, data)
            if self._held is not None:  # full again: the rest waits for the next resume
                self._held = held[index + 1 :]
                return
        if self._close_code is not None:
            self._close_now()

    # Inside

    def _message(self, text: bool, payload: bytes) -> None:
        if self.ended:  # closing: the handler reads nothing more
            return
        message: str | bytes
        if text:
            try:
                message = payload.decode()
            except UnicodeDecodeError:
                log.info("event=ws_bad_utf8")
                self._fail(WSCloseCode.INVALID_TEXT)
                return
        else:
            message = payload
        self._put(message)
        if len(self._inbox) >= INBOX_PAUSE and not self._paused and self._ws is not None:
            self._paused = True
            self._ws.underlying_transport.pause_reading()

    def _put(self, message: str | bytes | None) -> None:
        self._inbox.append(message)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, code: WSCloseCode) -> None:
        self._parts = None
        self._held = None
        if self._close_code is None:
            self._close_code = code.value
        self._close_now()
        self._end()

    def _close_now(self) -> None:
        ws = self._ws
        if ws is not None and not ws.is_disconnected:
            if not ws.is_close_frame_sent:
                ws.send_close(WSCloseCode(self._close_code or 1000))
            ws.disconnect()  # once what is buffered is written ...
            self._abort_later()

    def _abort_later(self) -> None:
        """... or once the peer has read nothing for `heartbeat_s`."""
        if self._abort_timer is None:
            loop = asyncio.get_running_loop()
            self._abort_timer = loop.call_later(self._owner.options.heartbeat_s, self._abort)

    def _abort(self) -> None:
        self._abort_timer = None
        ws = self._ws
        if ws is not None and not ws.is_disconnected:
            log.info("event=ws_aborted reason=unread close_code=%s", self._close_code)
            ws.disconnect(graceful=False)

    def _end(self) -> None:
        """The handler's side: nothing more to read."""
        if not self.ended:
            self.ended = True
            self._inbox.clear()
            self._put(None)


_TEXT_MARK = b"t"


class Handshake(asyncio.Protocol):
    """uvicorn's `ws` slot: one upgrade request until it is answered, then the entry in
    uvicorn's connections until the socket ends (uvicorn waits for those on shutdown)."""

    __slots__ = (
        "connections",
        "keepalive",
        "options",
        "read",
        "read_size",
        "serve",
        "socket",
        "tasks",
        "transport",
    )

    def __init__(
        self, serve: Serve, options: Options, keepalive: Keepalive, server_state: Any
    ) -> None:
        self.serve = serve
        self.options = options
        self.keepalive = keepalive
        keepalive.start()
        self.connections: set[Any] = server_state.connections
        self.tasks: set[asyncio.Task[None]] = server_state.tasks  # uvicorn waits for these
        self.transport: asyncio.Transport | None = None
        self.socket: WebSocket | None = None
        self.read: list[bytes] = []  # the head, then what came before the answer
        self.read_size = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's: not a subclass
        self.connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return  # answered over HTTP already
        self.read.append(data)
        if self.socket is not None:  # sent before the answer: picows reads it after
            self.read_size += len(data)
            if self.read_size > EARLY_BYTES:
                self.transport.close()
            return
        # The first call carries the whole head, as uvicorn rebuilt it.
        path, query, headers = _request(data)
        if path != PATH:
            self.answer(_NOT_FOUND)
            return
        socket = self.socket = WebSocket(self, query, headers)
        task = asyncio.get_running_loop().create_task(self._run(socket))
        self.tasks.add(task)  # a handler's cleanup finishes before the app shuts down
        task.add_done_callback(self.tasks.discard)

    def connection_lost(self, exc: Exception | None) -> None:
        # Only while this is the transport's protocol: before the answer.
        if self.socket is not None:
            self.socket.lost()
        self.ended()

    def shutdown(self) -> None:
        """uvicorn stopping: 1012 to an accepted socket, else close."""
        socket = self.socket
        if socket is not None and socket.accepted:
            socket.close(1012)
        elif self.transport is not None:
            self.transport.close()

    def ended(self) -> None:
        """The transport is closed (or closing, unanswered): uvicorn stops waiting for it."""
        self.connections.discard(self)

    async def _run(self, socket: WebSocket) -> None:
        try:
            await self.serve(socket)
        except Exception:
            log.exception("event=ws_handler_failed")
            socket.close(1011)
        finally:
            if not socket.accepted:
                socket.refuse()  # nothing if it was accepted, or closed, already

    def upgrade(self, socket: WebSocket) -> None:
        """Hand the transport to picows with what was read; it answers 101 (or 400)."""
        transport, read = self.transport, self.read
        self.read = []
        if transport is None or transport.is_closing():
            return
        options = self.options
        protocol = WSProtocol(
            None,  # host and port: a client's
            None,  # path: a client's
            False,  # the server's side
            lambda _request: socket,
            _PICOWS_LOG,
            True,  # an exception in a callback closes the connection
            None,  # no handshake timeout: uvicorn read the request already
            False,  # no keepalive task a connection: `Keepalive` pings them all
            options.heartbeat_s,
            options.heartbeat_s,
            WSAutoPingStrategy.PING_WHEN_IDLE,
            True,  # answer pings
            options.max_frame_bytes,
            None,  # extra response headers
            2048,  # the read buffer's first size; it grows for a larger frame
        )
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        for data in read:
            _feed(protocol, data)
        if not socket.accepted:  # refused (400) and closing: picows tells no one
            self.ended()

    def answer(self, response: bytes) -> None:
        """Answer over HTTP and close."""
        self.read = []
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(response)
            self.transport.close()


class Keepalive:
    """Pings the sockets that sent nothing for a whole `heartbeat_s`, and drops those
    that send nothing for the next one either: one task for every socket."""

    def __init__(self, heartbeat_s: float) -> None:
        self.heartbeat_s = heartbeat_s
        self.sockets: set[WebSocket] = set()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run(), name="ws-keepalive")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            self.sweep()

    def sweep(self) -> None:
        for socket in list(self.sockets):
            socket.look()


def _sendable(code: int) -> bool:
    """A close code that may go on the wire (RFC 6455 7.4: not 1004-1006 or 1015)."""
    return (1000 <= code <= 1014 and code not in (1004, 1005, 1006)) or 3000 <= code <= 4999


def _write(ws: WSTransport, data: bytes) -> None:
    """One text frame. picows copies a payload up to 8 KiB into its own buffer; a larger
    one it hands the transport as a view of that buffer's header beside the payload, and
    a transport that cannot write at once keeps the view while the next frame overwrites
    the header under it. So a larger payload goes out in a buffer of its own."""
    if len(data) <= _COPIED:
        ws.send(_TEXT, data)
    else:
        ws.send_reuse_external_bytearray(_TEXT, bytearray(_HEADROOM) + data, _HEADROOM)


def _feed(protocol: WSProtocol, data: bytes) -> None:
    """Give `data` to picows's buffered protocol as the transport would."""
    view = memoryview(data)
    while view:
        buffer = protocol.get_buffer(len(view))
        n = min(len(buffer), len(view))
        buffer[:n] = view[:n]
        protocol.buffer_updated(n)
        view = view[n:]


def _request(head: bytes) -> tuple[bytes, bytes, list[tuple[bytes, bytes]]]:
    """Path, query string and headers (names lower-cased) of uvicorn's rebuilt head."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    target = parts[1] if len(parts) > 2 else b"/"
    path, _, query = target.partition(b"?")
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        if not line:
            break
        name, _, value = line.partition(b":")
        headers.append((name.strip().lower(), value.strip()))
    return unquote_to_bytes(path), query, headers


def upgrade_slot(serve: Callable[[], Serve], options: Options) -> Callable[..., Handshake]:
    """What uvicorn takes as `ws`: a `Handshake` a request, handled by `serve()` (looked
    up a request: the app makes its gateway once uvicorn has started)."""

    keepalive = Keepalive(options.heartbeat_s)

    def slot(config: Any = None, server_state: Any = None, app_state: Any = None) -> Handshake:
        return Handshake(serve(), options, keepalive, server_state)

    return slot
