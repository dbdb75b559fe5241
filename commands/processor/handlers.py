"""One handler per command: load the chat, decide with the domain, leave events pending.

Handlers never save: the processor saves every chat a batch touched in one transaction.
The acting user is `command.actor`, set by the authenticated gateway. Every rejection is
a `DomainError` (or `BadCommand`) with a stable code.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from uuid import UUID

from commands.command import BadCommand, Command, CommandType, decode_body
from commands.processor.people import People
from domain.account_errors import UnknownUser
from domain.chat import (
    DELETE_WINDOW_MS,
    DISAPPEARING_TIMERS_S,
    EDIT_WINDOW_MS,
    Chat,
    SendResult,
)
from domain.errors import UnknownChat
from domain.ids import direct_chat_id, uuid_of
from domain.messages import ACTION_KINDS, MediaRef, MessageKind
from infra.settings import Settings

Result = dict[str, Any]


class Chats(Protocol):
    """The chats a batch works on: loaded (cached) from the store, or new in this batch."""

    def get(self, chat_id: UUID) -> Chat | None: ...

    def add(self, chat: Chat) -> None: ...


class IdGenerator(Protocol):
    def next_id(self) -> int: ...


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int
    max_group_members: int
    edit_window_ms: int = EDIT_WINDOW_MS
    delete_window_ms: int = DELETE_WINDOW_MS
    disappearing_timers_s: tuple[int, ...] = DISAPPEARING_TIMERS_S

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        timers = settings.disappearing_timers_s.split(",")
        return cls(
            settings.max_body_bytes,
            settings.max_group_members,
            int(settings.edit_window_s * 1000),
            int(settings.delete_window_s * 1000),
            tuple(int(timer) for timer in timers if timer.strip()),
        )


@dataclass
class Context:
    chats: Chats
    ids: IdGenerator
    limits: Limits
    people: People
    clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000


def _require(ctx: Context, command: Command) -> Chat:
    """The chat the command names, if the actor is or was in it: a chat someone else's
    answers like one that does not exist (`unknown_chat`), so that it is not confirmed;
    a former member, who knows it exists, gets the chat's own `not_member`."""
    chat = ctx.chats.get(command.chat_id)
    if chat is None or command.actor not in chat.member_since:
        raise UnknownChat()
    return chat


def _uuid_arg(command: Command, name: str) -> UUID:
    value = command.args.get(name)
    try:
        return uuid_of(str(value))
    except ValueError as exc:
        raise BadCommand(f"{name} must be a user id") from exc


def _int_arg(command: Command, name: str) -> int:
    value = command.args.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadCommand(f"{name} must be an integer")
    return value


def _str_arg(command: Command, name: str) -> str:
    value = command.args.get(name)
    if not isinstance(value, str):
        raise BadCommand(f"{name} must be a string")
    return value


def _direct(ctx: Context, command: Command) -> Chat:
    """The 1:1 chat of the actor and `args.to`, opened on first use."""
    peer = _uuid_arg(command, "to")
    if direct_chat_id(command.actor, peer) != command.chat_id:
        raise BadCommand("chat_id is not the direct chat of the actor and `to`")
    chat = ctx.chats.get(command.chat_id)
    if chat is None:
        if not ctx.people.exists(peer):
            raise UnknownUser("no user with this id")
        chat = Chat.open_direct(command.actor, peer, opened_by=command.actor)
        ctx.chats.add(chat)
    return chat


def _ref_arg(command: Command) -> int | None:
    value = command.args.get("ref")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise BadCommand("ref must be a seq (an integer >= 1)")
    return value


def _forwarded_arg(command: Command) -> int:
    """How many hops a forwarded copy made (set by the gateway's `forward`, never a client)."""
    value = command.args.get("forwarded", 0)
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadCommand("forwarded must be an integer")
    return value


