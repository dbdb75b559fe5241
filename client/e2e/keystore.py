"""A device's secrets, persisted in one file encrypted at rest with a passphrase.

The file is `{"v": 1, "salt", "nonce", "ciphertext"}` (base64): the key is scrypt of the
passphrase (n=2^15, r=8, p=1: 32 MiB, the cost an attacker pays per guess), the
ciphertext AES-256-GCM of the store's JSON, with the file's format line as associated
data. A wrong passphrase or a changed file is `KeyStoreLocked`, never garbage.
`KeyStore` derives the key once per salt and keeps it while the app runs: a save after
every message then costs an AES pass, not a scrypt. Written to a temporary file and
renamed, so a crash leaves the old store or the new one.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

FORMAT = b"parley-keystore-v1"
SCRYPT_N = 2**15


class KeyStoreLocked(Exception):
    """The passphrase is wrong or the file was changed."""


def _key(passphrase: str, salt: bytes) -> bytes:
    return Scrypt(salt=salt, length=32, n=SCRYPT_N, r=8, p=1).derive(passphrase.encode())


class KeyStore:
    """One device's key store file, opened with its passphrase."""

    def __init__(self, path: Path, passphrase: str) -> None:
        self.path = path
        self._passphrase = passphrase
        self._salt: bytes | None = None
        self._key = b""

    def _key_for(self, salt: bytes) -> bytes:
        if salt != self._salt:
            self._key, self._salt = _key(self._passphrase, salt), salt
        return self._key

    def load(self) -> dict[str, Any] | None:
        """The saved state (None when there is no file yet); `KeyStoreLocked` for a wrong
        passphrase or a changed file."""
        if not self.path.exists():
            return None
        record = json.loads(self.path.read_text())
        salt, nonce = base64.b64decode(record["salt"]), base64.b64decode(record["nonce"])
        try:
            plain = AESGCM(self._key_for(salt)).decrypt(
                nonce, base64.b64decode(record["ciphertext"]), FORMAT
            )
        except InvalidTag:
            self._salt = None
            raise KeyStoreLocked("wrong passphrase, or the key store was changed") from None
        state: dict[str, Any] = json.loads(plain)
        return state

    def save(self, state: dict[str, Any]) -> None:
        """Encrypt `state` (JSON-serialisable) into the file (a new nonce each time)."""
        salt = self._salt if self._salt is not None else secrets.token_bytes(16)
        nonce = secrets.token_bytes(12)
        sealed = AESGCM(self._key_for(salt)).encrypt(nonce, json.dumps(state).encode(), FORMAT)
        record = {
            "v": 1,
            "salt": base64.b64encode(salt).decode(),
            "nonce": base64.b64encode(nonce).decode(),
            "ciphertext": base64.b64encode(sealed).decode(),
        }
        temporary = self.path.with_suffix(self.path.suffix + ".tmp")
        temporary.write_text(json.dumps(record))
        os.chmod(temporary, 0o600)
        temporary.replace(self.path)
