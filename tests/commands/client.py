"""Helpers for the write-path tests: build commands and read the store back."""

from __future__ import annotations

import base64
import uuid
from uuid import UUID

from commands.command import Command, CommandType, Outcome
from commands.gateway.bus import CommandBus
from domain.chat import Chat
from domain.ids import direct_chat_id
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


async def send_until_acked(
    bus: CommandBus,
    a: UUID,
    b: UUID,
    count: int,
    progress: list[int] | None = None,
    first: int = 0,
) -> list[Outcome]:
    """Send `count` texts from a to b (local ids m<first>...), each resent as a new
    command with the same local id until acked, as the protocol tells a client to."""
    chat_id = direct_chat_id(a, b)
    acked = []
    for i in range(first, first + count):
        command = send(chat_id, a, f"m{i}", f"text {i}", bus.reply_to, to=b)
        for _attempt in range(40):
            try:
                outcome = await bus.submit(command)
                break
            except TimeoutError:
                command = Command(
                    command.type,
                    command.chat_id,
                    command.actor,
                    command.args,
                    command.device_id,
                    reply_to=command.reply_to,
                )
        else:
            raise AssertionError("never acked")
        assert outcome.ok, outcome
        acked.append(outcome)
        if progress is not None:
            progress.append(1)
    return acked
