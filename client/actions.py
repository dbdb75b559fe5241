"""What a client shows of a message once members acted on it (docs/protocol.md).

A chat's messages are held by seq, actions among them (`reaction`, `edit`, `delete`,
each naming its message in `ref`). `shown` folds them, in seq order, into what a user
sees: the latest text, the edited and deleted marks, one reaction per member, and a
disappearing message gone once its `expires_at` has passed. `timer` messages set the
chat's disappearing-messages timer (their body: the seconds, 0 for off).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

ACTION_KINDS = frozenset({"reaction", "edit", "delete"})
NOTICE_KINDS = frozenset({*ACTION_KINDS, "timer"})


@dataclass
class Shown:
    """One message as a user sees it."""

    seq: int
    sender: str | None
    kind: str | None
    text: str
    quote: dict[str, Any] | None = None
    edited: bool = False
    deleted: bool = False
    reactions: dict[str, str] = field(default_factory=dict)  # member -> emoji
    forwarded: int = 0  # hops: "Forwarded", and "Forwarded many times" from 5


def _text(message: Mapping[str, Any]) -> str:
    body = message.get("body")
    return "" if not body else base64.b64decode(body).decode("utf-8", "replace")


def timer_of(messages: Mapping[int, Mapping[str, Any]]) -> int:
    """The disappearing-messages timer the latest `timer` message set (0: off)."""
    timers = [seq for seq, m in messages.items() if m.get("kind") == "timer"]
    return int(_text(messages[max(timers)]) or 0) if timers else 0


def _expired(message: Mapping[str, Any], now: datetime) -> bool:
    ends = message.get("expires_at")
    return ends is not None and datetime.fromisoformat(ends) <= now


def shown(
    messages: Mapping[int, Mapping[str, Any]], now: datetime | None = None
) -> dict[int, Shown]:
    """The content messages of a chat (actions applied, hidden ones left out), by seq."""
    now = now or datetime.now(UTC)
    out: dict[int, Shown] = {}
    for seq in sorted(messages):
        message = messages[seq]
        if message.get("hidden") or message.get("kind") == "timer":
            continue
        kind, ref = message.get("kind"), message.get("ref")
        if _expired(message, now):
            out[seq] = Shown(seq, message.get("sender"), kind, "", None, False, True)
            continue
        if kind not in ACTION_KINDS:
            quote = message.get("quote")
            if quote is None and isinstance(ref, int) and ref in out:  # our own, from its ack
                quoted = out[ref]
                quote = {"seq": ref, "sender": quoted.sender, "kind": quoted.kind}
                quote.update({"deleted": True} if quoted.deleted else {"excerpt": quoted.text})
            out[seq] = Shown(
                seq,
                message.get("sender"),
                kind,
                _text(message),
                quote,
                bool(message.get("edited")),
                bool(message.get("deleted")),
                forwarded=int(message.get("forwarded") or 0),
            )
            continue
        target = out.get(ref) if isinstance(ref, int) else None
        if target is None:
            continue
        if kind == "delete":
            target.deleted, target.text, target.reactions = True, "", {}
            for other in out.values():
                if other.quote is not None and other.quote.get("seq") == ref:
                    other.quote = {"seq": ref, "deleted": True}
        elif target.deleted:
            continue
        elif kind == "edit":
            if message.get("body"):  # a synced earlier edit has none: the message has the text
                target.text, target.edited = _text(message), True
        elif message.get("sender") is not None:
            emoji = _text(message)
            if emoji:
                target.reactions[str(message["sender"])] = emoji
            else:
                target.reactions.pop(str(message["sender"]), None)
    return out
