"""A message as every reader sees it: one shape, built here only.

The query API's message, the recent cache's JSON (`projections.cache`) and, with
`message_frame`, the WebSocket `message` frame (sync, live delivery) are the same
fields: chat, seq, message id, sender, kind, body (base64), media, sent_at, and what
members did with it: `ref` (the seq a reply answers or an action acts on), `quote` (a
reply's), `edited` and `deleted` (a tombstone: no body, no media), and `expires_at` (a
disappearing message's end: from then on it is shown as a tombstone, `as_of`), and
`forwarded` (how many hops a forwarded copy made; 0 for a message written here). A message
whose sender its reader blocked keeps its seq, id and time and nothing else
(`hidden_view`, `hidden_frame`). Callers give the body as base64 text and the time as ISO 8601 text,
each as their source holds them.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson

from domain.ids import text_of
from infra.timestamps import utc_iso


def message_view(
    chat_id: object,
    seq: int,
    message_id: object,
    sender: object,
    kind: str,
    body: str,
    media: Any,
    sent_at: str,
    ref: int | None = None,
    quote: Any = None,
    edited: bool = False,
    deleted: bool = False,
    expires_at: str | None = None,
    forwarded: int = 0,
) -> dict[str, Any]:
    """The message: what the query API answers and the recent cache holds."""
    return {
        "chat_id": text_of(chat_id),
        "seq": seq,
        "message_id": str(message_id),
        "sender": text_of(sender),
        "kind": kind,
        "body": body,
        "media": media,
        "sent_at": sent_at,
        "ref": ref,
        "quote": quote,
        "edited": edited,
        "deleted": deleted,
        "expires_at": expires_at,
        "forwarded": forwarded,
    }


MESSAGE_COLUMNS = (
    "seq",
    "message_id",
    "sender",
    "kind",
    "body",
    "media",
    "sent_at",
    "ref",
    "quote",
    "edited_at",
    "deleted_at",
    "expires_at",
    "forwarded",
)
"""The `messages` columns `view_of_row` reads, in its order."""


def message_columns(alias: str = "") -> str:
    """`MESSAGE_COLUMNS` for a SELECT list, each prefixed with `alias.` if given."""
    prefix = f"{alias}." if alias else ""
    return ", ".join(prefix + column for column in MESSAGE_COLUMNS)


def view_of_row(chat_id: object, row: Sequence[Any]) -> dict[str, Any]:
    """The message of a `messages` row read as `MESSAGE_COLUMNS` (the sync, the history,
    the inbox)."""
    seq, message_id, sender, kind, body, media, sent_at, ref, quote = row[:9]
    edited_at, deleted_at, expires_at, forwarded = row[9:13]
    return message_view(
        chat_id,
        seq,
        message_id,
        sender,
        kind,
        base64.b64encode(body).decode("ascii"),
        media,
        utc_iso(sent_at),
        ref=ref,
        quote=quote,
        edited=edited_at is not None,
        deleted=deleted_at is not None,
        expires_at=None if expires_at is None else utc_iso(expires_at),
        forwarded=forwarded,
    )


def as_of(view: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The view as it is shown at `now`: a disappearing message whose time is up is a
    tombstone, even before the expiry job has erased its row (projections/expiry.py)."""
    ends = view.get("expires_at")
    if ends is None or view.get("deleted") or datetime.fromisoformat(ends) > now:
        return view
    return {**view, "body": "", "media": None, "quote": None, "edited": False, "deleted": True}


def message_frame(view: dict[str, Any], local_id: str | None) -> dict[str, Any]:
    """The WebSocket `message` frame of a message view, with the sender's local id."""
    return {"type": "message", **view, "local_id": local_id}


def hidden_view(chat_id: object, seq: int, message_id: object, sent_at: str) -> dict[str, Any]:
    """A message from a user its reader blocked: the seq is theirs to hold (seqs are
    gapless), the id and time too; the sender and the content are not."""
    return {
        "chat_id": str(chat_id),
        "seq": seq,
        "message_id": str(message_id),
        "hidden": True,
        "sender": None,
        "kind": None,
        "body": None,
        "media": None,
        "sent_at": sent_at,
        "ref": None,
        "quote": None,
        "edited": False,
        "deleted": False,
        "expires_at": None,
        "forwarded": 0,
    }


def hidden_frame(chat_id: object, seq: int, message_id: object, sent_at: str) -> dict[str, Any]:
    """The `message` frame of a hidden message (`hidden_view`)."""
    return message_frame(hidden_view(chat_id, seq, message_id, sent_at), None)


ENVELOPES_PREFIX = b"\x00parley-envelopes-v1\n"
"""The start of a stored body that holds per-device envelopes (docs/e2e.md): the
gateway writes `ENVELOPES_PREFIX + JSON {user id: {device id: base64 ciphertext}}` for
an encrypted send; each device is shown only its own envelope."""


def envelopes_body(envelopes: dict[str, dict[str, str]]) -> bytes:
    """The stored body of an encrypted send with these per-device envelopes."""
    return ENVELOPES_PREFIX + orjson.dumps(envelopes)


def device_view(view: dict[str, Any], user_id: str, device_id: str) -> dict[str, Any]:
    """The message (view or frame) as one device sees it: for a body of per-device
    envelopes, that device's envelope as the body (None when there is none for it, as
    for the device that sent it); any other message unchanged."""
    if view.get("kind") != "ciphertext" or not isinstance(view.get("body"), str):
        return view
    try:
        body = base64.b64decode(view["body"])
    except ValueError:
        return view
    if not body.startswith(ENVELOPES_PREFIX):
        return view
    try:
        envelopes = orjson.loads(body[len(ENVELOPES_PREFIX) :])
        mine = envelopes.get(user_id, {}).get(device_id)
    except (orjson.JSONDecodeError, AttributeError):
        mine = None
    return {**view, "body": mine if isinstance(mine, str) else None, "envelope": True}
