"""The push providers' pure parts: Web Push encryption against another implementation,
how an HTTP answer becomes an outcome, Retry-After in both of its forms."""

from __future__ import annotations

import email.utils
import os
import time

import http_ece
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from infra.push.provider import Notification, Outcome, result_of, retry_after
from infra.push.webpush import encrypt, raw_public_key

pytestmark = pytest.mark.unit

BROWSER = ec.generate_private_key(ec.SECP256R1())
AUTH = os.urandom(16)


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=3000))
def test_a_payload_decrypts_with_http_ece_to_what_was_sent(payload: bytes) -> None:
    body = encrypt(payload, raw_public_key(BROWSER.public_key()), AUTH)
    plain = http_ece.decrypt(body, private_key=BROWSER, auth_secret=AUTH, version="aes128gcm")
    assert plain == payload


def test_a_payload_over_one_record_is_refused() -> None:
    with pytest.raises(ValueError):
        encrypt(b"x" * 4096, raw_public_key(BROWSER.public_key()), AUTH)


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (201, Outcome.SENT),
        (200, Outcome.SENT),
        (404, Outcome.GONE),
        (410, Outcome.GONE),
        (429, Outcome.RETRY),
        (500, Outcome.RETRY),
        (503, Outcome.RETRY),
        (400, Outcome.FAILED),
        (413, Outcome.FAILED),
    ],
)
def test_answers_become_outcomes(status: int, outcome: Outcome) -> None:
    assert result_of(status, {}).outcome is outcome


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert retry_after("7") == 7.0
    assert retry_after(None) is None and retry_after("soon") is None
    in_a_minute = email.utils.formatdate(time.time() + 60, usegmt=True)
    assert 55 <= (retry_after(in_a_minute) or 0) <= 60
    assert result_of(429, {"retry-after": "3"}).retry_after_s == 3.0


def test_a_notification_carries_a_preview_only_when_given() -> None:
    chat = "0d6b0b3e-6f0e-4c59-9a55-3d2b8a1f6c10"
    plain = Notification(chat, "Ada", 3, None)
    assert plain.data() == {"type": "message", "chat_id": chat, "sender": "Ada", "count": "3"}
    assert Notification(chat, "Ada", 1, "hi").data()["preview"] == "hi"
    assert plain.collapse_key == chat.replace("-", "") and len(plain.collapse_key) == 32
