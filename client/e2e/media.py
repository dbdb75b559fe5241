"""Encrypted media: a file encrypted with a fresh key before upload (docs/e2e.md).

The object store (and any CDN in front of it) holds only `nonce || AES-256-GCM(key,
nonce, file)`; the key, the plaintext's and the ciphertext's SHA-256 travel inside the
end-to-end encrypted message. The receiver checks the ciphertext's hash before
decrypting and the plaintext's after.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from client.e2e.sessions import SessionError, b64, unb64

MEDIA_AAD = b"parley-media-v1"


def encrypt_file(data: bytes) -> tuple[bytes, dict[str, Any]]:
    """The bytes to upload, and what the message carries to open them."""
    key, nonce = AESGCM.generate_key(256), secrets.token_bytes(12)
    sealed = nonce + AESGCM(key).encrypt(nonce, data, MEDIA_AAD)
    return sealed, {
        "key": b64(key),
        "sha256_plain": hashlib.sha256(data).hexdigest(),
        "sha256_cipher": hashlib.sha256(sealed).hexdigest(),
        "plain_size": len(data),
    }


def decrypt_file(sealed: bytes, info: dict[str, Any]) -> bytes:
    """The file, or `SessionError` when the bytes are not what the message says."""
    if hashlib.sha256(sealed).hexdigest() != info["sha256_cipher"]:
        raise SessionError("the downloaded file is not the one sent")
    try:
        data = AESGCM(unb64(info["key"])).decrypt(sealed[:12], sealed[12:], MEDIA_AAD)
    except InvalidTag:
        raise SessionError("the file does not decrypt") from None
    if hashlib.sha256(data).hexdigest() != info["sha256_plain"]:
        raise SessionError("the decrypted file is not the one sent")
    return data
