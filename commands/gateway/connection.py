"""One live WebSocket as the gateway holds it, and what its handshake carries.

`Connection` is kept small (a gateway holds tens of thousands): who it is, the frames
waiting to be written, the commands in flight, what it acknowledged. `credentials`
reads the handshake's Origin and access token from the raw ASGI scope.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl
from uuid import UUID

from starlette.websockets import WebSocket

from commands.gateway.protocol import dump
from commands.gateway.wsprotocol import Flag, Mailbox
from infra.auth import Identity

log = logging.getLogger("parley.gateway")

MAX_IN_FLIGHT = 256
"""Commands of one connection awaiting their outcome; beyond it, its reads wait."""
MAX_ACKED_CHATS = 1024
"""Chats whose acknowledgements a connection remembers, to spare it its own receipts."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(eq=False, slots=True)
class Connection:
    """One live WebSocket: who it is, and the frames waiting to be written to it.

    Kept small: a gateway holds tens of thousands. Frames wait in a `Mailbox` (a list,
    and a future only while the writer waits), ended by None once the connection closes.
    """

    ws: WebSocket
    identity: Identity
    queue_size: int
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    frames: Mailbox = field(default_factory=Mailbox)
    in_flight: int = 0  # commands sent, outcome not yet answered
    room: Flag = field(default_factory=Flag)  # clear while in_flight is at MAX_IN_FLIGHT
    typing_sent: dict[tuple[UUID, str], float] = field(default_factory=dict)
    # chat id (text) -> [delivered, read] up to which this connection acknowledged:
    # its own receipts that tell it no more are not pushed back to it (None until the
    # first acknowledgement; idle connections stay small).
    acked: dict[str, list[int]] | None = None
    receipts: Any = None  # its `ReceiptWindow`, from its first quiet receipt
    closing: bool = False
    close_code: int = 1000

    @property
    def user_id(self) -> UUID:
        return self.identity.user_id

    def push(self, frame: dict[str, Any] | str) -> None:
        """Queue a frame for this connection; a full queue closes it (1013)."""
        if self.closing:
            return
        if self.frames.qsize() >= self.queue_size:
            log.warning("event=slow_consumer_closed connection=%s user=%s", self.id, self.user_id)
            self.frames.clear()  # it does not read: what is queued would never be read
            self.close(1013)
            return
        self.frames.put_nowait(frame if isinstance(frame, str) else dump(frame))

    def acknowledged(self, chat_id: str, read: bool, up_to: int) -> None:
        """Note a `delivered` or `read` this connection sent (reading implies delivery)."""
        if self.acked is None or len(self.acked) >= MAX_ACKED_CHATS:
            self.acked = {}  # beyond the bound, forget: a receipt too many, nothing worse
        marks = self.acked.setdefault(chat_id, [0, 0])
        marks[0] = max(marks[0], up_to)
        if read:
            marks[1] = max(marks[1], up_to)

    def knows(self, receipt: dict[str, Any]) -> bool:
        """Whether `receipt`, about this connection's own user, tells it nothing new: it
        moves no cursor past what this connection itself acknowledged."""
        marks = self.acked.get(receipt["chat_id"]) if self.acked is not None else None
        if marks is None:
            return False
        read = receipt.get("read_up_to")
        return bool(receipt["delivered_up_to"] <= marks[0] and (read is None or read <= marks[1]))

    def close(self, code: int) -> None:
        """Close after writing what is queued."""
        if not self.closing:
            self.closing = True
            self.close_code = code
            self.frames.put_nowait(None)

    async def next_frame(self) -> str | None:
        """The next frame to write; None once closing and nothing is left."""
        frame: str | None = await self.frames.get()
        return frame

    async def admit_command(self) -> None:
        """Wait while MAX_IN_FLIGHT commands of this connection await their outcome."""
        while self.in_flight >= MAX_IN_FLIGHT:
            self.room.clear()
            await self.room.wait()
        self.in_flight += 1

    def command_done(self) -> None:
        self.in_flight -= 1
        self.room.set()


def credentials(scope: MutableMapping[str, Any]) -> tuple[str | None, str]:
    """The handshake's Origin and access token (query parameter, else bearer header).

    Read from the raw scope: Starlette's `headers` and `query_params` would stay cached
    on the socket for its whole life. Names are compared lower-cased: uvicorn's sans-I/O
    protocol passes them on as the client spelled them.
    """
    origin: str | None = None
    authorization: str | None = None
    for raw_name, value in scope["headers"]:  # the first of each, as Starlette's Headers
        name = raw_name.lower()
        if name == b"origin" and origin is None:
            origin = value.decode("latin-1")
        elif name == b"authorization" and authorization is None:
            authorization = value.decode("latin-1")
    token = ""
    for key, value in parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True):
        if key == "access_token":
            token = value
    if not token and authorization and authorization.lower().startswith("bearer "):
        token = authorization[7:].strip()
    return origin, token
