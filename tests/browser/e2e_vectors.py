"""Known-answer vectors from the Python client's end-to-end encryption, for the web
client's (commands/static/e2e/) to reproduce byte for byte (`e2e_kat.js`).

Everything random in the Python client comes, while these are made, from a seeded
generator, logged per party: the web client replays each party with the same keys and
must write the very same envelopes, group messages and files, and read the others'.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import random
from collections.abc import Iterator
from typing import Any
from unittest import mock

import x3dh.base_state
import xeddsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from doubleratchet.recommended.diffie_hellman_ratchet_curve25519 import DiffieHellmanRatchet

from client.e2e import media, sessions
from client.e2e.safety import safety_number
from client.e2e.sender_keys import OwnSenderKey, PeerSenderKey

TRICKY_TEXT = 'héllo "q" \\ \n\t \x7f \x01 😀 </script> 中文 ü'


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class _Randomness:
    """Seeded bytes, logged per party (the web client replays a party from its log)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.party = "setup"
        self.log: dict[str, list[str]] = {}

    def token_bytes(self, n: int) -> bytes:
        data = self.rng.randbytes(n)
        self.log.setdefault(self.party, []).append(b64(data))
        return data

    @staticmethod
    def choice(items: list[bytes]) -> bytes:
        return sorted(items)[0]

    @contextlib.contextmanager
    def acting(self, party: str) -> Iterator[None]:
        before, self.party = self.party, party
        try:
            yield
        finally:
            self.party = before


@contextlib.contextmanager
def _seeded(randomness: _Randomness) -> Iterator[None]:
    class SeededRatchet(DiffieHellmanRatchet):
        @staticmethod
        def _generate_priv() -> bytes:
            return randomness.token_bytes(32)

    with (
        mock.patch.object(x3dh.base_state, "secrets", randomness),
        mock.patch.dict(sessions.RATCHET_PARAMS, diffie_hellman_ratchet_class=SeededRatchet),
    ):
        yield


def _secrets(device: sessions.Device, log: list[str]) -> dict[str, Any]:
    """What the web client needs to act as this Python device: its identity seed, its
    signed prekey with id and signature, its one-time prekeys with ids (from the log:
    seed, signed prekey, then the one-time prekeys, in the order they were made)."""
    seed, spk, *opks = (base64.b64decode(x) for x in log)
    body = device.upload_body()
    return {
        "identity_seed": b64(seed),
        "identity_key": body["identity_key"],
        "signed_prekey": {**body["signed_prekey"], "private": b64(spk)},
        "one_time_prekeys": [
            {
                "key_id": device.ids["opk"][b64(xeddsa.priv_to_curve25519_pub(k))],
                "private": b64(k),
            }
            for k in opks
        ],
        "next_id": device.ids["next"],
    }


def _bundle(device: sessions.Device, with_one_time: bool) -> dict[str, Any]:
    body = device.upload_body()
    return {
        "identity_key": body["identity_key"],
        "signed_prekey": body["signed_prekey"],
        "one_time_prekey": body["one_time_prekeys"][0] if with_one_time else None,
    }


async def _conversation(seed: int, with_one_time: bool) -> dict[str, Any]:
    """Alice starts a session with Bob's bundle; they talk with turns, one message late
    and one never read; every step recorded with its bytes."""
    r = _Randomness(seed)
    steps: list[dict[str, Any]] = []
    with _seeded(r):
        with r.acting("bob_keys"):
            bob = sessions.Device.create()
        with r.acting("alice_keys"):
            alice = sessions.Device.create()
        bundle = _bundle(bob, with_one_time)
        sessions_of: dict[str, sessions.Session] = {}
        with r.acting("alice"):
            sessions_of["alice"] = await alice.start_session(bundle)

        async def send(who: str, text: str) -> str:
            plain = json.dumps({"type": "text", "text": text}).encode()
            with r.acting(who):
                wire = json.loads(await sessions_of[who].encrypt(plain))
            wire["sd"] = f"{who}-device"
            data = json.dumps(wire).encode()
            steps.append({"who": who, "op": "encrypt", "plain": b64(plain), "wire": b64(data)})
            return b64(data)

        async def read(who: str, wire_b64: str) -> None:
            wire = json.loads(base64.b64decode(wire_b64))
            envelope = sessions.Envelope.decode(json.dumps(wire).encode())
            with r.acting(who):
                if who not in sessions_of:
                    sessions_of[who], plain = await bob.open_prekey_message(envelope)
                else:
                    plain = await sessions_of[who].decrypt(envelope)
            steps.append({"who": who, "op": "decrypt", "wire": wire_b64, "plain": b64(plain)})

        a1 = await send("alice", "first, opens the session")
        a2 = await send("alice", "second: read late")
        a3 = await send("alice", TRICKY_TEXT)
        a4 = await send("alice", "fourth: never read")
        await read("bob", a1)
        await read("bob", a3)
        b1 = await send("bob", "bob answers")
        b2 = await send("bob", "bob again")
        await read("alice", b2)
        await read("alice", b1)
        a5 = await send("alice", "alice after the turn")
        await read("bob", a5)
        await read("bob", a2)
        b3 = await send("bob", "bob's second turn")
        await read("alice", b3)
        del a4
    return {
        "bob": _secrets(bob, r.log["bob_keys"]),
        "alice": _secrets(alice, r.log["alice_keys"]),
        "bundle": bundle,
        "randomness": {p: r.log.get(p, []) for p in ("alice", "bob")},
        "steps": steps,
    }


