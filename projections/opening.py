"""Records read from `parley.events` with their sealed content opened (`infra.body_seal`).

The relay publishes message content sealed, each part naming its key; a consumer that
needs the plaintext (the workers, a replay) opens a batch with one key lookup. A part
whose key is erased (the message was deleted for everyone, or disappeared) opens as a
tombstone, so a replay after an erasure projects what the live workers did.

The live workers also erase the keys of every message a delete in the batch names, in
the same round trip: the processor erases them when it stores the delete, and this is
what makes the erasure certain if it died in between.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection

from infra.body_seal import envelope_key_ids, open_envelope
from infra.message_keys import Message, MessageKeys, get_erasing
from projections.projector import Record


def deleted(records: Sequence[Record]) -> list[Message]:
    """(chat, seq) of each message a delete of the batch names."""
    return [
        (r.envelope.chat_id, int(r.envelope.payload["ref"]))
        for r in records
        if r.envelope.type == "MessageSent"
        and r.envelope.payload.get("kind") == "delete"
        and r.envelope.payload.get("ref") is not None
    ]


def opened(records: Sequence[Record], keys: Mapping[UUID, bytes]) -> list[Record]:
    """The records with every sealed message opened with `keys`."""
    return [replace(r, envelope=open_envelope(r.envelope, keys)) for r in records]


def open_with(keys: MessageKeys, records: Sequence[Record]) -> list[Record]:
    """A replay's batch, opened (one lookup)."""
    wanted = envelope_key_ids(r.envelope for r in records)
    return opened(records, keys.get(wanted)) if wanted else list(records)


async def open_live(conn: AsyncConnection[Any], records: Sequence[Record]) -> list[Record]:
    """A live batch, opened, with the keys of the messages its deletes name erased: one
    round trip, none for a batch with neither."""
    wanted = envelope_key_ids(r.envelope for r in records)
    erased = deleted(records)
    if not wanted and not erased:
        return list(records)
    return opened(records, await get_erasing(conn, wanted, erased))
