"""Pairwise sessions: X3DH to start one with a device, the Double Ratchet after it.

Built on Syndace's `x3dh` and `doubleratchet` packages (docs/e2e.md says why), with what
they leave to the application:

- **Key ids.** Their bundle has none; the server's has (`/v1/users/{id}/keys`), and a
  first message names the signed prekey and one-time prekey it used by id. `Device`
  keeps id -> public key for its own keys, current and previous signed prekey included.
- **Passive agreement consumes the one-time prekey** before the first message is
  decrypted: `open_prekey_message` works on a copy of the X3DH state and keeps it only
  when the message decrypts, so a forged first message costs no prekey.
- **Only new one-time prekeys are uploaded**: `new_prekeys` lists those the server was
  never sent; `mark_uploaded` records them.
- **A bounded skip window**: a session keeps at most `MAX_SKIPPED` message keys of
  messages not yet seen (lost or late), and refuses to derive more than `MAX_SKIP` in
  one step; beyond that the message is undecryptable (`SessionError`).

The envelope of one message for one device (`Envelope`) is JSON; see docs/e2e.md.
"""

from __future__ import annotations

import base64
import copy
import json
from dataclasses import dataclass
from typing import Any

import x3dh
from doubleratchet import DoubleRatchet as _DoubleRatchet
from doubleratchet import EncryptedMessage
from doubleratchet import Header as RatchetHeader
from doubleratchet.recommended import HashFunction as RatchetHash
from doubleratchet.recommended import aead_aes_hmac, kdf_hkdf, kdf_separate_hmacs
from doubleratchet.recommended.diffie_hellman_ratchet_curve25519 import DiffieHellmanRatchet

INFO = b"parley-e2e-v1"
MAX_SKIP = 200
"""Message keys derived in one step for messages not yet seen (DoS bound)."""
MAX_SKIPPED = 1000
"""Message keys kept per session for lost or late messages; the oldest go first."""
PREKEY_TARGET = 100
"""One-time prekeys a device keeps on the server."""
PREKEY_LOW = 50
"""Below this many left on the server, upload new ones."""


class SessionError(Exception):
    """A message this device cannot decrypt: forged, replayed, or beyond the skip window."""


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


class _X3DHState(x3dh.State):
    def _publish_bundle(self, bundle: x3dh.Bundle) -> None:
        """Publishing is explicit (`Device.upload_body`), with key ids."""

    @staticmethod
    def _encode_public_key(key_format: x3dh.IdentityKeyFormat, pub: bytes) -> bytes:
        return pub  # every key is 32 bytes: the concatenation is unambiguous


class _RootKDF(kdf_hkdf.KDF):
    @staticmethod
    def _get_hash_function() -> RatchetHash:
        return RatchetHash.SHA_256

    @staticmethod
    def _get_info() -> bytes:
        return INFO + b" root"


class _ChainKDF(kdf_separate_hmacs.KDF):
    @staticmethod
    def _get_hash_function() -> RatchetHash:
        return RatchetHash.SHA_256


class _AEAD(aead_aes_hmac.AEAD):
    @staticmethod
    def _get_hash_function() -> RatchetHash:
        return RatchetHash.SHA_256

    @staticmethod
    def _get_info() -> bytes:
        return INFO + b" message"


class _Ratchet(_DoubleRatchet):
    @staticmethod
    def _build_associated_data(associated_data: bytes, header: RatchetHeader) -> bytes:
        return (
            len(associated_data).to_bytes(4, "big")
            + associated_data
            + header.ratchet_pub
            + header.previous_sending_chain_length.to_bytes(8, "big")
            + header.sending_chain_length.to_bytes(8, "big")
        )


RATCHET_PARAMS: dict[str, Any] = {
    "diffie_hellman_ratchet_class": DiffieHellmanRatchet,
    "root_chain_kdf": _RootKDF,
    "message_chain_kdf": _ChainKDF,
    "message_chain_constant": b"\x02\x01",
    "dos_protection_threshold": MAX_SKIP,
    "max_num_skipped_message_keys": MAX_SKIPPED,
    "aead": _AEAD,
}
X3DH_PARAMS: dict[str, Any] = {
    "identity_key_format": x3dh.IdentityKeyFormat.ED_25519,
    "hash_function": x3dh.HashFunction.SHA_256,
    "info": INFO,
    "pre_key_refill_threshold": PREKEY_LOW,
    "pre_key_refill_target": PREKEY_TARGET,
}


