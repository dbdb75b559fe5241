"""The media rules: what may be uploaded, how types are told from bytes, what must match."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.media import (
    BadUpload,
    HashMismatch,
    MediaKind,
    MediaLimits,
    MediaTooLarge,
    MediaTypeNotAllowed,
    SizeMismatch,
    TypeMismatch,
    UploadRequest,
    check_stored,
    is_media_id,
    new_media_id,
    plan_upload,
    sniff,
)
from domain.messages import MAX_THUMBNAIL_CHARS, MediaRef

pytestmark = pytest.mark.unit

LIMITS = MediaLimits(image=100, video=1000, audio=100, document=10_000)
SHA = "ab" * 32


def test_an_upload_within_the_rules_is_planned_with_its_type_lowered() -> None:
    planned = plan_upload("image", 100, "Image/PNG", SHA.upper(), LIMITS)
    assert planned == UploadRequest(MediaKind.IMAGE, 100, "image/png", SHA)


@pytest.mark.parametrize(
    ("kind", "size", "mime", "sha", "error"),
    [
        ("image", 101, "image/png", SHA, MediaTooLarge),
        ("video", 1001, "video/mp4", SHA, MediaTooLarge),
        ("image", 10, "video/mp4", SHA, MediaTypeNotAllowed),
        ("audio", 10, "image/png", SHA, MediaTypeNotAllowed),
        ("sticker", 10, "image/png", SHA, BadUpload),
        ("image", 0, "image/png", SHA, BadUpload),
        ("image", True, "image/png", SHA, BadUpload),
        ("image", "10", "image/png", SHA, BadUpload),
        ("image", 10, "png", SHA, BadUpload),
        ("image", 10, "image/png", "x" * 64, BadUpload),
    ],
)
def test_uploads_outside_the_rules_are_refused(
    kind: object, size: object, mime: object, sha: object, error: type[Exception]
) -> None:
    with pytest.raises(error):
        plan_upload(kind, size, mime, sha, LIMITS)


def test_a_document_may_have_any_type() -> None:
    assert plan_upload("document", 9_000, "text/csv", SHA, LIMITS).mime_type == "text/csv"


@pytest.mark.parametrize(
    ("head", "mime"),
    [
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "image/jpeg"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "image/png"),
        (b"GIF89a\x01\x00", "image/gif"),
        (b"RIFF\x10\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"%PDF-1.7\n", "application/pdf"),
        (b"OggS\x00\x02", "audio/ogg"),
        (b"ID3\x04\x00", "audio/mpeg"),
        (b"\x1a\x45\xdf\xa3\x9f", "video/webm"),
        (b"\x00\x00\x00\x20ftypisom", "video/mp4"),
        (b"\x00\x00\x00\x20ftypM4A ", "audio/mp4"),
        (b"\x00\x00\x00\x14ftypqt  ", "video/quicktime"),
        (b"#!/bin/sh\n", None),
        (b"", None),
    ],
)
def test_types_are_told_by_their_first_bytes(head: bytes, mime: str | None) -> None:
    assert sniff(head) == mime


@given(st.binary(max_size=64))
def test_sniffing_any_bytes_answers_a_type_or_none(head: bytes) -> None:
    assert sniff(head) is None or "/" in (sniff(head) or "")


def test_the_stored_object_must_match_what_was_declared() -> None:
    png = UploadRequest(MediaKind.IMAGE, 10, "image/png", SHA)
    check_stored(png, 10, SHA, "image/png")
    with pytest.raises(SizeMismatch):
        check_stored(png, 11, SHA, "image/png")
    with pytest.raises(HashMismatch):
        check_stored(png, 10, "cd" * 32, "image/png")
    with pytest.raises(TypeMismatch):
        check_stored(png, 10, SHA, "image/jpeg")
    with pytest.raises(TypeMismatch):
        check_stored(png, 10, SHA, None)
    # WebM voice notes share the video container's magic; unknown document types pass.
    check_stored(UploadRequest(MediaKind.AUDIO, 10, "audio/webm", SHA), 10, SHA, "video/webm")
    check_stored(UploadRequest(MediaKind.DOCUMENT, 10, "text/plain", SHA), 10, SHA, None)
    with pytest.raises(TypeMismatch):
        check_stored(UploadRequest(MediaKind.DOCUMENT, 10, "application/pdf", SHA), 10, SHA, None)


def test_media_ids_are_unguessable_and_recognised() -> None:
    ids = {new_media_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(is_media_id(i) for i in ids)
    assert not is_media_id("A" * 31) and not is_media_id("../../etc/passwd") and not is_media_id(7)


def test_a_media_ref_keeps_a_confirmed_uploads_details_and_reads_old_ones() -> None:
    old = {"media_id": "m", "mime_type": "image/png", "size": 1, "sha256": SHA}
    assert MediaRef.from_dict(old).to_dict() == old
    full = {**old, "kind": "image", "width": 3, "height": 2, "thumbnail": "UklGRg=="}
    assert MediaRef.from_dict(full).to_dict() == full
    with pytest.raises(Exception, match="thumbnail"):
        MediaRef.from_dict({**old, "thumbnail": "A" * (MAX_THUMBNAIL_CHARS + 1)})
