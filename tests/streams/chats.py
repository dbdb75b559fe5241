"""Chats written straight to the event store, in group commits, for the relay tests."""

from __future__ import annotations

import itertools
import random
import threading
import time
import uuid
from uuid import UUID

from domain.chat import Chat
from infra.event_store import ChatStore


class ChatWriter:
    """Direct chats and groups that receive messages, receipts and group changes."""

    def __init__(self, store: ChatStore, seed: int = 4) -> None:
        self.store = store
        self.chats: dict[UUID, Chat] = {}
        self.written = 0
        self._random = random.Random(seed)
        self._message_ids = itertools.count(1 << 40)

    def open(self, directs: int, groups: int) -> None:
        """Create the chats (one event each, or two for a group's first member added)."""
        new: list[Chat] = []
        for _ in range(directs):
            a, b = uuid.uuid4(), uuid.uuid4()
            new.append(Chat.open_direct(a, b, opened_by=a))
        for n in range(groups):
            admin, *others = (uuid.uuid4() for _ in range(4))
            group = Chat.create_group(uuid.uuid4(), f"group {n}", admin, others)
            group.add_member(uuid.uuid4(), by=admin)
            new.append(group)
        self._save(new)
        self.chats.update((chat.id, chat) for chat in new)

    def round(self) -> int:
        """One new event in every chat, all saved in one transaction; returns the count."""
        chats = list(self.chats.values())
        for chat in chats:
            self._act(chat)
        return self._save(chats)

    def write(self, events: int) -> None:
        """At least `events` more events, in rounds."""
        target = self.written + events
        while self.written < target:
            self.round()

    def _act(self, chat: Chat) -> None:
        members = list(chat.members)
        user = self._random.choice(members)
        roll = self._random.random()
        if roll < 0.15 and chat.last_seq > 0 and chat.mark_read(user, chat.last_seq):
            return
        if roll < 0.2 and chat.admins:
            admin = next(iter(chat.admins))
            if chat.rename(f"renamed {self._random.randrange(1_000_000)}", by=admin):
                return
        message_id = next(self._message_ids)
        chat.send(user, "d1", f"l{message_id}", "text", b"hello", None, message_id, 1)

    def _save(self, chats: list[Chat]) -> int:
        pending = sum(len(chat.pending_events) for chat in chats)
        self.store.save(*chats)
        self.written += pending
        return pending


class BackgroundWriter:
    """Keeps writing rounds from a thread until stopped; `pause_s` between rounds."""

    def __init__(self, writer: ChatWriter, pause_s: float = 0.01) -> None:
        self.writer = writer
        self.pause_s = pause_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chat-writer", daemon=True)
        self.error: BaseException | None = None

    def __enter__(self) -> BackgroundWriter:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        if self.error is not None:
            raise self.error

    def wait_written(self, events: int, deadline_s: float = 30.0) -> None:
        """Until the writer has written at least `events` in total."""
        deadline = time.monotonic() + deadline_s
        while self.writer.written < events:
            if self.error is not None:
                raise self.error
            if time.monotonic() > deadline:
                raise AssertionError(f"the writer wrote {self.writer.written} < {events}")
            time.sleep(0.01)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.writer.round()
                self._stop.wait(self.pause_s)
        except BaseException as exc:
            self.error = exc