@dataclass(frozen=True)
class Envelope:
    """One message for one device. A first message (`prekey`) also carries what the
    recipient needs to run X3DH: the sender's identity and ephemeral keys, and the ids
    of the signed and one-time prekeys it used."""

    ratchet_pub: bytes
    previous_chain: int
    index: int
    ciphertext: bytes
    prekey: dict[str, Any] | None = None

    def encode(self) -> bytes:
        data: dict[str, Any] = {
            "v": 1,
            "dh": b64(self.ratchet_pub),
            "pn": self.previous_chain,
            "n": self.index,
            "ct": b64(self.ciphertext),
        }
        if self.prekey is not None:
            data["x3dh"] = self.prekey
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Envelope:
        try:
            data = json.loads(raw)
            return cls(
                unb64(data["dh"]),
                int(data["pn"]),
                int(data["n"]),
                unb64(data["ct"]),
                data.get("x3dh"),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise SessionError(f"not an envelope: {type(exc).__name__}") from None

    def message(self) -> EncryptedMessage:
        return EncryptedMessage(
            RatchetHeader(self.ratchet_pub, self.previous_chain, self.index), self.ciphertext
        )


def _envelope(message: EncryptedMessage) -> Envelope:
    h = message.header
    return Envelope(
        h.ratchet_pub, h.previous_sending_chain_length, h.sending_chain_length, message.ciphertext
    )


@dataclass
class Session:
    """The ratchet with one device, and the associated data X3DH gave it."""

    ratchet: _Ratchet
    associated_data: bytes
    peer_identity: bytes
    pending_prekey: dict[str, Any] | None = None
    """Until the peer answers, every message repeats the X3DH header (it may be lost)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "ratchet": self.ratchet.json,
            "ad": b64(self.associated_data),
            "peer_identity": b64(self.peer_identity),
            "pending_prekey": self.pending_prekey,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Session:
        return cls(
            _Ratchet.from_json(data["ratchet"], **RATCHET_PARAMS),
            unb64(data["ad"]),
            unb64(data["peer_identity"]),
            data.get("pending_prekey"),
        )

    async def encrypt(self, plaintext: bytes) -> bytes:
        message = await self.ratchet.encrypt_message(plaintext, self.associated_data)
        envelope = _envelope(message)
        if self.pending_prekey is not None:
            envelope = Envelope(
                envelope.ratchet_pub,
                envelope.previous_chain,
                envelope.index,
                envelope.ciphertext,
                self.pending_prekey,
            )
        return envelope.encode()

    async def decrypt(self, envelope: Envelope) -> bytes:
        try:
            plain: bytes = await self.ratchet.decrypt_message(
                envelope.message(), self.associated_data
            )
        except Exception as exc:  # the package's errors: forged, duplicate, too far ahead
            raise SessionError(type(exc).__name__) from None
        self.pending_prekey = None  # the peer has the session: it answered
        return plain


class Device:
    """This device's X3DH state (identity, signed prekey, one-time prekeys) with ids."""

    def __init__(self, state: _X3DHState, ids: dict[str, Any]) -> None:
        self.state = state
        # public key (b64) -> id, for our signed prekeys and one-time prekeys; ids of
        # one-time prekeys the server holds or held (never sent again).
        self.ids = ids

    @classmethod
    def create(cls) -> Device:
        state = _X3DHState.create(**X3DH_PARAMS)
        device = cls(state, {"spk": {}, "opk": {}, "uploaded": [], "next": 1})
        device._name_keys()
        return device

    def to_json(self) -> dict[str, Any]:
        return {"x3dh": self.state.json, "ids": self.ids}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Device:
        state, _ = _X3DHState.from_json(data["x3dh"], **X3DH_PARAMS)
        return cls(state, data["ids"])

    @property
    def identity_key(self) -> bytes:
        return bytes(self.state.bundle.identity_key)

    def _new_id(self) -> int:
        key_id = int(self.ids["next"])
        self.ids["next"] = key_id + 1
        return key_id

    def _name_keys(self) -> None:
        """Give an id to every key of ours that has none yet."""
        bundle = self.state.bundle
        for kind, keys in (("spk", [bundle.signed_pre_key]), ("opk", sorted(bundle.pre_keys))):
            for key in keys:
                self.ids[kind].setdefault(b64(key), self._new_id())

    def rotate_signed_prekey(self) -> None:
        """A new signed prekey; the previous one still opens first messages made with it."""
        self.state.rotate_signed_pre_key(force=True)
        self._name_keys()

    def upload_body(self) -> dict[str, Any]:
        """The `PUT /v1/me/keys` body: identity, signed prekey, one-time prekeys never sent."""
        self._name_keys()
        bundle = self.state.bundle
        spk = b64(bundle.signed_pre_key)
        return {
            "identity_key": b64(bundle.identity_key),
            "signed_prekey": {
                "key_id": self.ids["spk"][spk],
                "public_key": spk,
                "signature": b64(bundle.signed_pre_key_sig),
            },
            "one_time_prekeys": [
                {"key_id": self.ids["opk"][b64(key)], "public_key": b64(key)}
                for key in sorted(bundle.pre_keys)
                if b64(key) not in self.ids["uploaded"]
            ],
        }

    def mark_uploaded(self, body: dict[str, Any]) -> None:
        self.ids["uploaded"].extend(k["public_key"] for k in body["one_time_prekeys"])

    def refill(self, left_on_server: int) -> None:
        """Make new one-time prekeys when the server's pool runs low (counting those
        made here and not uploaded yet)."""
        coming = sum(1 for k in self.state.bundle.pre_keys if b64(k) not in self.ids["uploaded"])
        if left_on_server + coming < PREKEY_LOW:
            self.state.generate_pre_keys(PREKEY_TARGET - left_on_server - coming)
            self._name_keys()

    async def start_session(self, bundle: dict[str, Any]) -> Session:
        """X3DH, actively, with a device's bundle from the server (signature checked)."""
        opk = bundle.get("one_time_prekey")
        spk = bundle["signed_prekey"]
        theirs = x3dh.Bundle(
            identity_key=unb64(bundle["identity_key"]),
            signed_pre_key=unb64(spk["public_key"]),
            signed_pre_key_sig=unb64(spk["signature"]),
            pre_keys=frozenset() if opk is None else frozenset({unb64(opk["public_key"])}),
        )
        try:
            secret, ad, header = await self.state.get_shared_secret_active(
                theirs, require_pre_key=False
            )
        except x3dh.KeyAgreementException as exc:
            raise SessionError(str(exc)) from None
        ratchet, first = await _Ratchet.encrypt_initial_message(
            shared_secret=secret,
            recipient_ratchet_pub=theirs.signed_pre_key,
            message=b"",
            associated_data=ad,
            **RATCHET_PARAMS,
        )
        prekey = {
            "ik": b64(header.identity_key),
            "ek": b64(header.ephemeral_key),
            "spk_id": spk["key_id"],
            "opk_id": None if opk is None else opk["key_id"],
            # The initial (empty) message's header: the ratchet starts from it.
            "init": json.loads(_envelope(first).encode()),
        }
        return Session(ratchet, ad, theirs.identity_key, prekey)

    def _key_by_id(self, kind: str, key_id: Any) -> bytes | None:
        for key, known in self.ids[kind].items():
            if known == key_id:
                return unb64(key)
        return None

    async def open_prekey_message(self, envelope: Envelope) -> tuple[Session, bytes]:
        """X3DH, passively, from a first message; its one-time prekey is used up only if
        the message decrypts."""
        p = envelope.prekey
        assert p is not None
        spk = self._key_by_id("spk", p.get("spk_id"))
        opk = None if p.get("opk_id") is None else self._key_by_id("opk", p["opk_id"])
        if spk is None or (p.get("opk_id") is not None and opk is None):
            raise SessionError("the first message names a prekey this device does not have")
        trial = copy.deepcopy(self.state)
        try:
            header = x3dh.Header(unb64(p["ik"]), unb64(p["ek"]), spk, opk)
            secret, ad, spk_pair = await trial.get_shared_secret_passive(
                header, require_pre_key=False
            )
            init = Envelope.decode(json.dumps(p["init"]).encode())
            ratchet, _ = await _Ratchet.decrypt_initial_message(
                shared_secret=secret,
                own_ratchet_priv=spk_pair.priv,
                message=init.message(),
                associated_data=ad,
                **RATCHET_PARAMS,
            )
            session = Session(ratchet, ad, header.identity_key)
            plain = await session.decrypt(envelope)
        except (x3dh.KeyAgreementException, KeyError, ValueError) as exc:
            raise SessionError(type(exc).__name__) from None
        self.state = trial  # the prekey is gone now, and only now
        self._name_keys()
        return session, plain
