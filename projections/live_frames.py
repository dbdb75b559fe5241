"""The WebSocket frames of a stored event, as live delivery pushes them.

One place builds them, whoever pushes: the processor right after it committed a batch
(`commands/processor/live.py`). The message frame is the message view every reader
sees (`projections.message_view`); a receipt frame carries the reader's cursors; a chat
frame names the event and its fields. Each builder takes what both a stored domain event
and a `parley.events` envelope hold: the chat, the event's type, its fields and time.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from domain.ids import text_of
from infra.timestamps import utc_iso
from projections.message_view import hidden_frame, message_frame, message_view
from projections.projector import RECEIPT_EVENTS, expiry

__all__ = ["CHAT_EVENTS", "RECEIPT_EVENTS", "chat_frame", "message_event_frame", "receipt_frame"]

CHAT_EVENTS = frozenset(
    {
        "DirectChatOpened",
        "GroupCreated",
        "GroupRenamed",
        "MemberAdded",
        "MemberRemoved",
        "MemberLeft",
        "AdminPromoted",
        "AdminDemoted",
    }
)
"""Events that change a chat's name or members: pushed as `chat` frames."""


def message_event_frame(chat_id: object, p: Mapping[str, Any], at: datetime) -> dict[str, Any]:
    """The `message` frame of a `MessageSent` (`p` its fields; the body bytes or base64)."""
    ends = expiry(p["kind"], p.get("timer_s"), at)
    view = message_view(
        chat_id,
        p["seq"],
        p["message_id"],
        p["sender"],
        p["kind"],
        _base64(p["body"]),
        p["media"],
        utc_iso(at),
        ref=p.get("ref"),
        quote=p.get("quote"),
        expires_at=None if ends is None else utc_iso(ends),
        forwarded=p.get("forwarded", 0),
    )
    return message_frame(view, p["local_id"])


def hidden_event_frame(chat_id: object, p: Mapping[str, Any], at: datetime) -> dict[str, Any]:
    """The `message` frame of a `MessageSent` for a reader who blocked its sender."""
    return hidden_frame(chat_id, p["seq"], p["message_id"], utc_iso(at))


def receipt_frame(chat_id: object, event_type: str, p: Mapping[str, Any]) -> dict[str, Any]:
    """The `receipt` frame of a `MessagesDelivered` or `MessagesRead`."""
    return {
        "type": "receipt",
        "chat_id": text_of(chat_id),
        "user_id": text_of(p["user_id"]),
        "delivered_up_to": p["up_to"],
        "read_up_to": p["up_to"] if event_type == "MessagesRead" else None,
    }


def chat_frame(chat_id: object, event_type: str, p: Mapping[str, Any]) -> dict[str, Any]:
    """The `chat` frame of a change to a chat's name or members."""
    return {
        "type": "chat",
        "chat_id": str(chat_id),
        "event": event_type,
        **{k: _plain(v) for k, v in p.items()},
    }


def _base64(body: bytes | str) -> str:
    return base64.b64encode(body).decode("ascii") if isinstance(body, bytes) else body


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return value
