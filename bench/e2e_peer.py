"""A load generator peer with end-to-end encryption: the Python client's `SecureChat`
(docs/e2e.md) on a `ParleyPeer`, so that `oneone --e2e` and `group --e2e` measure what
encryption costs the client and the server against the same runs in plaintext.

It does what an encrypting client does per message: a 1:1 text is sealed for the
peer's device (`send_text`), a group text once with the sender key (`send_group`); each
message received is opened as it arrives, before it counts as delivered, and the key
store is saved (encrypted at rest) after each, as `SecureChat` does. Sessions start in
the warm-up (the first message each way runs X3DH); a group's sender keys are handed
out when it is created (`share_keys`), outside the measured window. What it opened is
dropped after counting, to keep memory flat over a long run.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from bench.ledger import Ledger
from bench.peers import ParleyPeer
from client import Account, Ack
from client.e2e import SecureChat

PASSPHRASE = "bench"


class EncryptingPeer(ParleyPeer):
    """A `ParleyPeer` whose messages are end-to-end encrypted."""

    def __init__(
        self,
        base: str,
        account: Account,
        ledger: Ledger,
        stores: Path,
        auto_delivered: bool = True,
        read_interval_s: float = 1.0,
    ) -> None:
        super().__init__(base, account, ledger, auto_delivered, read_interval_s)
        self.store_path = stores / f"{account.user_id}-{account.device_id}.keys"
        self.secure: SecureChat | None = None
        self.group_members: dict[str, list[str]] = {}

    async def connect(self) -> None:
        await super().connect()
        if self.secure is None:
            self.store_path.parent.mkdir(parents=True, exist_ok=True)
            self.secure = SecureChat(self, self.store_path, PASSPHRASE)
            await asyncio.to_thread(self.secure.publish_keys)

    async def share_keys(self, chat_id: str, members: list[str]) -> None:
        """Hand this sender's key for a group to its members (before any measurement)."""
        assert self.secure is not None
        self.group_members[chat_id] = members
        await self.secure.share_sender_key(chat_id, members)
        self.secure.plain.clear()

    async def send_one(self, text: str, local_id: str, to: str | None, chat: str | None) -> Ack:
        assert self.secure is not None
        if chat is not None:
            ack = await self.secure.send_group(chat, self.group_members[chat], text, local_id)
        else:
            assert to is not None
            ack = await self.secure.send_text(to, text, local_id)
        self.secure.plain.clear()  # what a client shows; not needed here
        return ack

    async def _on_message(self, message: dict[str, Any], own: bool = False) -> None:
        chat_id, seq = str(message["chat_id"]), int(message["seq"])
        theirs = not own and message.get("sender") != self.user_id
        sealed = message.get("kind") == "ciphertext" and message.get("body") is not None
        if theirs and sealed and seq not in self.chats[chat_id].messages and self.secure:
            content = await self.secure.open_message(chat_id, seq, message)
            if content is None:
                self.ledger.on_error("undecryptable")
            self.secure.plain.clear()
            self.secure.save()
        await super()._on_message(message, own)
