"""A device's secrets, persisted in one file encrypted at rest with a passphrase.

The file is `{"v": 1, "salt", "nonce", "ciphertext"}` (base64): the key is scrypt of the
passphrase (n=2^15, r=8, p=1: about 32 MiB and 0.1 s here, the cost an attacker pays per
guess), the ciphertext AES-256-GCM of the store's JSON, with the file's format line as
associated data. A wrong passphrase or a changed file is `KeyStoreLocked`, never garbage.
Written to a temporary file and renamed, so a crash leaves the old store or the new one.
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


def save_store(path: Path, passphrase: str, state: dict[str, Any]) -> None:
    """Encrypt `state` (JSON-serialisable) with the passphrase into `path`."""
    salt, nonce = secrets.token_bytes(16), secrets.token_bytes(12)
    sealed = AESGCM(_key(passphrase, salt)).encrypt(nonce, json.dumps(state).encode(), FORMAT)
    record = {
        "v": 1,
        "salt": base64.b64encode(salt).decode(),
        "nonce": base64.b64encode(nonce).decode(),
        "ciphertext": base64.b64encode(sealed).decode(),
    }
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps(record))
    os.chmod(temporary, 0o600)
    temporary.replace(path)


def load_store(path: Path, passphrase: str) -> dict[str, Any]:
    """The state saved in `path`; `KeyStoreLocked` for a wrong passphrase or a changed file."""
    record = json.loads(path.read_text())
    salt, nonce = base64.b64decode(record["salt"]), base64.b64decode(record["nonce"])
    try:
        plain = AESGCM(_key(passphrase, salt)).decrypt(
            nonce, base64.b64decode(record["ciphertext"]), FORMAT
        )
    except InvalidTag:
        raise KeyStoreLocked("wrong passphrase, or the key store was changed") from None
    state: dict[str, Any] = json.loads(plain)
    return state
