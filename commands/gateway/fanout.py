"""Fan-out: what the workers and the accounts route to this gateway, pushed to its sockets.

The gateway's Redis channel `parley:deliver:<id>` carries batches of frames (messages,
receipts, chat changes, typing), each with the users it is for and, for a sender's own
message, the device not to echo it to; the logout pattern `parley:logout:*` closes the
connections of the sessions it names. A malformed delivery is logged and dropped: a
dropped push is recovered by the client's seq gap check and sync.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any
from uuid import UUID

import orjson

from commands.gateway.connection import Connection
from commands.gateway.metrics import DELIVERIES
from commands.gateway.protocol import dump
from commands.gateway.typing_indicator import Typing
from domain.ids import uuid_of
from projections.message_view import device_view

log = logging.getLogger("parley.gateway")


class FanOut:
    """Pushes routed frames to the connections of one gateway (`by_user` is its map)."""

    def __init__(self, by_user: dict[UUID, set[Connection]], typing: Typing) -> None:
        self.by_user = by_user
        self.typing = typing

    def routed(self, message: dict[str, Any]) -> None:
        if message.get("type") == "pmessage":
            self.logout(message["data"])
        else:
            self.deliver(message["data"])

    def deliver(self, raw: bytes) -> None:
        try:
            data = orjson.loads(raw)
            items = data["items"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("event=bad_delivery")
            return
        trail = log.isEnabledFor(logging.DEBUG)  # PARLEY_LOG_LEVEL=debug
        for item in items:
            frame = item["frame"]
            kind = frame.get("type")
            DELIVERIES.inc(str(kind))
            if kind == "chat":  # membership may have changed: read it again
                with contextlib.suppress(KeyError, ValueError, TypeError):
                    self.typing.forget(UUID(frame["chat_id"]))
            text = dump(frame)
            # An encrypted message with per-device envelopes: each device gets its own.
            per_device = kind == "message" and frame.get("kind") == "ciphertext"
            if trail and kind == "message":
                log.debug(
                    "event=message_pushed chat=%s seq=%s message=%s local_id=%s users=%d",
                    frame.get("chat_id"),
                    frame.get("seq"),
                    frame.get("message_id"),
                    frame.get("local_id"),
                    len(item["users"]),
                )
            skip_user, skip_device = item.get("except") or (None, None)
            # A receipt about the reader goes to the reader's other devices, not to the
            # one whose acknowledgement it is.
            reader = frame.get("user_id") if kind == "receipt" else None
            for user in item["users"]:
                for connection in list(self.by_user.get(uuid_of(user), ())):
                    if user == skip_user and connection.identity.device_id == skip_device:
                        continue
                    if user == reader and connection.knows(frame):
                        continue
                    if per_device:
                        device = connection.identity.device_id
                        connection.push(dump(device_view(frame, user, device)))
                    else:
                        connection.push(text)

    def logout(self, raw: bytes) -> None:
        try:
            data = orjson.loads(raw)
            user = UUID(data["user_id"])
            sessions = set(data.get("session_ids") or [])
        except (orjson.JSONDecodeError, KeyError, ValueError, TypeError):
            return
        for connection in list(self.by_user.get(user, ())):
            if not sessions or connection.identity.session_id in sessions:
                log.info("event=logout_closed connection=%s", connection.id)
                connection.push({"type": "logged_out", "reason": data.get("reason", "logout")})
                connection.close(4001)
