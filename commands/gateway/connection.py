"""One live WebSocket as the gateway holds it, and what its handshake carries.

`Connection` is kept small (a gateway holds tens of thousands): who it is, its socket,
the commands in flight, what it acknowledged. `credentials` reads the handshake's Origin
and access token.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl
from uuid import UUID

from commands.gateway.protocol import dump
from commands.gateway.wire import WebSocket
from infra.auth import Identity

log = logging.getLogger("parley.gateway")

MAX_IN_FLIGHT = 256
"""Commands of one connection awaiting their outcome; beyond it, its reads wait."""
MAX_ACKED_CHATS = 1024
"""Chats whose acknowledgements a connection remembers, to spare it its own receipts."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Flag:
    """The `asyncio.Event` methods a connection uses; waiters only while it is clear."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = True
        self._waiters: list[asyncio.Future[None]] | None = None

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> None:
        if self._set:
            return
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        await waiter


@dataclass(eq=False, slots=True)
class Connection:
    """One live WebSocket: who it is, and what it has in flight.

    Kept small: a gateway holds tens of thousands. Frames are written as they are
    pushed; the socket holds them while the client reads slowly (`wire.WebSocket`).
    """

    ws: WebSocket
    identity: Identity
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
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

    def push(self, frame: dict[str, Any] | bytes) -> None:
        """Write a frame to this connection; one that does not read is closed (1013)."""
        if self.closing:
            return
        if not self.ws.send(frame if isinstance(frame, bytes) else dump(frame)):
            log.warning("event=slow_consumer_closed connection=%s user=%s", self.id, self.user_id)
            self.ws.drop_held()  # it does not read: what is held would never be read
            self.close(1013)

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
        """Close after writing what is held."""
        if not self.closing:
            self.closing = True
            self.close_code = code
            self.ws.close(code)

    async def admit_command(self) -> None:
        """Wait while MAX_IN_FLIGHT commands of this connection await their outcome."""
        while self.in_flight >= MAX_IN_FLIGHT:
            self.room.clear()
            await self.room.wait()
        self.in_flight += 1

    def command_done(self) -> None:
        self.in_flight -= 1
        self.room.set()


def credentials(headers: list[tuple[bytes, bytes]], query_string: bytes) -> tuple[str | None, str]:
    """The handshake's Origin and access token (query parameter, else bearer header);
    header names lower-cased, the first of each counts."""
    origin: str | None = None
    authorization: str | None = None
    for name, value in headers:
        if name == b"origin" and origin is None:
            origin = value.decode("latin-1")
        elif name == b"authorization" and authorization is None:
            authorization = value.decode("latin-1")
    token = ""
    for key, text in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if key == "access_token":
            token = text
    if not token and authorization and authorization.lower().startswith("bearer "):
        token = authorization[7:].strip()
    return origin, token