def send(ctx: Context, command: Command) -> Result:
    """A message, or an action on one (its kind in `ACTION_KINDS`, its `ref` the seq)."""
    chat = _direct(ctx, command) if "to" in command.args else _require(ctx, command)
    peer = chat.peer_of(command.actor)
    blocked = peer is not None and ctx.people.has_blocked(command.actor, peer)
    kind = _str_arg(command, "kind")
    ref = _ref_arg(command)
    if kind == MessageKind.TIMER:
        outcome = chat.set_timer(
            command.actor,
            command.device_id,
            _str_arg(command, "local_id"),
            _int_arg(command, "timer_s"),
            ctx.ids.next_id(),
            ctx.clock_ms(),
            ctx.limits.disappearing_timers_s,
        )
        return _sent(command, outcome)
    if kind in ACTION_KINDS:
        if ref is None:
            raise BadCommand(f"a {kind} names the seq of its message in `ref`")
        outcome = chat.act(
            sender=command.actor,
            device_id=command.device_id,
            local_id=_str_arg(command, "local_id"),
            kind=kind,
            ref=ref,
            body=decode_body(command.args.get("body", "")),
            message_id=ctx.ids.next_id(),
            sent_at_ms=ctx.clock_ms(),
            edit_window_ms=ctx.limits.edit_window_ms,
            delete_window_ms=ctx.limits.delete_window_ms,
            max_body=ctx.limits.max_body_bytes,
            sender_blocked_peer=blocked,
        )
        return _sent(command, outcome)
    media_arg = command.args.get("media")
    if media_arg is not None and not isinstance(media_arg, dict):
        raise BadCommand("media must be an object")
    try:
        media = None if media_arg is None else MediaRef.from_dict(media_arg)
    except (KeyError, TypeError, ValueError) as exc:
        raise BadCommand(f"media is not a valid media reference: {exc}") from exc
    outcome = chat.send(
        sender=command.actor,
        device_id=command.device_id,
        local_id=_str_arg(command, "local_id"),
        kind=kind,
        body=decode_body(command.args.get("body", "")),
        media=media,
        message_id=ctx.ids.next_id(),
        sent_at_ms=ctx.clock_ms(),
        max_body=ctx.limits.max_body_bytes,
        sender_blocked_peer=blocked,
        reply_to=ref,
        forwarded=_forwarded_arg(command),
    )
    return _sent(command, outcome)


def _sent(command: Command, outcome: SendResult) -> Result:
    return {
        "local_id": command.args["local_id"],
        "message_id": str(outcome.message_id),
        "seq": outcome.seq,
        "duplicate": outcome.duplicate,
    }


def mark_delivered(ctx: Context, command: Command) -> Result:
    chat = _require(ctx, command)
    up_to = _int_arg(command, "up_to")
    chat.mark_delivered(command.actor, up_to)
    return {"delivered_up_to": chat.delivered_up_to.get(command.actor, 0)}


def mark_read(ctx: Context, command: Command) -> Result:
    chat = _require(ctx, command)
    up_to = _int_arg(command, "up_to")
    chat.mark_read(command.actor, up_to)
    return {"read_up_to": chat.read_up_to.get(command.actor, 0)}


def open_direct(ctx: Context, command: Command) -> Result:
    chat = _direct(ctx, command)
    return {"chat_id": str(chat.id), "last_seq": chat.last_seq}


def create_group(ctx: Context, command: Command) -> Result:
    existing = ctx.chats.get(command.chat_id)
    if existing is not None:
        # A redelivered create: the same group, if it is the actor's.
        if command.actor not in existing.member_since:
            raise UnknownChat()
        return {"chat_id": str(existing.id), "created": False}
    members = command.args.get("members", [])
    if not isinstance(members, list):
        raise BadCommand("members must be a list of user ids")
    try:
        member_ids = [UUID(str(m)) for m in members]
    except ValueError as exc:
        raise BadCommand("members must be a list of user ids") from exc
    chat = Chat.create_group(
        command.chat_id,
        _str_arg(command, "name"),
        command.actor,
        member_ids,
        max_members=ctx.limits.max_group_members,
    )
    ctx.chats.add(chat)
    return {"chat_id": str(chat.id), "created": True}


def rename_group(ctx: Context, command: Command) -> Result:
    chat = _require(ctx, command)
    return {"changed": chat.rename(_str_arg(command, "name"), by=command.actor)}


def add_member(ctx: Context, command: Command) -> Result:
    chat = _require(ctx, command)
    changed = chat.add_member(
        _uuid_arg(command, "user_id"), by=command.actor, max_members=ctx.limits.max_group_members
    )
    return {"changed": changed}


def remove_member(ctx: Context, command: Command) -> Result:
    chat = _require(ctx, command)
    return {"changed": chat.remove_member(_uuid_arg(command, "user_id"), by=command.actor)}


def leave_group(ctx: Context, command: Command) -> Result:
    chat = _require(ctx, command)
    return {"changed": chat.leave(command.actor)}


def promote_admin(ctx: Context, command: Command) -> Result:
    chat = _require(ctx, command)
    return {"changed": chat.promote(_uuid_arg(command, "user_id"), by=command.actor)}


def demote_admin(ctx: Context, command: Command) -> Result:
    chat = _require(ctx, command)
    return {"changed": chat.demote(_uuid_arg(command, "user_id"), by=command.actor)}


HANDLERS: dict[CommandType, Callable[[Context, Command], Result]] = {
    CommandType.SEND: send,
    CommandType.MARK_DELIVERED: mark_delivered,
    CommandType.MARK_READ: mark_read,
    CommandType.OPEN_DIRECT: open_direct,
    CommandType.CREATE_GROUP: create_group,
    CommandType.RENAME_GROUP: rename_group,
    CommandType.ADD_MEMBER: add_member,
    CommandType.REMOVE_MEMBER: remove_member,
    CommandType.LEAVE_GROUP: leave_group,
    CommandType.PROMOTE_ADMIN: promote_admin,
    CommandType.DEMOTE_ADMIN: demote_admin,
}
