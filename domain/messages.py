"""Message value objects: kinds, media references and the rules a body must follow."""

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from domain.errors import InvalidBody, TooLarge

MAX_BODY_BYTES = 64 * 1024
"""Default limit on the size of a message body."""

MAX_MEDIA_ID_CHARS = 128
MAX_THUMBNAIL_CHARS = 16 * 1024
"""A thumbnail travels inside the message: base64 WebP, at most this long (12 KiB of image)."""
_MIME_TYPE = re.compile(r"[A-Za-z0-9][\w.+-]*/[A-Za-z0-9][\w.+-]*")
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")


class MessageKind(StrEnum):
    """What a message body holds; the last three are actions on the message its `ref`
    names (domain/message_actions.py)."""

    TEXT = "text"
    MEDIA = "media"
    CIPHERTEXT = "ciphertext"
    REACTION = "reaction"
    EDIT = "edit"
    DELETE = "delete"
    TIMER = "timer"


ACTION_KINDS = frozenset({MessageKind.REACTION, MessageKind.EDIT, MessageKind.DELETE})
"""Kinds that act on another message rather than say something of their own."""
NOTICE_KINDS = frozenset({*ACTION_KINDS, MessageKind.TIMER})
"""Kinds that are no message of their own: no receipts, nobody's unread, no push."""


@dataclass(frozen=True, slots=True)
class MediaRef:
    """A reference to an uploaded media blob; the blob itself is stored elsewhere.

    The optional fields describe a confirmed upload (docs/media.md): its kind, an image's
    or video's dimensions and WebP thumbnail (a video's poster frame), a video's or
    sound's duration. Older events lack them; they read as None.
    """

    media_id: str
    mime_type: str
    size: int
    sha256: str
    kind: str | None = None
    width: int | None = None
    height: int | None = None
    thumbnail: str | None = None
    duration_ms: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.media_id, str) or not 0 < len(self.media_id) <= MAX_MEDIA_ID_CHARS:
            raise InvalidBody(f"media_id must be 1..{MAX_MEDIA_ID_CHARS} characters")
        if not isinstance(self.mime_type, str) or not _MIME_TYPE.fullmatch(self.mime_type):
            raise InvalidBody("mime_type must look like type/subtype")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size <= 0:
            raise InvalidBody("media size must be a positive integer")
        if not isinstance(self.sha256, str) or not _SHA256_HEX.fullmatch(self.sha256):
            raise InvalidBody("sha256 must be 64 hex characters")
        object.__setattr__(self, "sha256", self.sha256.lower())
        if self.kind is not None and not (isinstance(self.kind, str) and 0 < len(self.kind) <= 16):
            raise InvalidBody("media kind must be a short string")
        for side in (self.width, self.height, self.duration_ms):
            if side is not None and (isinstance(side, bool) or not isinstance(side, int)):
                raise InvalidBody("media dimensions and durations must be integers")
        if self.thumbnail is not None and not (
            isinstance(self.thumbnail, str) and len(self.thumbnail) <= MAX_THUMBNAIL_CHARS
        ):
            raise InvalidBody(f"a thumbnail is base64 of at most {MAX_THUMBNAIL_CHARS} characters")

    def to_dict(self) -> dict[str, str | int]:
        """The plain form stored in events; the optional fields only when set."""
        plain: dict[str, str | int] = {
            "media_id": self.media_id,
            "mime_type": self.mime_type,
            "size": self.size,
            "sha256": self.sha256,
        }
        for name in ("kind", "width", "height", "thumbnail", "duration_ms"):
            value = getattr(self, name)
            if value is not None:
                plain[name] = value
        return plain

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "MediaRef":
        """Rebuild (and validate) a reference from its plain form."""
        try:
            return cls(
                media_id=data["media_id"],
                mime_type=data["mime_type"],
                size=data["size"],
                sha256=data["sha256"],
                kind=data.get("kind"),
                width=data.get("width"),
                height=data.get("height"),
                thumbnail=data.get("thumbnail"),
                duration_ms=data.get("duration_ms"),
            )
        except KeyError as missing:
            raise InvalidBody(f"media ref lacks {missing}") from None


def validate_message(
    kind: MessageKind | str,
    body: bytes,
    media: MediaRef | None,
    max_body: int = MAX_BODY_BYTES,
) -> MessageKind:
    """Check a message against the rules of its kind and return the kind.

    text: non-empty UTF-8, no media. media: a media ref, an optional UTF-8 caption.
    ciphertext: any non-empty bytes, and optionally the media ref of an encrypted file
    (the store holds its ciphertext; its key travels inside the body, docs/e2e.md).
    Every body is at most `max_body` bytes.
    """
    try:
        message_kind = MessageKind(kind)
    except ValueError:
        raise InvalidBody(f"unknown message kind {kind!r}") from None
    if message_kind in ACTION_KINDS:
        raise InvalidBody(f"a {message_kind} names the message it acts on in `ref`")
    if message_kind is MessageKind.TIMER:
        raise InvalidBody("a timer is set with `timer_s`")
    if not isinstance(body, bytes):
        raise InvalidBody("the body must be bytes")
    if len(body) > max_body:
        raise TooLarge(f"the body is {len(body)} bytes; the limit is {max_body}")
    if message_kind is MessageKind.MEDIA:
        if media is None:
            raise InvalidBody("a media message needs a media ref")
    elif media is not None and message_kind is not MessageKind.CIPHERTEXT:
        raise InvalidBody(f"a {message_kind} message cannot carry a media ref")
    elif not body:
        raise InvalidBody("the body is empty")
    if message_kind is not MessageKind.CIPHERTEXT:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidBody("text must be valid UTF-8") from None
    return message_kind
