"""The OpenAPI 3.1 document of the queries service, served at `/openapi.json`.

Written once, next to the routes, and kept honest by tests: every route of the app is
documented with its parameters (`tests/queries/test_openapi.py`), and schemathesis
checks real answers against these schemas (`tests/queries/test_schemathesis.py`).

Over 400 lines on purpose: one document (data, not logic), kept whole so that it
reads as the specification it is.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from queries.params import DEFAULT_LIMIT, MAX_LIMIT, MAX_SEQ
from queries.responses import JSON

ERROR_CODES = [
    "bad_parameter",
    "bad_cursor",
    "bad_position",
    "invalid_token",
    "token_expired",
    "not_sender",
    "unknown_chat",
    "unknown_message",
    "unknown_media",
    "unknown_user",
    "media_expired",
    "not_yet_projected",
    "not_found",
    "method_not_allowed",
    "internal",
    "unavailable",
]


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _schema(name: str) -> dict[str, str]:
    return _ref("schemas", name)


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"oneOf": [schema, {"type": "null"}]}


def _object(properties: dict[str, Any], description: str = "") -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }
    if description:
        schema["description"] = description
    return schema


UUID = {"type": "string", "format": "uuid"}
TIMESTAMP = {
    "type": "string",
    "format": "date-time",
    "description": "UTC, e.g. 2026-01-01T10:00:00.000000Z",
}
SEQ = {"type": "integer", "minimum": 1, "maximum": MAX_SEQ}
COUNT = {"type": "integer", "minimum": 0}
MESSAGE_ID = {
    "type": "string",
    "pattern": "^[0-9]{1,20}$",
    "description": "64-bit Snowflake id, as a string",
}
CURSOR = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,200}$"}

_MESSAGE_FIELDS: dict[str, Any] = {
    "chat_id": UUID,
    "seq": SEQ,
    "message_id": MESSAGE_ID,
    "sender": UUID,
    "kind": {
        "type": "string",
        "enum": ["text", "media", "ciphertext", "reaction", "edit", "delete", "timer"],
        "description": (
            "`reaction`, `edit`, `delete` act on the message `ref` names; `timer` sets the "
            "chat's disappearing-messages timer, its body the seconds (docs/protocol.md)"
        ),
    },
    "body": {"type": "string", "contentEncoding": "base64"},
    "media": _nullable(_schema("MediaRef")),
    "sent_at": TIMESTAMP,
    "ref": {
        "type": ["integer", "null"],
        "description": "the seq a reply answers, or a reaction, edit or delete acts on",
    },
    "quote": _nullable(_schema("Quote")),
    "edited": {"type": "boolean", "description": "the body is the latest of its edits"},
    "deleted": {
        "type": "boolean",
        "description": "deleted for everyone: a tombstone, with an empty body and no media",
    },
    "expires_at": {
        "oneOf": [TIMESTAMP, {"type": "null"}],
        "description": "a disappearing message's end: from then on it is shown deleted",
    },
    "forwarded": {
        "type": "integer",
        "minimum": 0,
        "description": "forwarded this many hops (0: written here; 5 or more: many times)",
    },
}
_HIDDEN_ACTION_FIELDS: dict[str, Any] = {
    "ref": {"type": "null"},
    "quote": {"type": "null"},
    "edited": {"const": False},
    "deleted": {"const": False},
    "expires_at": {"type": "null"},
    "forwarded": {"const": 0},
}

_ENVELOPE_FIELDS: dict[str, Any] = {
    **_MESSAGE_FIELDS,
    "kind": {"const": "ciphertext"},
    "body": {"type": ["string", "null"], "contentEncoding": "base64"},
    "envelope": {"const": True},
}

SCHEMAS: dict[str, Any] = {
    "Error": _object(
        {
            "error": _object(
                {
                    "code": {"type": "string", "enum": ERROR_CODES},
                    "message": {"type": "string"},
                }
            )
        },
        "Every error: a stable machine code and a message for people.",
    ),
    "MediaRef": {
        **_object(
            {
                "media_id": {"type": "string"},
                "mime_type": {"type": "string"},
                "size": COUNT,
                "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            },
            "A confirmed upload (docs/media.md); the last five fields when known.",
        ),
        "properties": {
            "media_id": {"type": "string"},
            "mime_type": {"type": "string"},
            "size": COUNT,
            "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            "kind": {"type": "string", "enum": ["image", "video", "audio", "document"]},
            "width": COUNT,
            "height": COUNT,
            "thumbnail": {"type": "string", "contentEncoding": "base64"},
            "duration_ms": COUNT,
        },
    },
    "MediaDownload": _object(
        {
            "media_id": {"type": "string"},
            "mime_type": {"type": "string"},
            "size": COUNT,
            "url": {"type": "string", "description": "a presigned GET; Range works"},
            "expires_at": TIMESTAMP,
        },
        "A short-lived download URL of a media file.",
    ),
    "Message": _object(
        {**_MESSAGE_FIELDS, "reactions": {"type": "array", "items": _schema("Reaction")}},
        "One message; `body` is the stored bytes in base64.",
    ),
    "Quote": {
        "type": "object",
        "description": (
            "What a reply shows of the message it answers; `{seq, deleted: true}` once "
            "that message is deleted"
        ),
        "properties": {
            "seq": SEQ,
            "sender": UUID,
            "kind": {"type": "string"},
            "excerpt": {"type": "string", "description": "up to 100 characters of its text"},
            "deleted": {"const": True},
        },
        "required": ["seq"],
        "additionalProperties": False,
    },
    "Reaction": _object(
        {
            "emoji": {"type": "string"},
            "count": {"type": "integer", "minimum": 1},
            "mine": {"type": "boolean", "description": "the caller's own reaction"},
        },
        "One emoji on a message, with how many members chose it.",
    ),
    "Versions": _object(
        {
            "chat_id": UUID,
            "seq": SEQ,
            "kind": {"type": "string"},
            "deleted": {"type": "boolean"},
            "versions": {
                "type": "array",
                "items": _object(
                    {
                        "body": {"type": "string", "contentEncoding": "base64"},
                        "written_at": TIMESTAMP,
                    }
                ),
                "description": "oldest first, the current text last; none once deleted",
            },
        },
        "The texts of one of the caller's messages.",
    ),
    "HiddenMessage": _object(
        {
            "chat_id": UUID,
            "seq": SEQ,
            "message_id": MESSAGE_ID,
            "hidden": {"const": True},
            "sender": {"type": "null"},
            "kind": {"type": "null"},
            "body": {"type": "null"},
            "media": {"type": "null"},
            "sent_at": TIMESTAMP,
            **_HIDDEN_ACTION_FIELDS,
        },
        "A message from a user the caller blocks: its seq, id and time only.",
    ),
    "InboxMessage": _object(
        {**_MESSAGE_FIELDS, "queued_at": TIMESTAMP},
        "An undelivered message and when it entered the inbox.",
    ),
    "EncryptedMessage": _object(
        {**_ENVELOPE_FIELDS, "reactions": {"type": "array", "items": _schema("Reaction")}},
        "An end-to-end encrypted 1:1 message (docs/e2e.md): `body` is the caller's device's"
        " envelope, null when there is none for it.",
    ),
    "EncryptedInboxMessage": _object(
        {**_ENVELOPE_FIELDS, "queued_at": TIMESTAMP},
        "An undelivered encrypted message: the caller's device's envelope.",
    ),
    "LastMessage": _object(
        {
            "seq": SEQ,
            "message_id": MESSAGE_ID,
            "sender": UUID,
            "sent_at": TIMESTAMP,
            "kind": {
                "type": "string",
                "enum": ["text", "media", "ciphertext", "timer"],
                "description": "never a reaction, edit or delete: the message before them",
            },
            "edited": _MESSAGE_FIELDS["edited"],
            "deleted": {
                "type": "boolean",
                "description": "deleted for everyone, or a disappearing message past its end",
            },
        }
    ),
    "ChatSummary": _object(
        {
            "chat_id": UUID,
            "kind": {"type": "string", "enum": ["direct", "group"]},
            "name": {"type": ["string", "null"]},
            "peer": _nullable({**UUID, "description": "the other user of a 1:1 chat"}),
            "is_member": {"type": "boolean"},
            "role": {"type": ["string", "null"], "enum": ["admin", "member", None]},
            "last_message": _nullable(_schema("LastMessage")),
            "last_activity_at": TIMESTAMP,
            "unread": COUNT,
        }
    ),
    "ChatList": _object(
        {
            "chats": {"type": "array", "items": _schema("ChatSummary")},
            "next_cursor": _nullable({**CURSOR, "description": "pass as `cursor`"}),
        }
    ),
    "History": _object(
        {
            "chat_id": UUID,
            "messages": {
                "type": "array",
                "items": {
                    "oneOf": [
                        _schema("Message"),
                        _schema("HiddenMessage"),
                        _schema("EncryptedMessage"),
                    ]
                },
            },
            "before_seq": {
                "type": ["integer", "null"],
                "description": "pass as `before_seq` for the older page; null: none",
            },
            "after_seq": {
                "type": ["integer", "null"],
                "description": "pass as `after_seq` for the newer page; null: none yet",
            },
            "last_seq": {
                "type": ["integer", "null"],
                "description": "the highest seq the caller may see; null: none",
            },
        }
    ),
    "Receipt": _object(
        {
            "user_id": UUID,
            "status": {"type": "string", "enum": ["SENT", "DELIVERED", "READ"]},
            "delivered_at": _nullable(TIMESTAMP),
            "read_at": _nullable(TIMESTAMP),
        }
    ),
    "Reader": _object({"user_id": UUID, "read_at": TIMESTAMP}),
    "DirectReceipts": _object(
        {
            "chat_id": UUID,
            "seq": SEQ,
            "message_id": MESSAGE_ID,
            "sender": UUID,
            "kind": {"const": "direct"},
            "recipient": _nullable(_schema("Receipt")),
        }
    ),
    "GroupReceipts": _object(
        {
            "chat_id": UUID,
            "seq": SEQ,
            "message_id": MESSAGE_ID,
            "sender": UUID,
            "kind": {"const": "group"},
            "recipients": COUNT,
            "delivered": COUNT,
            "read": COUNT,
            "readers": {"type": "array", "items": _schema("Reader")},
        }
    ),
    "Receipts": {"oneOf": [_schema("DirectReceipts"), _schema("GroupReceipts")]},
    "Inbox": _object(
        {
            "messages": {
                "type": "array",
                "items": {"oneOf": [_schema("InboxMessage"), _schema("EncryptedInboxMessage")]},
            },
            "after": _nullable({**CURSOR, "description": "pass as `after`"}),
        }
    ),
    "Member": _object(
        {
            "user_id": UUID,
            "role": {"type": "string", "enum": ["admin", "member"]},
            "joined_at": TIMESTAMP,
        }
    ),
    "ChatInfo": _object(
        {
            "chat_id": UUID,
            "kind": {"type": "string", "enum": ["direct", "group"]},
            "name": {"type": ["string", "null"]},
            "created_by": UUID,
            "created_at": TIMESTAMP,
            "is_member": {"type": "boolean"},
            "role": {"type": ["string", "null"], "enum": ["admin", "member", None]},
            "last_seq": {"type": ["integer", "null"]},
            "members": {
                "type": "array",
                "items": _schema("Member"),
                "description": "current members; empty for a former member",
            },
        }
    ),
    "Profile": _object(
        {
            "user_id": UUID,
            "username": {"type": "string"},
            "display_name": {"type": "string"},
            "about": {"type": "string"},
            "last_seen": {
                "type": ["integer", "null"],
                "description": "unix ms; null when unknown or not visible to the caller",
            },
            "online": {"type": ["boolean", "null"], "description": "null when not visible"},
        }
    ),
    "Contact": _object(
        {"user_id": UUID, "username": {"type": "string"}, "display_name": {"type": "string"}}
    ),
    "Contacts": _object(
        {"contacts": {"type": "array", "items": _schema("Contact")}},
        "The caller's contacts, by display name.",
    ),
    "Health": _object({"status": {"const": "ok"}}),
    "Ready": _object(
        {
            "ready": {"type": "boolean"},
            "postgres": {"type": "string"},
            "redis": {"type": "string"},
            "projection_lag": {"type": ["integer", "null"], "minimum": 0},
            "max_lag": COUNT,
        }
    ),
}

PARAMETERS: dict[str, Any] = {
    "ChatId": {"name": "chat_id", "in": "path", "required": True, "schema": UUID},
    "UserId": {"name": "user_id", "in": "path", "required": True, "schema": UUID},
    "Seq": {"name": "seq", "in": "path", "required": True, "schema": SEQ},
    "MediaId": {
        "name": "media_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{32}$"},
    },
    "Limit": {
        "name": "limit",
        "in": "query",
        "description": f"page size, {DEFAULT_LIMIT} when not given",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
    },
    "AfterSeq": {
        "name": "after_seq",
        "in": "query",
        "description": "read forwards: the oldest messages with a greater seq",
        "schema": {"type": "integer", "minimum": 0, "maximum": MAX_SEQ},
    },
    "BeforeSeq": {
        "name": "before_seq",
        "in": "query",
        "description": "read backwards: the newest messages with a smaller seq",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_SEQ},
    },
    "ChatCursor": {
        "name": "cursor",
        "in": "query",
        "description": "`next_cursor` of the previous page",
        "schema": CURSOR,
    },
    "InboxAfter": {
        "name": "after",
        "in": "query",
        "description": "`after` of the previous page",
        "schema": CURSOR,
    },
    "Position": {
        "name": "X-Parley-Position",
        "in": "header",
        "description": (
            "`<chat_id>:<position>` from a command ack: answer only once that chat's "
            "projections reached the position (425 `not_yet_projected` after the deadline)"
        ),
        "schema": {
            "type": "string",
            "pattern": (
                "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                "[0-9a-fA-F]{12}:[0-9]{1,18}$"
            ),
        },
    },
}


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": _schema("Error")}},
    }
    if headers:
        response["headers"] = headers
    return response


RESPONSES: dict[str, Any] = {
    "BadRequest": _error("`bad_parameter`, `bad_cursor` or `bad_position`"),
    "Unauthorized": _error(
        "`invalid_token` or `token_expired`",
        {"WWW-Authenticate": {"schema": {"type": "string"}}},
    ),
    "NotFound": _error(
        "`unknown_chat` / `unknown_message` / `unknown_user`: also for what exists but is "
        "not the caller's to see (the same body)"
    ),
    "TooEarly": _error(
        "`not_yet_projected`: the position in X-Parley-Position was not reached in time",
        {"Retry-After": {"schema": {"type": "string"}}},
    ),
    "Internal": _error("`internal`"),
    "Unavailable": _error(
        "`unavailable`: PostgreSQL or Redis cannot be reached; retry",
        {"Retry-After": {"schema": {"type": "string"}}},
    ),
}

_SOURCE = {
    "X-Parley-Read-Source": {
        "description": "`cache`: Redis answered the hot part; `database`: PostgreSQL did",
        "schema": {"type": "string", "enum": ["cache", "database"]},
    }
}


def _ok(schema: str, description: str, source: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": _schema(schema)}},
    }
    if source:
        response["headers"] = _SOURCE
    return response


def _guarded(
    operation_id: str,
    summary: str,
    parameters: list[str],
    ok: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    responses = {
        "200": ok,
        "400": _ref("responses", "BadRequest"),
        "401": _ref("responses", "Unauthorized"),
        "404": _ref("responses", "NotFound"),
        "425": _ref("responses", "TooEarly"),
        "500": _ref("responses", "Internal"),
        "503": _ref("responses", "Unavailable"),
        **(extra or {}),
    }
    return {
        "get": {
            "operationId": operation_id,
            "summary": summary,
            "parameters": [_ref("parameters", p) for p in [*parameters, "Position"]],
            "responses": dict(sorted(responses.items())),
        }
    }


def _open(operation_id: str, summary: str, responses: dict[str, Any]) -> dict[str, Any]:
    return {
        "get": {
            "operationId": operation_id,
            "summary": summary,
            "security": [],
            "responses": responses,
        }
    }


PATHS: dict[str, Any] = {
    "/healthz": _open(
        "healthz", "The process is up", {"200": _ok("Health", "the process answers")}
    ),
    "/readyz": _open(
        "readyz",
        "PostgreSQL and Redis answer and the projections are not too far behind",
        {"200": _ok("Ready", "ready"), "503": _ok("Ready", "not ready (the body says why)")},
    ),
    "/openapi.json": _open(
        "openapi",
        "This document",
        {
            "200": {
                "description": "the OpenAPI 3.1 document",
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        },
    ),
    "/v1/chats": _guarded(
        "listChats",
        "The caller's chats, most recent activity first",
        ["Limit", "ChatCursor"],
        _ok("ChatList", "a page of chats", source=True),
    ),
    "/v1/chats/{chat_id}": _guarded(
        "getChat",
        "A chat's name, kind and members with roles",
        ["ChatId"],
        _ok("ChatInfo", "the chat"),
    ),
    "/v1/chats/{chat_id}/messages": _guarded(
        "listMessages",
        "A page of a chat's history by seq",
        ["ChatId", "AfterSeq", "BeforeSeq", "Limit"],
        _ok("History", "a page of messages in ascending seq", source=True),
    ),
    "/v1/chats/{chat_id}/messages/{seq}/receipts": _guarded(
        "getReceipts",
        "Delivery and read receipts of one of the caller's messages",
        ["ChatId", "Seq"],
        _ok("Receipts", "the receipts"),
        {"403": _error("`not_sender`: receipts are shown to the message's sender")},
    ),
    "/v1/chats/{chat_id}/messages/{seq}/versions": _guarded(
        "getVersions",
        "The texts of one of the caller's edited messages, oldest first",
        ["ChatId", "Seq"],
        _ok("Versions", "the versions"),
        {"403": _error("`not_sender`: versions are shown to the message's sender")},
    ),
    "/v1/chats/{chat_id}/media/{media_id}": _guarded(
        "getMediaDownload",
        "A short-lived download URL for media sent in a chat the caller sees",
        ["ChatId", "MediaId"],
        _ok("MediaDownload", "the download URL"),
        {"410": _error("`media_expired`: never delivered, deleted after the inbox's retention")},
    ),
    "/v1/inbox": _guarded(
        "listInbox",
        "Messages not yet delivered to the caller, oldest first",
        ["Limit", "InboxAfter"],
        _ok("Inbox", "a page of the inbox"),
    ),
    "/v1/users/{user_id}": _guarded(
        "getUser",
        "A user's profile and, when visible to the caller, last seen and online status",
        ["UserId"],
        _ok("Profile", "the profile"),
    ),
    "/v1/contacts": _guarded(
        "listContacts",
        "The caller's contacts with their usernames and display names",
        [],
        _ok("Contacts", "the contacts"),
    ),
}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Parley queries",
        "version": "1",
        "description": (
            "The read side of Parley: chats, history, receipts, inbox and profiles from "
            "the projections. See docs/queries.md."
        ),
    },
    "paths": PATHS,
    "components": {
        "schemas": SCHEMAS,
        "parameters": PARAMETERS,
        "responses": RESPONSES,
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
    },
    "security": [{"bearer": []}],
}


async def openapi_json(request: Request) -> Response:
    return JSON(DOCUMENT)
