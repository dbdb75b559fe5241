"""The client itself: see the package docstring and docs/protocol.md.

Over 400 lines on purpose: one device's connection, the frames it sends and the state
it holds from those it gets read as one protocol; what a client shows of actions on
messages is folded apart (`client.actions`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import time
import urllib.error
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

from client.actions import Shown, shown, timer_of

GAP_GRACE_S = 0.3
"""How long a gap in a chat may last before asking the server for what is missing."""


class CommandFailed(Exception):
    """The server answered a frame with an `error` frame."""

    def __init__(self, frame: dict[str, Any]) -> None:
        super().__init__(f"{frame.get('code')}: {frame.get('message')}")
        self.code = str(frame.get("code"))
        self.frame = frame


@dataclass(frozen=True)
class Account:
    user_id: str
    username: str
    device_id: str
    access_token: str
    refresh_token: str


@dataclass(frozen=True)
class Ack:
    """The single tick: the server stored the message."""

    chat_id: str
    local_id: str
    message_id: str
    seq: int
    position: int
    duplicate: bool


def _post(base: str, path: str, body: dict[str, Any], token: str = "") -> dict[str, Any]:
    return http_json("POST", base, path, body, token)


def http_json(
    method: str, base: str, path: str, body: dict[str, Any] | None = None, token: str = ""
) -> dict[str, Any]:
    """One JSON request to the commands service; `CommandFailed` with the error's code."""
    request = urllib.request.Request(
        f"{base}{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={
            "Content-Type": "application/json",
            **({"Authorization": f"Bearer {token}"} if token else {}),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            data: dict[str, Any] = json.loads(response.read() or b"{}")
            return data
    except urllib.error.HTTPError as exc:
        raise CommandFailed(json.loads(exc.read() or b"{}").get("error", {})) from None


def register_and_login(
    base: str,
    username: str,
    password: str = "correct horse battery",
    device_id: str = "d1",
    phone: str | None = None,
) -> Account:
    """Register (if new) and log in; `base` is the commands service, e.g. http://127.0.0.1:18080."""
    # Random, not derived from the username: seven digits of a hash can collide among
    # the thousands of users a test database holds.
    phone = phone or "+1555" + str(uuid.uuid4().int % 10**10).zfill(10)
    try:
        _post(
            base, "/v1/auth/register", {"username": username, "phone": phone, "password": password}
        )
    except CommandFailed as exc:
        if exc.code != "username_taken":  # taken: registered before, so log in
            raise
    pair = _post(
        base, "/v1/auth/login", {"username": username, "password": password, "device_id": device_id}
    )
    return Account(
        pair["user_id"], username, device_id, pair["access_token"], pair["refresh_token"]
    )


def lookup_user(
    base: str, token: str, username: str | None = None, phone: str | None = None
) -> dict[str, str]:
    """The user with exactly this username or phone number: `user_id`, `username`,
    `display_name` (`POST /v1/users/lookup`); `CommandFailed` `unknown_user` if none."""
    body = {"username": username} if username is not None else {"phone": phone}
    found = _post(base, "/v1/users/lookup", body, token=token)
    return {key: str(found[key]) for key in ("user_id", "username", "display_name")}


@dataclass
class ChatState:
    messages: dict[int, dict[str, Any]] = field(default_factory=dict)
    contiguous: int = 0  # every seq up to this one is held
    cursors: dict[str, dict[str, int | None]] = field(default_factory=dict)


class ChatClient:
    """One device's connection; reconnects and syncs when asked to (`reconnect`)."""

    def __init__(
        self,
        base: str,
        account: Account,
        auto_delivered: bool = True,
        timeout_s: float = 10.0,
        source_host: str | None = None,
    ) -> None:
        """`source_host`: the local address to connect from (a load generator opening
        more connections to one server address than one source address has ports)."""
        self.base = base
        self.account = account
        self.source_host = source_host
        self.auto_delivered = auto_delivered
        self.timeout_s = timeout_s
        self.chats: dict[str, ChatState] = defaultdict(ChatState)
        self.frames: list[dict[str, Any]] = []  # everything pushed, in arrival order
        self.typists: dict[str, set[str]] = defaultdict(set)  # chat -> users typing
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._unacked: dict[str, dict[str, Any]] = {}  # request id -> send frame
        self._gaps: set[str] = set()  # chats with a gap check pending
        self._ids = itertools.count(1)
        self._changed = asyncio.Event()
        self.hello: dict[str, Any] = {}

    @property
    def user_id(self) -> str:
        return self.account.user_id

    # Connection

    async def connect(self) -> None:
        url = self.base.replace("http", "ws", 1) + "/ws?access_token=" + self.account.access_token
        local: dict[str, Any] = {"local_addr": (self.source_host, 0)} if self.source_host else {}
        self._ws = await websockets.connect(url, max_size=2**20, compression=None, **local)
        self.hello = json.loads(await asyncio.wait_for(self._ws.recv(), self.timeout_s))
        self._reader = asyncio.create_task(self._read())

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._ws is not None:
            await self._ws.close()

    async def reconnect(self) -> None:
        """Connect again, sync from our cursors, and resend what was never acked."""
        with contextlib.suppress(Exception):
            await self.close()
        await self.connect()
        await self.sync()
        for frame in list(self._unacked.values()):
            await self._ws_send(frame)

    async def _ws_send(self, frame: dict[str, Any]) -> None:
        assert self._ws is not None, "connect() first"
        await self._ws.send(json.dumps(frame))

    async def request(self, frame: dict[str, Any]) -> dict[str, Any]:
        """Send a frame with a fresh id and wait for the answer to it."""
        request_id = frame.setdefault("id", f"r{next(self._ids)}")
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters[request_id] = future
        try:
            await self._ws_send(frame)
            answer = await asyncio.wait_for(future, self.timeout_s)
        finally:
            self._waiters.pop(request_id, None)
        if answer.get("type") == "error":
            raise CommandFailed(answer)
        return answer

    # Chat

    async def send_text(
        self,
        text: str,
        chat_id: str | None = None,
        to: str | None = None,
        local_id: str | None = None,
        reply_to: int | None = None,
    ) -> Ack:
        """A text; `reply_to`: the seq of the message it answers (quoted by the server)."""
        fields: dict[str, Any] = {"kind": "text", "text": text}
        if reply_to is not None:
            fields["ref"] = reply_to
        return await self._send(fields, text.encode(), None, chat_id, to, local_id)

    async def react(self, chat_id: str, seq: int, emoji: str) -> Ack:
        """Set, change or (with "") remove our reaction to message `seq`."""
        fields = {"kind": "reaction", "ref": seq, "text": emoji}
        return await self._send(fields, emoji.encode(), None, chat_id, None, None)

    async def edit(self, chat_id: str, seq: int, text: str) -> Ack:
        """Replace the text of our message `seq` (within the edit window)."""
        fields = {"kind": "edit", "ref": seq, "text": text}
        return await self._send(fields, text.encode(), None, chat_id, None, None)

    async def delete(self, chat_id: str, seq: int) -> Ack:
        """Delete message `seq` for everyone (ours, or any as a group admin)."""
        fields = {"kind": "delete", "ref": seq}
        return await self._send(fields, b"", None, chat_id, None, None)

    async def set_timer(self, chat_id: str, timer_s: int) -> Ack:
        """Set the chat's disappearing-messages timer (0: off), announced to its members."""
        fields = {"kind": "timer", "timer_s": timer_s}
        return await self._send(fields, str(timer_s).encode(), None, chat_id, None, None)

    def timer_of(self, chat_id: str) -> int:
        """The chat's disappearing-messages timer, from the latest `timer` message held."""
        return timer_of(self.chats[chat_id].messages)

    async def forward(self, chat_id: str, seq: int, to_chats: list[str]) -> dict[str, Any]:
        """Copy message `seq` to `to_chats`; the `forwarded` answer, each chat's outcome.
        Our copies are held from it, as a send is held from its ack."""
        local_id = f"f-{time.time_ns()}-{uuid.uuid4().hex[:6]}"
        frame = {
            "type": "forward",
            "chat_id": chat_id,
            "seq": seq,
            "to_chats": to_chats,
            "local_id": local_id,
        }
        answer = await self.request(frame)
        original = self.chats[chat_id].messages.get(seq, {})
        for result in answer["results"]:
            if "seq" in result:
                copy = {**original, "chat_id": result["chat_id"], "seq": result["seq"]}
                copy.update(message_id=result["message_id"], sender=self.user_id, ref=None)
                copy.update(quote=None, forwarded=answer["forwarded"], local_id=None)
                await self._on_message(copy, own=True)
        return answer

    def shown(self, chat_id: str) -> dict[int, Shown]:
        """The chat as a user sees it: actions applied (`client.actions.shown`)."""
        return shown(self.chats[chat_id].messages)

    async def send_media(
        self,
        media: dict[str, Any],
        caption: str = "",
        chat_id: str | None = None,
        to: str | None = None,
        local_id: str | None = None,
    ) -> Ack:
        """Send a confirmed upload (`client.media.upload_media`) with an optional caption."""
        fields = {"kind": "media", "text": caption, "media": {"media_id": media["media_id"]}}
        return await self._send(fields, caption.encode(), media, chat_id, to, local_id)

    async def send_fields(
        self,
        fields: dict[str, Any],
        body: bytes,
        chat_id: str | None = None,
        to: str | None = None,
        local_id: str | None = None,
    ) -> Ack:
        """Send a frame with these fields (`kind` and its content); `body` is what this
        device holds of it (end-to-end encryption, `client.e2e`)."""
        return await self._send(fields, body, None, chat_id, to, local_id)

    async def _send(
        self,
        fields: dict[str, Any],
        body: bytes,
        media: dict[str, Any] | None,
        chat_id: str | None,
        to: str | None,
        local_id: str | None,
    ) -> Ack:
        local_id = local_id or f"{time.time_ns()}-{uuid.uuid4().hex[:6]}"
        frame: dict[str, Any] = {
            "type": "send",
            "id": f"s-{local_id}",
            "local_id": local_id,
            **fields,
        }
        if chat_id is not None:
            frame["chat_id"] = chat_id
        if to is not None:
            frame["to"] = to
        self._unacked[frame["id"]] = frame
        try:
            answer = await self.request(dict(frame))
        except CommandFailed as exc:
            if exc.code not in ("timeout", "unavailable"):  # refused: a resend would be too
                self._unacked.pop(frame["id"], None)
            raise
        self._unacked.pop(frame["id"], None)
        # The server does not push our own message back to this device: the ack says
        # where it stands in the chat, so it is held from here on.
        await self._on_message(
            {
                "type": "message",
                "chat_id": answer["chat_id"],
                "seq": answer["seq"],
                "message_id": answer["message_id"],
                "sender": self.user_id,
                "local_id": local_id,
                "kind": fields["kind"],
                "body": base64.b64encode(body).decode("ascii"),
                "media": media,
                "sent_at": None,
                "ref": fields.get("ref"),
                "quote": None,
            },
            own=True,
        )
        return Ack(
            answer["chat_id"],
            answer["local_id"],
            answer["message_id"],
            answer["seq"],
            answer["position"],
            answer["duplicate"],
        )

    async def create_group(self, name: str, members: list[str]) -> str:
        answer = await self.request(
            {"type": "create_group", "name": name, "chat_id": str(uuid.uuid4()), "members": members}
        )
        return str(answer["chat_id"])

    async def group(self, kind: str, chat_id: str, **fields: Any) -> dict[str, Any]:
        return await self.request({"type": kind, "chat_id": chat_id, **fields})

    async def mark_delivered(self, chat_id: str, up_to: int) -> None:
        await self.request({"type": "delivered", "chat_id": chat_id, "up_to": up_to})

    async def mark_read(self, chat_id: str, up_to: int) -> None:
        await self.request({"type": "read", "chat_id": chat_id, "up_to": up_to})

    async def typing(self, chat_id: str, state: str = "start") -> None:
        await self._ws_send({"type": "typing", "chat_id": chat_id, "state": state})

    async def presence(self, user_id: str) -> dict[str, Any]:
        return await self.request({"type": "presence", "user_id": user_id})

    async def sync(self, only: str | None = None) -> int:
        """Ask for what we miss after our cursors; return how many pages came."""
        cursors = {c: s.contiguous for c, s in self.chats.items() if only in (None, c)}
        done = await self.request({"type": "sync", "cursors": cursors})
        return int(done.get("pages", 0))

    def text_of(self, chat_id: str, seq: int) -> str:
        return base64.b64decode(self.chats[chat_id].messages[seq]["body"]).decode()

    def texts(self, chat_id: str) -> list[str]:
        """The chat's texts in seq order; a `hidden` message (from a user we blocked)
        holds its seq but shows nothing."""
        state = self.chats[chat_id]
        return [
            self.text_of(chat_id, seq)
            for seq in sorted(state.messages)
            if not state.messages[seq].get("hidden")
        ]

    def ticks(self, chat_id: str, seq: int) -> str:
        """sent / delivered / read for our own message `seq`, from the others' cursors."""
        others = [c for u, c in self.chats[chat_id].cursors.items() if u != self.user_id]
        if others and all((c.get("read") or 0) >= seq for c in others):
            return "read"
        if others and all((c.get("delivered") or 0) >= seq for c in others):
            return "delivered"
        return "sent"

    async def wait_until(
        self, condition: Callable[[], bool], timeout_s: float | None = None
    ) -> None:
        """Wait for pushed frames to make `condition` true, up to a deadline."""
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        while not condition():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("condition not met in time")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    # Incoming

    async def _read(self) -> None:
        assert self._ws is not None
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in self._ws:
                frame = json.loads(raw)
                await self._on_frame(frame)
                self._changed.set()
        # The server closed the connection or it dropped (`close` cancels this task before
        # it gets here): nothing waiting is answered on it now. Each request fails at once
        # instead of at its timeout, so its caller reconnects and resends without waiting.
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_exception(ConnectionError("the connection closed"))
        self._changed.set()

    async def _on_frame(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        request_id = frame.get("id")
        answers = ("ack", "ok", "error", "pong", "presence", "sync_done", "forwarded")
        if request_id and kind in answers:
            waiter = self._waiters.get(request_id)
            if waiter is not None and not waiter.done():
                waiter.set_result(frame)
                return
        self.frames.append(frame)
        if kind == "message" or kind == "sync_page":
            for message in frame["messages"] if kind == "sync_page" else [frame]:
                await self._on_message(message)
        elif kind == "sync_chats":
            for chat in frame["chats"]:
                state = self.chats[chat["chat_id"]]
                for member in chat["members"]:
                    state.cursors[member["user_id"]] = {
                        "delivered": member["delivered_up_to"],
                        "read": member["read_up_to"],
                    }
        elif kind == "receipt":
            cursor = self.chats[frame["chat_id"]].cursors.setdefault(
                frame["user_id"], {"delivered": 0, "read": 0}
            )
            cursor["delivered"] = max(cursor.get("delivered") or 0, frame["delivered_up_to"])
            if frame.get("read_up_to") is not None:
                cursor["read"] = max(cursor.get("read") or 0, frame["read_up_to"])
        elif kind == "typing":
            who = self.typists[frame["chat_id"]]
            (who.add if frame["state"] == "start" else who.discard)(frame["user_id"])

    async def _on_message(self, message: dict[str, Any], own: bool = False) -> None:
        """Hold a message (pushed, synced, or `own`: our send, from its ack)."""
        chat_id, seq = message["chat_id"], int(message["seq"])
        state = self.chats[chat_id]
        if seq in state.messages:
            return  # already held: a push and a sync page may both bring it
        state.messages[seq] = message
        before = state.contiguous
        while state.contiguous + 1 in state.messages:
            state.contiguous += 1
        gap = seq > state.contiguous + 1 and self._ws is not None
        if gap and not own and chat_id not in self._gaps:
            # A gap below a pushed message: a push was lost (they come in seq order), or
            # it is one of our own sends whose ack is still on its way; look again
            # shortly, and ask if it stays. (Our own acked send above messages not yet
            # pushed to us is no gap: those are on their way.)
            self._gaps.add(chat_id)
            asyncio.get_running_loop().create_task(self._gap(chat_id))
        covered = range(before + 1, state.contiguous + 1)
        if self.auto_delivered and any(
            state.messages[s]["sender"] != self.user_id for s in covered
        ):
            await self._ws_send(
                {"type": "delivered", "chat_id": chat_id, "up_to": state.contiguous}
            )

    async def _gap(self, chat_id: str) -> None:
        state = self.chats[chat_id]
        try:
            deadline = time.monotonic() + self.timeout_s
            await asyncio.sleep(GAP_GRACE_S)
            while self._unacked and time.monotonic() < deadline:
                await asyncio.sleep(GAP_GRACE_S)  # our own sends' acks fill gaps too
            if max(state.messages, default=0) > state.contiguous:
                with contextlib.suppress(Exception):
                    await self.sync(only=chat_id)
        finally:
            self._gaps.discard(chat_id)
