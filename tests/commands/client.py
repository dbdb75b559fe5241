"""Helpers for the write-path tests: build commands and read the store back."""

from __future__ import annotations

import base64
import uuid
from uuid import UUID

from commands.command import Command, CommandType
from domain.chat import Chat
from infra.event_store import ChatStore, open_store
from infra.settings import Settings
from projections.directory import enrol_stand_ins


def send(
    chat_id: UUID,
    actor: UUID,
    local_id: str,
    text: str,
    reply_to: str,
    device_id: str = "d1",
    to: UUID | None = None,
) -> Command:
    args: dict[str, object] = {
        "local_id": local_id,
        "kind": "text",
        "body": base64.b64encode(text.encode()).decode(),
    }
    if to is not None:
        args["to"] = str(to)
    return Command(
        CommandType.SEND,
        chat_id,
        actor,
        args,
        device_id=device_id,
        reply_to=reply_to,
        request_id=local_id,
    )


def create_group(chat_id: UUID, actor: UUID, members: list[UUID], reply_to: str) -> Command:
    return Command(
        CommandType.CREATE_GROUP,
        chat_id,
        actor,
        {"name": "group", "members": [str(m) for m in members]},
        reply_to=reply_to,
    )


def fresh_store(settings: Settings) -> ChatStore:
    """A store with no cache: what is really in PostgreSQL."""
    return open_store(settings, AGGREGATE_CACHE_MAXSIZE="")


def sent_events(store: ChatStore, chat_id: UUID) -> list[Chat.MessageSent]:
    return [e for e in store.events.get(chat_id) if isinstance(e, Chat.MessageSent)]


def new_users(settings: Settings, n: int) -> list[UUID]:
    """`n` users the processor knows to exist (directory rows, without accounts)."""
    users = [uuid.uuid4() for _ in range(n)]
    enrol(settings, users)
    return users


def enrol(settings: Settings, users: list[UUID]) -> None:
    """Make `users` known to the processor as existing users (`record_stand_ins`)."""
    enrol_stand_ins(settings.pg_conninfo, users)
