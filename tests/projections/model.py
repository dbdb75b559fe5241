"""Shared helpers: make real events with the domain, and read the PG read model back."""

from __future__ import annotations

import base64
import itertools
from collections.abc import Callable, Iterable
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql

from domain.chat import Chat
from infra.log_envelope import Envelope, decode_envelope, encode_event
from projections.fold import ChatRow, MemberRow, MessageRow, ReadModel, ReceiptRow
from projections.projector import Record

_positions = itertools.count(1)


def envelopes(events: Iterable[Any]) -> list[Envelope]:
    """Envelopes exactly as the relay would publish these domain events."""
    return [decode_envelope(encode_event(e, next(_positions))[1]) for e in events]


def records(envs: Iterable[Envelope], partitions: int = 3) -> list[Record]:
    """Records on `partitions` partitions, keyed by chat as Kafka would place them."""
    offsets = [0] * partitions
    out = []
    for e in envs:
        partition = e.chat_id.int % partitions
        out.append(Record(partition, offsets[partition], e))
        offsets[partition] += 1
    return out


def delivered_at_least_once(
    envs: list[Envelope], draw: Callable[[Any], Any], max_batch: int
) -> list[list[Record]]:
    """`envs` as an at-least-once consumer may get them, with `draw` (a hypothesis
    `data.draw`) choosing the faults: sometimes a tail published again under new offsets
    (a relay crash), cut into batches of 1..`max_batch`, some delivered twice with a
    few records before them (a worker crash)."""
    from hypothesis import strategies as st

    recs = records(envs)
    if recs and draw(st.booleans()):
        tail = envs[draw(st.integers(0, len(envs) - 1)) :]
        recs = records(envs + tail)
    batches: list[list[Record]] = []
    i = 0
    while i < len(recs):
        size = draw(st.integers(1, max_batch))
        batches.append(recs[i : i + size])
        if draw(st.integers(0, 4)) == 0:
            batches.append(recs[max(0, i - 3) : i + size])
        i += size
    return batches


def read_back(conninfo: str, schema: str) -> ReadModel:
    """The PostgreSQL read model in the fold's shape, for comparison."""
    model = ReadModel()
    s = sql.Identifier(schema)

    def rows(query: str) -> list[tuple[Any, ...]]:
        return conn.execute(sql.SQL(query).format(s=s)).fetchall()

    with psycopg.connect(conninfo) as conn:
        for r in rows(
            "SELECT chat_id, kind, name, created_by, created_at, last_seq, "
            "last_message_id, last_sender, last_activity_at, last_message_seq FROM {s}.chats"
        ):
            model.chats[r[0]] = ChatRow(*r[1:])
        for r in rows(
            "SELECT chat_id, user_id, role, active, joined_at, delivered_up_to, "
            "read_up_to FROM {s}.members"
        ):
            model.members[(r[0], r[1])] = MemberRow(*r[2:])
        for r in rows(
            "SELECT chat_id, user_id, joined_after_seq, left_at_seq, left_at_message_seq "
            "FROM {s}.membership_history"
        ):
            model.history[(r[0], r[1], r[2])] = r[3]
            model.left_messages[(r[0], r[1], r[2])] = r[4]
        for r in rows(
            "SELECT chat_id, seq, message_id, sender, device_id, local_id, kind, "
            "body, media, sent_at, ref, quote, edited_at, deleted_at, expires_at, forwarded "
            "FROM {s}.messages"
        ):
            model.messages[(r[0], r[1])] = MessageRow(
                r[2], r[3], r[4], r[5], r[6], base64.b64encode(r[7]).decode(), *r[8:]
            )
        for r in rows("SELECT chat_id, seq, user_id, emoji, reacted_at FROM {s}.reactions"):
            model.reactions[(r[0], r[1], r[2])] = (r[3], r[4])
        for r in rows("SELECT chat_id, seq, edit_seq, body, written_at FROM {s}.message_versions"):
            model.versions[(r[0], r[1], r[2])] = (base64.b64encode(r[3]).decode(), r[4])
        for r in rows(
            "SELECT chat_id, seq, recipient, status, delivered_at, read_at FROM {s}.receipts"
        ):
            model.receipts[(r[0], r[1], r[2])] = ReceiptRow(r[3], r[4], r[5])
        for r in rows("SELECT chat_id, seq, recipients, delivered, read FROM {s}.receipt_counts"):
            model.counts[(r[0], r[1])] = [r[2], r[3], r[4]]
        for r in rows("SELECT recipient, chat_id, seq, message_id, created_at FROM {s}.inbox"):
            model.inbox[(r[0], r[1], r[2])] = (r[3], r[4])
        for r in rows("SELECT user_id, chat_id, count FROM {s}.unread"):
            model.unread[(r[0], r[1])] = r[2]
    return model


def comparable(model: ReadModel) -> dict[str, Any]:
    """The model without bookkeeping; unread rows at zero equal absent ones."""
    return {
        "chats": model.chats,
        "members": model.members,
        "history": model.history,
        "left_messages": model.left_messages,
        "messages": model.messages,
        "reactions": model.reactions,
        "versions": model.versions,
        "receipts": model.receipts,
        "counts": model.counts,
        "inbox": model.inbox,
        "unread": {k: v for k, v in model.unread.items() if v},
    }


def chat_events(chat: Chat) -> list[Any]:
    return list(chat.collect_events())


def user(n: int) -> UUID:
    return UUID(int=n + 1)