def _sender_keys(seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    chain, signing_seed, key_id = rng.randbytes(32), rng.randbytes(32), rng.getrandbits(31)
    own = OwnSenderKey(key_id, chain, 0, Ed25519PrivateKey.from_private_bytes(signing_seed))
    chat, user = "9b0d6f43-3c31-4a54-9f3b-6c1f5d0a2e11", "7c1e2d3f-0000-4000-8000-00000000abcd"
    device = "tablet-ü"  # not ASCII: the signed header is JSON with \u escapes
    distribution = own.distribution(chat)
    messages = []
    for text in ("one", TRICKY_TEXT, "three", "four"):
        plain = json.dumps({"type": "text", "text": text}).encode()
        wire = json.loads(own.encrypt(chat, user, device, plain))
        wire["sd"] = device
        messages.append({"plain": b64(plain), "wire": b64(json.dumps(wire).encode())})
    # Python reads them out of order with one lost: the web client must too.
    peer = PeerSenderKey.from_distribution(distribution)
    for i in (2, 0, 3):
        wire = json.loads(base64.b64decode(messages[i]["wire"]))
        assert peer.decrypt(chat, user, device, key_id, wire) == base64.b64decode(
            messages[i]["plain"]
        )
    return {
        "chat_id": chat,
        "user": user,
        "device": device,
        "key_id": key_id,
        "chain_key": b64(chain),
        "signing_seed": b64(signing_seed),
        "distribution": b64(json.dumps(distribution).encode()),
        "messages": messages,
    }


def _media(seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    key, nonce, data = rng.randbytes(32), rng.randbytes(12), rng.randbytes(3000)

    class Fixed:
        @staticmethod
        def token_bytes(n: int) -> bytes:
            return nonce

    class FixedKey:
        """AES-GCM whose `generate_key` gives the vector's key."""

        def __new__(cls, k: bytes) -> Any:
            return AESGCM(k)

        @staticmethod
        def generate_key(bit_length: int) -> bytes:
            return key

    with mock.patch.object(media, "secrets", Fixed), mock.patch.object(media, "AESGCM", FixedKey):
        sealed, info = media.encrypt_file(data)
    assert media.decrypt_file(sealed, info) == data
    return {
        "key": b64(key),
        "nonce": b64(nonce),
        "data": b64(data),
        "sealed": b64(sealed),
        "info": info,
    }


def _safety(seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    a, b = "0f5e7a4c-1111-4000-8000-000000000001", "0a1b2c3d-2222-4000-8000-000000000002"
    keys_a, keys_b = [rng.randbytes(32), rng.randbytes(32)], [rng.randbytes(32)]
    return {
        "user_a": a,
        "keys_a": [b64(k) for k in keys_a],
        "user_b": b,
        "keys_b": [b64(k) for k in keys_b],
        "number": safety_number(a, keys_a, b, keys_b),
    }


def vectors(seed: int = 23) -> dict[str, Any]:
    """Every vector, from this seed."""
    sample = {"type": "media", "caption": TRICKY_TEXT, "n": 7, "list": [1, "x", None, True]}
    return {
        "conversation": asyncio.run(_conversation(seed, with_one_time=True)),
        "conversation_without_one_time_prekey": asyncio.run(_conversation(seed + 1, False)),
        "sender_keys": _sender_keys(seed),
        "media": _media(seed),
        "safety": _safety(seed),
        "json": {
            "value": sample,
            "default": json.dumps(sample),
            "compact": json.dumps(sample, separators=(",", ":")),
        },
        "sha256_of_tricky": hashlib.sha256(TRICKY_TEXT.encode()).hexdigest(),
    }


if __name__ == "__main__":
    print(json.dumps(vectors(), indent=1))
