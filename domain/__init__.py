"""Parley's chat domain: aggregates, events, value objects and their rules.

Pure: imports nothing outside the stdlib and `eventsourcing.domain`; everything may import it.
"""

from domain.chat import (
    MAX_CLIENT_ID_CHARS,
    MAX_GROUP_MEMBERS,
    MAX_GROUP_NAME_CHARS,
    SEND_MEMORY,
    Chat,
    ChatKind,
    SendKey,
    SendResult,
)
from domain.errors import (
    Blocked,
    DomainError,
    GroupFull,
    InvalidBody,
    InvalidGroup,
    InvalidSeq,
    LastAdmin,
    NotAdmin,
    NotDirect,
    NotGroup,
    NotMember,
    TooLarge,
    UnknownChat,
)
from domain.ids import EPOCH_MS, Snowflake, compose_snowflake, direct_chat_id, snowflake_parts
from domain.membership import Interval
from domain.messages import MAX_BODY_BYTES, MediaRef, MessageKind, validate_message

__all__ = [
    "EPOCH_MS",
    "MAX_BODY_BYTES",
    "MAX_CLIENT_ID_CHARS",
    "MAX_GROUP_MEMBERS",
    "MAX_GROUP_NAME_CHARS",
    "SEND_MEMORY",
    "Blocked",
    "Chat",
    "ChatKind",
    "DomainError",
    "GroupFull",
    "Interval",
    "InvalidBody",
    "InvalidGroup",
    "InvalidSeq",
    "LastAdmin",
    "MediaRef",
    "MessageKind",
    "NotAdmin",
    "NotDirect",
    "NotGroup",
    "NotMember",
    "SendKey",
    "SendResult",
    "Snowflake",
    "TooLarge",
    "UnknownChat",
    "compose_snowflake",
    "direct_chat_id",
    "snowflake_parts",
    "validate_message",
]
