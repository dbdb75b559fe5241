"""Group messages with Sender Keys: each message encrypted once, signed, fanned out.

Each sending device of a group holds a sender key: an id, a chain key and an Ed25519
signing key. It hands (id, chain key at its current step, the signing key's public
half) to every member device over the pairwise sessions (`distribution`). A message:

    message_key = HMAC-SHA256(chain_key, 0x01); chain_key = HMAC-SHA256(chain_key, 0x02)
    key, nonce = HKDF-SHA256(message_key, info="parley-sender-key")[:32], [32:44]
    ciphertext = AES-256-GCM(key, nonce, plaintext, aad = header)
    signature = Ed25519(signing key, header || ciphertext)

with header = {chat, sender user, sender device, key id, step}. A receiver checks the
signature first (a member who holds the chain key still cannot forge another's
messages), then steps the chain; keys of skipped steps are kept, at most `MAX_SKIPPED`
per sender key, for late messages. When a member leaves or is removed, every remaining
sender makes a new sender key and hands it only to the remaining members' devices, so
the one who left holds no key for what follows (`docs/e2e.md`).

Built on `cryptography` alone: no package here implements Sender Keys, and vodozemac's
Megolm has no Python binding in the pip cache.
"""

from __future__ import annotations

import hmac
import json
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from client.e2e.sessions import SessionError, b64, unb64

MAX_SKIP = 200
MAX_SKIPPED = 1000


def _step(chain_key: bytes) -> tuple[bytes, bytes]:
    """(message key, next chain key)."""
    return (
        hmac.new(chain_key, b"\x01", sha256).digest(),
        hmac.new(chain_key, b"\x02", sha256).digest(),
    )


def _cipher(message_key: bytes) -> tuple[AESGCM, bytes]:
    out = HKDF(hashes.SHA256(), 44, salt=None, info=b"parley-sender-key").derive(message_key)
    return AESGCM(out[:32]), out[32:]


def _header(chat_id: str, user: str, device: str, key_id: int, step: int) -> bytes:
    return json.dumps([chat_id, user, device, key_id, step], separators=(",", ":")).encode()


@dataclass
class OwnSenderKey:
    """The sender key this device encrypts a group's messages with."""

    key_id: int
    chain_key: bytes
    step: int
    signing: Ed25519PrivateKey

    @classmethod
    def new(cls) -> OwnSenderKey:
        return cls(secrets.randbits(31), secrets.token_bytes(32), 0, Ed25519PrivateKey.generate())

    def distribution(self, chat_id: str) -> dict[str, Any]:
        """What each member device gets over its pairwise session."""
        public = self.signing.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return {
            "type": "sender_key",
            "chat_id": chat_id,
            "key_id": self.key_id,
            "step": self.step,
            "chain_key": b64(self.chain_key),
            "signing_key": b64(public),
        }

    def encrypt(self, chat_id: str, user: str, device: str, plaintext: bytes) -> bytes:
        message_key, self.chain_key = _step(self.chain_key)
        step, self.step = self.step, self.step + 1
        header = _header(chat_id, user, device, self.key_id, step)
        aead, nonce = _cipher(message_key)
        ciphertext = aead.encrypt(nonce, plaintext, header)
        signature = self.signing.sign(header + ciphertext)
        wire = {"v": 1, "kid": self.key_id, "n": step, "ct": b64(ciphertext), "sig": b64(signature)}
        return json.dumps(wire, separators=(",", ":")).encode()

    def to_json(self) -> dict[str, Any]:
        raw = self.signing.private_bytes_raw()
        return {"id": self.key_id, "ck": b64(self.chain_key), "n": self.step, "sk": b64(raw)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OwnSenderKey:
        signing = Ed25519PrivateKey.from_private_bytes(unb64(data["sk"]))
        return cls(int(data["id"]), unb64(data["ck"]), int(data["n"]), signing)


@dataclass
class PeerSenderKey:
    """Another device's sender key, as its distribution handed it to us."""

    chain_key: bytes
    step: int
    verify_key: bytes
    skipped: OrderedDict[int, bytes] = field(default_factory=OrderedDict)

    @classmethod
    def from_distribution(cls, message: dict[str, Any]) -> PeerSenderKey:
        return cls(unb64(message["chain_key"]), int(message["step"]), unb64(message["signing_key"]))

    def decrypt(
        self, chat_id: str, user: str, device: str, key_id: int, wire: dict[str, Any]
    ) -> bytes:
        step = int(wire["n"])
        header = _header(chat_id, user, device, key_id, step)
        ciphertext = unb64(wire["ct"])
        try:
            Ed25519PublicKey.from_public_bytes(self.verify_key).verify(
                unb64(wire["sig"]), header + ciphertext
            )
        except InvalidSignature:
            raise SessionError("bad group message signature") from None
        message_key = self._key_for(step)
        aead, nonce = _cipher(message_key)
        try:
            return aead.decrypt(nonce, ciphertext, header)
        except InvalidTag:
            raise SessionError("group message does not decrypt") from None

    def _key_for(self, step: int) -> bytes:
        if step < self.step:
            key = self.skipped.pop(step, None)
            if key is None:
                raise SessionError("group message already read, or too old")
            return key
        if step - self.step > MAX_SKIP:
            raise SessionError("group message too far ahead")
        while self.step < step:
            skipped_key, self.chain_key = _step(self.chain_key)
            self.skipped[self.step] = skipped_key
            self.step += 1
            while len(self.skipped) > MAX_SKIPPED:
                self.skipped.popitem(last=False)
        key, self.chain_key = _step(self.chain_key)
        self.step += 1
        return key

    def to_json(self) -> dict[str, Any]:
        return {
            "ck": b64(self.chain_key),
            "n": self.step,
            "vk": b64(self.verify_key),
            "skipped": [[n, b64(k)] for n, k in self.skipped.items()],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PeerSenderKey:
        skipped = OrderedDict((int(n), unb64(k)) for n, k in data["skipped"])
        return cls(unb64(data["ck"]), int(data["n"]), unb64(data["vk"]), skipped)


def group_wire(raw: bytes) -> dict[str, Any]:
    """The fields of a group message, or `SessionError`."""
    try:
        wire = json.loads(raw)
        if not isinstance(wire, dict) or not all(k in wire for k in ("kid", "n", "ct", "sig")):
            raise ValueError("fields")
        return wire
    except ValueError:
        raise SessionError("not a group message") from None
