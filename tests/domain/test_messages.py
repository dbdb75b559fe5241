import pytest

from domain.errors import InvalidBody, TooLarge
from domain.messages import MAX_BODY_BYTES, MediaRef, MessageKind, validate_message

pytestmark = pytest.mark.unit

SHA = "ab" * 32
PHOTO = MediaRef(media_id="m-1", mime_type="image/jpeg", size=2048, sha256=SHA)


def test_text_is_utf8_and_not_empty() -> None:
    assert validate_message("text", "héllo".encode(), None) is MessageKind.TEXT
    with pytest.raises(InvalidBody, match="empty"):
        validate_message(MessageKind.TEXT, b"", None)
    with pytest.raises(InvalidBody, match="UTF-8"):
        validate_message(MessageKind.TEXT, b"\xff\xfe", None)


def test_media_needs_a_ref_and_may_have_a_caption() -> None:
    assert validate_message("media", b"", PHOTO) is MessageKind.MEDIA
    assert validate_message("media", b"look", PHOTO) is MessageKind.MEDIA
    with pytest.raises(InvalidBody, match="needs a media ref"):
        validate_message("media", b"look", None)
    with pytest.raises(InvalidBody, match="UTF-8"):
        validate_message("media", b"\xff", PHOTO)


def test_ciphertext_is_any_non_empty_bytes() -> None:
    assert validate_message("ciphertext", b"\xff\x00", None) is MessageKind.CIPHERTEXT
    with pytest.raises(InvalidBody, match="empty"):
        validate_message("ciphertext", b"", None)


def test_text_carries_no_media_ref_and_ciphertext_may_carry_an_encrypted_file() -> None:
    with pytest.raises(InvalidBody, match="cannot carry a media ref"):
        validate_message("text", b"x", PHOTO)
    assert validate_message("ciphertext", b"x", PHOTO) is MessageKind.CIPHERTEXT
    with pytest.raises(InvalidBody, match="empty"):  # the key travels in the body
        validate_message("ciphertext", b"", PHOTO)


def test_unknown_kind_and_non_bytes_are_invalid() -> None:
    with pytest.raises(InvalidBody, match="unknown message kind"):
        validate_message("sticker", b"x", None)
    with pytest.raises(InvalidBody, match="bytes"):
        validate_message("text", "x", None)  # type: ignore[arg-type]


def test_body_size_limit() -> None:
    assert validate_message("ciphertext", b"x" * MAX_BODY_BYTES, None)
    with pytest.raises(TooLarge):
        validate_message("ciphertext", b"x" * (MAX_BODY_BYTES + 1), None)
    with pytest.raises(TooLarge):
        validate_message("text", b"xyz", None, max_body=2)


@pytest.mark.parametrize(
    "fields",
    [
        {"media_id": ""},
        {"media_id": "m" * 129},
        {"mime_type": "jpeg"},
        {"mime_type": "image/"},
        {"size": 0},
        {"size": True},
        {"sha256": "ab" * 31},
        {"sha256": "zz" * 32},
    ],
)
def test_bad_media_refs_are_invalid(fields: dict[str, object]) -> None:
    with pytest.raises(InvalidBody):
        MediaRef(**{**PHOTO.to_dict(), **fields})  # type: ignore[arg-type]


def test_media_ref_round_trips_through_its_plain_form() -> None:
    assert MediaRef.from_dict(PHOTO.to_dict()) == PHOTO
    assert MediaRef("m", "video/mp4", 1, SHA.upper()).sha256 == SHA
    with pytest.raises(InvalidBody, match="lacks"):
        MediaRef.from_dict({"media_id": "m"})
