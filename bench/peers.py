"""The clients a load generator drives: Parley's own client library, instrumented.

A peer is one user's connection. `ParleyPeer` is `client.ChatClient` (the reference
client, also used against the WebSocket baseline server, which speaks the same frames)
with hooks that stamp the ledger. It acknowledges what it receives as the library
does (a `delivered` frame as each chat's contiguous seq advances) and, like a user
with the chat open, marks it `read` at most once per `read_interval_s`.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
from collections import defaultdict
from datetime import datetime
from typing import Any, Protocol

from bench.ledger import Ledger, body_text
from client import Account, Ack, ChatClient, CommandFailed


class Peer(Protocol):
    """What a scenario needs of a connection, whatever the server."""

    address: str

    async def connect(self) -> None: ...

    async def send(self, local_id: str, size: int, to: str | None, chat: str | None) -> None: ...

    async def close(self) -> None: ...

    def is_open(self) -> bool: ...


class ParleyPeer(ChatClient):
    """A ChatClient that records sends, acks, deliveries and receipts in a ledger."""

    def __init__(
        self,
        base: str,
        account: Account,
        ledger: Ledger,
        auto_delivered: bool = True,
        read_interval_s: float = 1.0,
        source_host: str | None = None,
    ) -> None:
        super().__init__(
            base, account, auto_delivered=auto_delivered, timeout_s=30.0, source_host=source_host
        )
        self.address = account.user_id
        self.ledger = ledger
        self.read_interval_s = read_interval_s
        self._awaiting_receipt: dict[str, list[tuple[int, str]]] = defaultdict(list)
        self._delivered_mark: dict[str, int] = defaultdict(int)
        self._read_due: set[str] = set()
        self._in_sync_page = False

    def is_open(self) -> bool:
        return self._reader is not None and not self._reader.done()

    async def send(self, local_id: str, size: int, to: str | None, chat: str | None) -> None:
        """Send one text; on `timeout` resend with the same local id, as a client must."""
        text = body_text(local_id, size)
        for attempt in range(3):
            try:
                ack = await self.send_one(text, local_id, to, chat)
            except CommandFailed as exc:
                if exc.code != "timeout" or attempt == 2:
                    self.ledger.on_error(exc.code, local_id)
                    return
                self.ledger.on_error(exc.code)
                self.ledger.resent += 1
                continue
            except TimeoutError:
                self.ledger.on_error("client_timeout", local_id if attempt == 2 else None)
                self.ledger.resent += attempt < 2
                continue
            except Exception as exc:  # a dropped connection: counted, not raised
                self.ledger.on_error(type(exc).__name__, local_id)
                return
            self.ledger.on_ack(local_id, ack.seq)
            if ack.seq <= self._delivered_mark[ack.chat_id]:
                self.ledger.on_receipt(local_id)
            else:
                bisect.insort(self._awaiting_receipt[ack.chat_id], (ack.seq, local_id))
            return

    async def send_one(self, text: str, local_id: str, to: str | None, chat: str | None) -> Ack:
        """One text as this client sends it (in plaintext here; `bench.e2e_peer` encrypts)."""
        return await self.send_text(text, chat_id=chat, to=to, local_id=local_id)

    async def _on_frame(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "receipt" and frame.get("user_id") != self.user_id:
            self._on_receipt(str(frame["chat_id"]), int(frame["delivered_up_to"]))
        elif kind == "error" and not frame.get("id"):
            self.ledger.on_error(str(frame.get("code")))
        self._in_sync_page = kind == "sync_page"
        await super()._on_frame(frame)
        self._in_sync_page = False
        self.frames.clear()  # the library keeps every frame; a benchmark would grow forever

    def _on_receipt(self, chat_id: str, up_to: int) -> None:
        self._delivered_mark[chat_id] = max(self._delivered_mark[chat_id], up_to)
        waiting = self._awaiting_receipt[chat_id]
        cut = bisect.bisect_right(waiting, (up_to, "\uffff"))
        for _, local_id in waiting[:cut]:
            self.ledger.on_receipt(local_id)
        del waiting[:cut]

    async def _on_message(self, message: dict[str, Any], own: bool = False) -> None:
        chat_id, seq = str(message["chat_id"]), int(message["seq"])
        if message["sender"] != self.user_id:
            if seq in self.chats[chat_id].messages:
                self.ledger.redundant_pushes += 1
            else:
                local_id = str(message["local_id"])
                self.ledger.on_receive(local_id, self._in_sync_page)
                with contextlib.suppress(KeyError, ValueError, TypeError):
                    sent_at = datetime.fromisoformat(str(message["sent_at"]))
                    self.ledger.on_decided(local_id, sent_at.timestamp())
                if self.read_interval_s > 0 and chat_id not in self._read_due:
                    self._read_due.add(chat_id)
                    asyncio.get_running_loop().call_later(
                        self.read_interval_s, self._mark_read, chat_id
                    )
        await super()._on_message(message, own)
        state = self.chats[chat_id]
        if len(state.messages) > 1000:  # keep memory flat over a long run
            for old in [s for s in state.messages if s < state.contiguous - 100]:
                del state.messages[old]

    def _mark_read(self, chat_id: str) -> None:
        self._read_due.discard(chat_id)
        up_to = self.chats[chat_id].contiguous
        if up_to and self._ws is not None:
            frame = {"type": "read", "chat_id": chat_id, "up_to": up_to}
            task = asyncio.get_running_loop().create_task(self._quiet_send(frame))
            task.add_done_callback(lambda _: None)

    async def _quiet_send(self, frame: dict[str, Any]) -> None:
        with contextlib.suppress(Exception):
            await self._ws_send(frame)
