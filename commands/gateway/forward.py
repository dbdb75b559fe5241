"""The `forward` frame: a copy of a message the user sees, sent to a few of their chats.

The gateway reads the message from the read model as the user sees it (a member when it
was sent, not deleted, not expired, its sender not blocked by them), then sends, for each
chat named, a `send` command carrying the same kind, body and media reference (no
re-upload: the object is shared, and its retention counts from this send: it moves the
upload's `sent_at`, or answers `media_expired` if the sweep took it) with `forwarded`
one more than the original's, so a client shows "Forwarded", and "Forwarded many times"
from `MANY_TIMES` hops. Each copy's
`local_id` is the frame's and the chat's, so a resent `forward` stores nothing twice.
The answer is one `forwarded` frame with each chat's outcome, as `ack`s and `error`s
would have said.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from commands.command import Command, CommandType
from commands.gateway.bus import CommandBus
from commands.gateway.connection import Connection
from commands.gateway.protocol import ClientFrame, ProtocolError, error_frame
from commands.media.uploads import forwarded_media
from domain.errors import DomainError, UnknownMessage
from projections.directory import DIRECTORY_SCHEMA
from projections.schema import LIVE_SCHEMA

MANY_TIMES = 5
"""From this many hops a copy is "forwarded many times", as WhatsApp shows it."""

_SOURCE = sql.SQL(
    "SELECT m.kind, m.body, m.media, m.forwarded FROM {s}.messages m "
    "WHERE m.chat_id = %(chat)s AND m.seq = %(seq)s AND m.deleted_at IS NULL "
    "AND (m.expires_at IS NULL OR m.expires_at > now()) "
    "AND m.kind IN ('text', 'media') "
    "AND m.sender <> ALL(coalesce((SELECT b.blocks FROM {d}.users b "
    "  WHERE b.user_id = %(user)s), '{{}}'::uuid[])) "
    "AND EXISTS (SELECT 1 FROM {s}.membership_history h WHERE h.chat_id = m.chat_id "
    "  AND h.user_id = %(user)s AND m.seq > h.joined_after_seq "
    "  AND (h.left_at_seq IS NULL OR m.seq <= h.left_at_seq))"
).format(s=sql.Identifier(LIVE_SCHEMA), d=sql.Identifier(DIRECTORY_SCHEMA))


@dataclass(frozen=True)
class Forward:
    """A checked `forward` frame: the message (chat, seq) and the chats to copy it to."""

    source: UUID
    seq: int
    local_id: str
    targets: list[UUID]


def parse_forward(frame: ClientFrame, max_chats: int) -> Forward:
    """The `forward` a frame asks for: 1..`max_chats` distinct chats; `ProtocolError` else."""
    source, seq = frame.uuid("chat_id"), frame.integer("seq", low=1)
    local_id = frame.text("local_id", 64)
    assert source is not None
    raw = frame.fields.get("to_chats")
    if not isinstance(raw, list) or not raw:
        raise ProtocolError("bad_frame", "`to_chats` must list chat ids", frame.request_id)
    if len(raw) > max_chats:
        raise ProtocolError(
            "too_many_chats",
            f"a message is forwarded to at most {max_chats} chats at once",
            frame.request_id,
        )
    try:
        chats = [UUID(str(chat)) for chat in raw]
    except ValueError:
        raise ProtocolError(
            "bad_frame", "`to_chats` must list chat ids", frame.request_id
        ) from None
    if len(set(chats)) != len(chats):
        raise ProtocolError("bad_frame", "`to_chats` names a chat twice", frame.request_id)
    return Forward(source, seq, local_id, chats)


async def forward(
    connection: Connection,
    request: Forward,
    request_id: str,
    pool: AsyncConnectionPool,
    bus: CommandBus,
    reply_to: str,
) -> None:
    """Send the copies and answer `forwarded` (or one `error` if there is nothing to send)."""
    try:
        async with pool.connection() as conn:
            cur = await conn.execute(
                _SOURCE, {"chat": request.source, "seq": request.seq, "user": connection.user_id}
            )
            row = await cur.fetchone()
            if row is None:
                raise UnknownMessage("no message with this seq that you can forward")
            if row[2] is not None:  # its retention counts from this send (docs/media.md)
                await forwarded_media(conn, row[2])
    except DomainError as exc:
        connection.push(error_frame(exc.code, exc.message, request_id))
        return
    kind, body, media, hops = row
    results: list[dict[str, Any]] = []
    for target in request.targets:
        args: dict[str, Any] = {
            "local_id": f"{request.local_id}:{target}",
            "kind": kind,
            "body": base64.b64encode(body).decode("ascii"),
            "forwarded": hops + 1,
        }
        if media is not None:
            args["media"] = media
        command = Command(
            CommandType.SEND,
            target,
            connection.user_id,
            args,
            device_id=connection.identity.device_id,
            reply_to=reply_to,
            request_id=request_id,
        )
        await connection.admit_command()
        try:
            outcome = await bus.enqueue(command)
        except Exception as exc:  # a timeout, or Kafka away: this chat's copy is unknown
            code = "timeout" if isinstance(exc, TimeoutError) else "unavailable"
            results.append({"chat_id": str(target), "error": {"code": code, "message": code}})
            continue
        finally:
            connection.command_done()
        if outcome.ok:
            results.append({"chat_id": str(target), "position": outcome.position, **outcome.result})
        else:
            error = {"code": outcome.error_code, "message": outcome.error_message}
            results.append({"chat_id": str(target), "error": error})
    connection.push(
        {"type": "forwarded", "id": request_id, "forwarded": hops + 1, "results": results}
    )
