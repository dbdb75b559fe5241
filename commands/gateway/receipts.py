"""Receipts coalesced per connection and chat: at most one `delivered` and one `read`
command per window, each carrying the highest cursor the connection sent.

Two of a message's three commands are receipts, and a cursor only moves forward, so the
last of a burst says everything the others said. A connection's first receipt for a
chat goes out at once (a lone message's ticks are not delayed); any that follow within
`PARLEY_RECEIPT_WINDOW_MS` are held and, when the window closes, sent as one with the
highest `up_to` (which opens the next window). A `read` also covers a held `delivered`
at or below it, which is then not sent. Only quiet receipts (no `id`: nobody waits for
an answer) are coalesced; a failure of the merged one is told to the connection as
before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from uuid import UUID

from commands.command import Command, CommandType, Outcome
from commands.gateway.bus import CommandBus
from commands.gateway.connection import Connection
from commands.gateway.protocol import error_frame
from infra.settings import Settings

Send = Callable[[UUID, bool, int], None]
"""Sends one receipt command: (chat, read, up_to)."""


class ReceiptWindow:
    """The coalescing of one connection's receipts (`Connection.receipts`)."""

    def __init__(self, window_s: float, send: Send) -> None:
        self.window_s = window_s
        self.send = send
        self._held: dict[tuple[UUID, bool], int | None] = {}  # open windows: held up_to
        self.sent = 0
        self.merged = 0  # receipts folded into another one

    @property
    def open_windows(self) -> int:
        return len(self._held)

    def submit(self, chat_id: UUID, read: bool, up_to: int) -> None:
        if read:  # reading implies delivery: a held `delivered` it covers goes unsent
            key = (chat_id, False)
            held = self._held.get(key)
            if held is not None and held <= up_to:
                self._held[key] = None
                self.merged += 1
        key = (chat_id, read)
        if self.window_s <= 0:
            self._send(chat_id, read, up_to)
        elif key not in self._held:
            self._send(chat_id, read, up_to)
            self._open(key)
        else:
            held = self._held[key]
            if held is not None:
                self.merged += 1
            self._held[key] = up_to if held is None else max(held, up_to)

    def _open(self, key: tuple[UUID, bool]) -> None:
        self._held[key] = None
        asyncio.get_running_loop().call_later(self.window_s, self._close, key)

    def _close(self, key: tuple[UUID, bool]) -> None:
        held = self._held.pop(key, None)
        if held is not None:
            self._send(key[0], key[1], held)
            self._open(key)

    def _send(self, chat_id: UUID, read: bool, up_to: int) -> None:
        self.sent += 1
        self.send(chat_id, read, up_to)


def receipt_window(
    settings: Settings, bus: CommandBus, gateway_id: str, connection: Connection
) -> ReceiptWindow:
    """The window of `connection`, firing each receipt as a quiet command on `bus`."""

    def send(chat_id: UUID, read: bool, up_to: int) -> None:
        command = Command(
            CommandType.MARK_READ if read else CommandType.MARK_DELIVERED,
            chat_id,
            connection.user_id,
            {"up_to": up_to},
            device_id=connection.identity.device_id,
            reply_to=gateway_id,
            quiet=True,
        )

        def failed(outcome: Outcome) -> None:
            connection.push(error_frame(outcome.error_code, outcome.error_message, ""))

        bus.fire(command, failed)

    return ReceiptWindow(settings.receipt_window_ms / 1000, send)
