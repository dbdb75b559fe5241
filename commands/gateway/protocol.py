"""The WebSocket wire protocol: client frames parsed and checked, server frames built.

Every frame is one JSON object with a `type`. A client frame may carry an `id` (any
string up to 64 characters) that the answer to it echoes. See docs/protocol.md.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import orjson

from commands.command import CommandType
from commands.gateway.metrics import ERRORS
from domain.ids import uuid_of
from infra.json_bounds import MAX_JSON_DEPTH, JsonTooDeep, loads_bounded

MAX_ID_CHARS = 64


class ProtocolError(Exception):
    """A frame the server cannot act on; answered with an `error` frame, never fatal."""

    def __init__(self, code: str, message: str, request_id: str = "", devices: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id
        self.devices = devices
        """For `stale_devices`: each named user's current device list (docs/e2e.md)."""

    def extra(self) -> dict[str, Any]:
        """What the error frame carries besides code and message."""
        return {} if self.devices is None else {"devices": self.devices}


# Client frames that become commands, and the args each carries over.
COMMAND_FRAMES: dict[str, CommandType] = {
    "send": CommandType.SEND,
    "delivered": CommandType.MARK_DELIVERED,
    "read": CommandType.MARK_READ,
    "create_group": CommandType.CREATE_GROUP,
    "rename_group": CommandType.RENAME_GROUP,
    "add_member": CommandType.ADD_MEMBER,
    "remove_member": CommandType.REMOVE_MEMBER,
    "leave_group": CommandType.LEAVE_GROUP,
    "promote_admin": CommandType.PROMOTE_ADMIN,
    "demote_admin": CommandType.DEMOTE_ADMIN,
}
OTHER_FRAMES = frozenset({"typing", "sync", "ping", "presence", "forward"})


@dataclass(frozen=True)
class ClientFrame:
    type: str
    request_id: str
    fields: dict[str, Any] = field(default_factory=dict)

    def uuid(self, name: str, required: bool = True) -> UUID | None:
        value = self.fields.get(name)
        if value is None and not required:
            return None
        try:
            return uuid_of(str(value))
        except ValueError:
            raise ProtocolError("bad_frame", f"`{name}` must be a UUID", self.request_id) from None

    def integer(self, name: str, low: int = 0) -> int:
        value = self.fields.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ProtocolError(
                "bad_frame", f"`{name}` must be an integer >= {low}", self.request_id
            )
        return value

    def text(self, name: str, max_chars: int = 1024) -> str:
        value = self.fields.get(name)
        if not isinstance(value, str) or not value or len(value) > max_chars:
            raise ProtocolError(
                "bad_frame", f"`{name}` must be a string of 1..{max_chars}", self.request_id
            )
        return value


def parse_frame(raw: str | bytes) -> ClientFrame:
    """Read one client frame; `ProtocolError` with a stable code if it is not one."""
    try:
        data = loads_bounded(raw)
    except JsonTooDeep:
        raise ProtocolError("bad_json", f"a frame nests at most {MAX_JSON_DEPTH} levels") from None
    except ValueError:
        raise ProtocolError("bad_json", "the frame is not valid JSON (UTF-8)") from None
    if not isinstance(data, dict):
        raise ProtocolError("bad_frame", "a frame is a JSON object")
    request_id = data.get("id", "")
    if not isinstance(request_id, str) or len(request_id) > MAX_ID_CHARS:
        raise ProtocolError("bad_frame", f"`id` must be a string of at most {MAX_ID_CHARS}")
    kind = data.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("bad_frame", "`type` is missing", request_id)
    if kind not in COMMAND_FRAMES and kind not in OTHER_FRAMES:
        raise ProtocolError("unknown_type", f"unknown frame type {kind[:40]!r}", request_id)
    return ClientFrame(kind, request_id, data)


def message_body(frame: ClientFrame) -> str:
    """The body of a `send` as base64: from `text` (UTF-8) or `body` (base64)."""
    text, body = frame.fields.get("text"), frame.fields.get("body")
    if text is not None:
        if not isinstance(text, str):
            raise ProtocolError("bad_frame", "`text` must be a string", frame.request_id)
        return base64.b64encode(text.encode("utf-8", "surrogatepass")).decode("ascii")
    if body is None:
        return ""
    if not isinstance(body, str):
        raise ProtocolError("bad_frame", "`body` must be base64 text", frame.request_id)
    try:
        base64.b64decode(body.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):  # not ASCII, or not base64
        raise ProtocolError("invalid_body", "`body` is not base64", frame.request_id) from None
    return body


def command_args(frame: ClientFrame) -> dict[str, Any]:
    """The command arguments a client frame carries, checked for shape."""
    kind = frame.type
    if kind == "send":
        args: dict[str, Any] = {
            "local_id": frame.text("local_id", 128),
            "kind": frame.fields.get("kind", "text"),
            "body": message_body(frame),
        }
        if frame.fields.get("media") is not None:
            args["media"] = frame.fields["media"]
        if frame.fields.get("ref") is not None:  # a reply, or the message an action is on
            args["ref"] = frame.integer("ref", low=1)
        if frame.fields.get("timer_s") is not None:  # a `timer`: disappearing messages
            args["timer_s"] = frame.integer("timer_s")
        return args
    if kind in ("delivered", "read"):
        return {"up_to": frame.integer("up_to")}
    if kind == "create_group":
        members = frame.fields.get("members", [])
        if not isinstance(members, list) or len(members) > 1000:
            raise ProtocolError(
                "bad_frame", "`members` must be a list of user ids", frame.request_id
            )
        return {
            "name": frame.text("name", 200),
            "members": [str(frame_uuid(frame, m)) for m in members],
        }
    if kind == "rename_group":
        return {"name": frame.text("name", 200)}
    if kind in ("add_member", "remove_member", "promote_admin", "demote_admin"):
        return {"user_id": str(frame.uuid("user_id"))}
    return {}


def frame_uuid(frame: ClientFrame, value: Any) -> UUID:
    try:
        return UUID(str(value))
    except ValueError:
        raise ProtocolError("bad_frame", "not a user id", frame.request_id) from None


def new_chat_id(frame: ClientFrame) -> UUID:
    """A group's id: the client's (so a retried create is the same group) or a new one."""
    given = frame.uuid("chat_id", required=False)
    return given if given is not None else uuid.uuid4()


def dump(frame: dict[str, Any]) -> bytes:
    """A frame as the bytes of its text message."""
    return orjson.dumps(frame)


def error_frame(code: str, message: str, request_id: str = "", **extra: Any) -> dict[str, Any]:
    ERRORS.inc(code)
    return {"type": "error", "id": request_id, "code": code, "message": message, **extra}
