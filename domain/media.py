"""Media uploads: the kinds, what each may be, how big, and the checks an upload must pass.

Pure rules: the commands service asks them before it signs an upload URL and again
when the client confirms the upload, with what the probe saw in the stored object.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from enum import StrEnum

from domain.errors import DomainError

MEDIA_ID_BYTES = 24
"""A media id is 24 random bytes (192 bits) in URL-safe base64: unguessable."""

_MEDIA_ID = re.compile(r"[A-Za-z0-9_-]{32}")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class MediaKind(StrEnum):
    """What a client says it uploads; each kind has its own size limit and types."""

    IMAGE = "image"
    VIDEO = "video"
    AUDIO = "audio"  # voice notes and other sound
    DOCUMENT = "document"


# The types each kind may declare. A document may be anything; if its declared type has
# a signature below, the bytes must carry it.
KIND_TYPES: dict[MediaKind, frozenset[str]] = {
    MediaKind.IMAGE: frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"}),
    MediaKind.VIDEO: frozenset({"video/mp4", "video/webm", "video/quicktime"}),
    MediaKind.AUDIO: frozenset({"audio/ogg", "audio/mpeg", "audio/mp4", "audio/webm"}),
}

# Types whose stored bytes are checked, by their first bytes (the "magic").
SIGNED_TYPES = frozenset(t for types in KIND_TYPES.values() for t in types) | {"application/pdf"}

_MIME_TYPE = re.compile(r"[a-z0-9][\w.+-]*/[a-z0-9][\w.+-]*")


class MediaError(DomainError):
    """Something wrong with an upload; each subclass has its own stable code."""

    code = "media_error"


class MediaTooLarge(MediaError):
    code = "media_too_large"
    default_message = "the file is larger than its kind allows"


class MediaTypeNotAllowed(MediaError):
    code = "media_type_not_allowed"
    default_message = "this kind of media cannot have that type"


class BadUpload(MediaError):
    """A malformed upload request (kind, size, type or sha256 of the wrong shape)."""

    code = "bad_upload"
    default_message = "the upload request is malformed"


class UnknownMedia(MediaError):
    """No such upload for this user: never requested, collected, or someone else's."""

    code = "unknown_media"
    default_message = "no such media"


class MediaExpired(MediaError):
    """Sent, never delivered to anyone, and kept past the inbox's retention: deleted."""

    code = "media_expired"
    default_message = "this media was never delivered and has been deleted"


class MediaSent(MediaError):
    code = "media_sent"
    default_message = "a message carries this upload: it can no longer be aborted"


class MediaNotUploaded(MediaError):
    code = "media_not_uploaded"
    default_message = "nothing was uploaded with the upload URL yet"


class MediaNotConfirmed(MediaError):
    code = "media_not_confirmed"
    default_message = "confirm the upload before sending it"


class SizeMismatch(MediaError):
    code = "size_mismatch"
    default_message = "the stored object's size is not the declared size"


class HashMismatch(MediaError):
    code = "hash_mismatch"
    default_message = "the stored object's sha256 is not the declared one"


class TypeMismatch(MediaError):
    code = "type_mismatch"
    default_message = "the stored bytes are not of the declared type"


class MediaBomb(MediaError):
    code = "media_bomb"
    default_message = "the image has more pixels than allowed"


class MediaTooLong(MediaError):
    code = "media_too_long"
    default_message = "the video or sound lasts longer than allowed"


class MediaUnreadable(MediaError):
    code = "media_unreadable"
    default_message = "the file could not be decoded as its type"


def new_media_id() -> str:
    return secrets.token_urlsafe(MEDIA_ID_BYTES)


def is_media_id(value: object) -> bool:
    return isinstance(value, str) and _MEDIA_ID.fullmatch(value) is not None


def upload_key(media_id: str) -> str:
    """Where the client PUTs the bytes of `media_id` (its presigned URL names this key)."""
    return f"uploads/{media_id}"


def object_key(media_id: str) -> str:
    """Where the bytes of a confirmed `media_id` live: copied there before they are
    checked, so a client still holding the PUT URL cannot swap them afterwards."""
    return f"media/{media_id}"


@dataclass(frozen=True, slots=True)
class MediaLimits:
    """The largest file of each kind, in bytes."""

    image: int
    video: int
    audio: int
    document: int

    def of(self, kind: MediaKind) -> int:
        return int(getattr(self, kind.value))


@dataclass(frozen=True, slots=True)
class UploadRequest:
    """What a client declares before uploading, checked."""

    kind: MediaKind
    size: int
    mime_type: str
    sha256: str


def plan_upload(
    kind: object, size: object, mime_type: object, sha256: object, limits: MediaLimits
) -> UploadRequest:
    """Check a requested upload against the rules and limits; return it, typed."""
    try:
        media_kind = MediaKind(str(kind))
    except ValueError:
        raise BadUpload(f"kind must be one of {', '.join(k.value for k in MediaKind)}") from None
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise BadUpload("size must be a positive integer (bytes)")
    if not isinstance(mime_type, str) or not _MIME_TYPE.fullmatch(mime_type.lower()):
        raise BadUpload("mime_type must look like type/subtype")
    if not isinstance(sha256, str) or not _SHA256_HEX.fullmatch(sha256.lower()):
        raise BadUpload("sha256 must be 64 hex characters")
    mime = mime_type.lower()
    allowed = KIND_TYPES.get(media_kind)
    if allowed is not None and mime not in allowed:
        raise MediaTypeNotAllowed(f"{media_kind} may be {', '.join(sorted(allowed))}")
    limit = limits.of(media_kind)
    if size > limit:
        raise MediaTooLarge(f"a {media_kind} has at most {limit} bytes")
    return UploadRequest(media_kind, size, mime, sha256.lower())


def sniff(head: bytes) -> str | None:
    """The type that the first bytes of a file show, or None if none Parley knows."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if head.startswith(b"OggS"):
        return "audio/ogg"
    if head.startswith(b"ID3") or head[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return "audio/mpeg"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm"  # Matroska/WebM: audio-only WebM has the same magic
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand == b"qt  ":
            return "video/quicktime"
        if brand in (b"M4A ", b"M4B "):
            return "audio/mp4"
        return "video/mp4"
    return None


_SAME_MAGIC = {"audio/webm": "video/webm", "video/quicktime": "video/mp4", "audio/mp4": "video/mp4"}


def check_stored(request: UploadRequest, size: int, sha256: str, sniffed: str | None) -> None:
    """Raise unless the stored object is what the client declared: size, hash and type."""
    if size != request.size:
        raise SizeMismatch(f"declared {request.size} bytes, stored {size}")
    if sha256 != request.sha256:
        raise HashMismatch()
    if request.mime_type in SIGNED_TYPES and not _same_type(request.mime_type, sniffed):
        raise TypeMismatch(f"declared {request.mime_type}, the bytes say {sniffed or 'unknown'}")


def _same_type(declared: str, sniffed: str | None) -> bool:
    if sniffed is None:
        return False
    return _SAME_MAGIC.get(declared, declared) == _SAME_MAGIC.get(sniffed, sniffed)
