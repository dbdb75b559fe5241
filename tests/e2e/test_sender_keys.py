"""Sender Keys (client/e2e/sender_keys.py), the key store and safety numbers: pure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from client.e2e.keystore import KeyStore, KeyStoreLocked
from client.e2e.safety import safety_number
from client.e2e.sender_keys import OwnSenderKey, PeerSenderKey
from client.e2e.sessions import SessionError

CHAT, ALICE, DEVICE = "c1", "alice", "d1"


def test_group_messages_decrypt_in_any_order_once_and_only_with_the_key() -> None:
    own = OwnSenderKey.new()
    peer = PeerSenderKey.from_distribution(own.distribution(CHAT))
    sent = [own.encrypt(CHAT, ALICE, DEVICE, f"g{i}".encode()) for i in range(6)]
    for i in (3, 0, 5, 2, 1):  # 4 is lost
        wire = json.loads(sent[i])
        assert peer.decrypt(CHAT, ALICE, DEVICE, own.key_id, wire) == f"g{i}".encode()
    with pytest.raises(SessionError):
        peer.decrypt(CHAT, ALICE, DEVICE, own.key_id, json.loads(sent[0]))
    # The state survives a round trip through the key store's JSON.
    peer = PeerSenderKey.from_json(json.loads(json.dumps(peer.to_json())))
    assert peer.decrypt(CHAT, ALICE, DEVICE, own.key_id, json.loads(sent[4])) == b"g4"


def test_a_member_holding_the_chain_key_cannot_forge_another_sender() -> None:
    own = OwnSenderKey.new()
    peer = PeerSenderKey.from_distribution(own.distribution(CHAT))
    forger = OwnSenderKey(own.key_id, own.chain_key, own.step, OwnSenderKey.new().signing)
    wire = json.loads(forger.encrypt(CHAT, ALICE, DEVICE, b"forged"))
    with pytest.raises(SessionError):
        peer.decrypt(CHAT, ALICE, DEVICE, own.key_id, wire)
    # Nor replay a message under another chat's or sender's name.
    real = json.loads(own.encrypt(CHAT, ALICE, DEVICE, b"real"))
    with pytest.raises(SessionError):
        peer.decrypt("other-chat", ALICE, DEVICE, own.key_id, real)


def test_a_removed_member_cannot_read_after_the_rotation() -> None:
    before = OwnSenderKey.new()
    removed = PeerSenderKey.from_distribution(before.distribution(CHAT))
    wire = json.loads(before.encrypt(CHAT, ALICE, DEVICE, b"while a member"))
    assert removed.decrypt(CHAT, ALICE, DEVICE, before.key_id, wire) == b"while a member"
    after = OwnSenderKey.new()  # rotated, handed only to the remaining members
    later = json.loads(after.encrypt(CHAT, ALICE, DEVICE, b"after removal"))
    with pytest.raises(SessionError):
        removed.decrypt(CHAT, ALICE, DEVICE, after.key_id, later)


def test_the_key_store_is_encrypted_and_refuses_a_wrong_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    assert KeyStore(path, "right horse").load() is None
    KeyStore(path, "right horse").save({"secret": "s3cr3t-canary"})
    assert "s3cr3t-canary" not in path.read_text()
    assert path.stat().st_mode & 0o777 == 0o600
    store = KeyStore(path, "right horse")
    assert store.load() == {"secret": "s3cr3t-canary"}
    store.save({"secret": "changed"})  # the same key, a new nonce
    assert KeyStore(path, "right horse").load() == {"secret": "changed"}
    with pytest.raises(KeyStoreLocked):
        KeyStore(path, "wrong horse").load()
    record = json.loads(path.read_text())
    record["ciphertext"] = record["ciphertext"][:-8] + "AAAAAAA="
    path.write_text(json.dumps(record))
    with pytest.raises(KeyStoreLocked):
        KeyStore(path, "right horse").load()


def test_safety_numbers_match_on_both_sides_and_change_with_a_key() -> None:
    a, b, c = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32
    number = safety_number("u1", [a], "u2", [b])
    assert number == safety_number("u2", [b], "u1", [a])
    assert len(number.replace(" ", "")) == 60 and number.replace(" ", "").isdigit()
    assert safety_number("u1", [a], "u2", [c]) != number
    assert safety_number("u1", [a], "u2", [b, c]) != number  # a new device shows too
