"""Encrypted chats through the real stack (docs/e2e.md): Python client to Python client,
1:1 and group, two devices per user, a device offline for a while, a message late and
one lost, a stale device list, a removed group member."""

from __future__ import annotations

import base64
import contextlib
import json
import time
import uuid
from collections.abc import Callable

import pytest

from client import CommandFailed
from client.e2e import KeyStoreLocked, SecureChat
from tests.e2e.conftest import PASSPHRASE, E2EStack


async def decrypted(device: SecureChat, done: Callable[[], bool]) -> None:
    """Decrypt what the device holds until `done`, waiting for more frames in between,
    up to a deadline."""
    deadline = time.monotonic() + 30
    while True:
        await device.read()
        if done() or time.monotonic() > deadline:
            return
        with contextlib.suppress(TimeoutError):
            await device.chat.wait_until(more_frames(device, len(device.chat.frames)), 1)


async def received(device: SecureChat, chat_id: str, texts: list[str]) -> None:
    """Wait until the device holds and decrypts exactly `texts` in that chat."""
    await decrypted(device, lambda: device.texts(chat_id) == texts)
    assert device.texts(chat_id) == texts, device.failed


def more_frames(device: SecureChat, seen: int) -> Callable[[], bool]:
    return lambda: len(device.chat.frames) > seen


def held(device: SecureChat, chat_id: str) -> Callable[[], int]:
    return lambda: len(device.chat.chats[chat_id].messages)


async def test_one_to_one_with_two_devices_each_and_one_offline(e2e_stack: E2EStack) -> None:
    alice = await e2e_stack.account("alice")
    bob = await e2e_stack.account("bob")
    alice_phone = await e2e_stack.device(alice)
    alice_laptop = await e2e_stack.device(await e2e_stack.other_device(alice, "laptop"))
    bob_phone = await e2e_stack.device(bob)
    bob_tablet = await e2e_stack.device(
        await e2e_stack.other_device(bob, "tablet"), connect=False
    )  # keys published, then offline

    ack = await alice_phone.send_text(bob.user_id, "hello bob, from alice's phone")
    chat_id = ack.chat_id
    await alice_phone.send_text(bob.user_id, "second")
    await received(bob_phone, chat_id, ["hello bob, from alice's phone", "second"])
    # alice's other device got its own envelope of her messages.
    await received(alice_laptop, chat_id, ["hello bob, from alice's phone", "second"])

    await bob_phone.send_text(alice.user_id, "hi alice")
    texts = ["hello bob, from alice's phone", "second", "hi alice"]
    await received(alice_phone, chat_id, texts)
    await received(alice_laptop, chat_id, texts)

    # What the server pushed to bob's phone was its own envelope, not the others'.
    pushed = [f for f in bob_phone.chat.frames if f.get("type") == "message"]
    assert all(f["envelope"] is True and f["kind"] == "ciphertext" for f in pushed)
    assert all("hello" not in base64.b64decode(f["body"]).decode() for f in pushed)

    # The tablet was offline: it syncs, loses one message, and gets one late.
    await alice_laptop.send_text(bob.user_id, "third, from the laptop")
    await alice_phone.send_text(bob.user_id, "fourth")
    await alice_phone.send_text(bob.user_id, "fifth")
    everything = [*texts, "third, from the laptop", "fourth", "fifth"]
    await received(bob_phone, chat_id, everything)
    await bob_tablet.chat.connect()
    # A device new to the chat asks for it from the start (bob's phone moved bob's
    # delivered cursor, which is where a sync without a cursor starts).
    await bob_tablet.chat.request({"type": "sync", "cursors": {chat_id: 0}})
    await bob_tablet.chat.wait_until(lambda: held(bob_tablet, chat_id)() == 6)
    messages = bob_tablet.chat.chats[chat_id].messages
    late, lost = messages.pop(2), messages.pop(6)  # "second" comes late, "fifth" never
    await bob_tablet.read()
    own = "hi alice"  # bob's own message from the phone, with an envelope for the tablet
    assert bob_tablet.texts(chat_id) == [
        "hello bob, from alice's phone",
        own,
        "third, from the laptop",
        "fourth",
    ]
    messages[2] = late
    await bob_tablet.read()
    assert bob_tablet.texts(chat_id) == everything[:5]
    assert lost["body"] and bob_tablet.failed.get(chat_id, {}) == {}

    # The key store survives a restart of the app, and is useless without the passphrase.
    reopened = SecureChat(bob_tablet.chat, bob_tablet.path, PASSPHRASE)
    assert reopened.texts(chat_id) == everything[:5]
    assert "fourth" not in bob_tablet.path.read_text()
    with pytest.raises(KeyStoreLocked):
        SecureChat(bob_tablet.chat, bob_tablet.path, "a guess")

    # Both sides compute the same safety number.
    assert alice_phone.safety_number(bob.user_id) == bob_phone.safety_number(alice.user_id)
    for device in (alice_phone, alice_laptop, bob_phone, bob_tablet):
        await device.chat.close()


async def test_a_stale_device_list_is_refused_then_sent_again_with_the_same_local_id(
    e2e_stack: E2EStack,
) -> None:
    alice = await e2e_stack.account("alice")
    bob = await e2e_stack.account("bob")
    alice_phone = await e2e_stack.device(alice)
    bob_phone = await e2e_stack.device(bob)
    first = await alice_phone.send_text(bob.user_id, "before the new device")

    # bob adds a device; alice's list is now stale.
    bob_desk = await e2e_stack.device(await e2e_stack.other_device(bob, "desk"))
    fields = await alice_phone._envelopes(bob.user_id, {"type": "text", "text": "x"})
    frame = {"type": "send", "local_id": "stale-1", "to": bob.user_id, **fields}
    with pytest.raises(CommandFailed) as refused:
        await alice_phone.chat.request(frame)
    assert refused.value.code == "stale_devices"
    listed = refused.value.frame["devices"][bob.user_id]
    assert listed["device_ids"] == ["d1", "desk"]

    # The client refreshes and sends again with the same local id: one message.
    ack = await alice_phone.send_text(bob.user_id, "after the new device", local_id="stale-1")
    assert ack.seq == first.seq + 1 and not ack.duplicate
    again = await alice_phone.send_text(bob.user_id, "after the new device", local_id="stale-1")
    assert again.duplicate and again.seq == ack.seq
    await received(bob_desk, first.chat_id, ["after the new device"])
    await received(bob_phone, first.chat_id, ["before the new device", "after the new device"])

    # A device that goes away is stale too.
    bob_desk._http("DELETE", "/v1/me/keys")
    await alice_phone.send_text(bob.user_id, "desk gone")
    assert sorted(alice_phone.lists[bob.user_id]["devices"]) == ["d1"]

    # Envelopes are for ciphertext only, and come instead of a body.
    for wrong in ({"kind": "text"}, {"body": "eA=="}, {"text": "x"}):
        with pytest.raises(CommandFailed) as bad_frame:
            await alice_phone.chat.request({**frame, "local_id": "w", **wrong})
        assert bad_frame.value.code == "bad_frame"
    # A plain body may not pass for envelopes.
    forged = base64.b64encode(b"\x00parley-envelopes-v1\n{}").decode()
    with pytest.raises(CommandFailed) as bad:
        await alice_phone.chat.request(
            {
                "type": "send",
                "local_id": "f",
                "to": bob.user_id,
                "kind": "ciphertext",
                "body": forged,
            }
        )
    assert bad.value.code == "invalid_body"
    for device in (alice_phone, bob_phone, bob_desk):
        await device.chat.close()


async def test_groups_with_sender_keys_and_a_removed_member(e2e_stack: E2EStack) -> None:
    alice = await e2e_stack.account("alice")
    bob = await e2e_stack.account("bob")
    carol = await e2e_stack.account("carol")
    alice_phone = await e2e_stack.device(alice)
    alice_laptop = await e2e_stack.device(await e2e_stack.other_device(alice, "laptop"))
    bob_phone = await e2e_stack.device(bob)
    carol_phone = await e2e_stack.device(carol)
    group = await alice_phone.chat.create_group("secret club", [bob.user_id, carol.user_id])
    members = [alice.user_id, bob.user_id, carol.user_id]

    await alice_phone.send_group(group, members, "welcome, all")
    await bob_phone.send_group(group, members, "thanks")
    for device in (bob_phone, carol_phone, alice_laptop):
        await received(device, group, ["welcome, all", "thanks"])
    await received(alice_phone, group, ["welcome, all", "thanks"])

    # The group message body is one ciphertext for all, and the server stored only that.
    bodies = [m["body"] for m in alice_laptop.chat.chats[group].messages.values()]
    assert len(bodies) == 2
    assert all("welcome" not in base64.b64decode(body).decode() for body in bodies)

    await alice_phone.chat.group("remove_member", group, user_id=carol.user_id)
    for device in (alice_phone, bob_phone):
        device.member_left(group)
    members = [alice.user_id, bob.user_id]
    after = await alice_phone.send_group(group, members, "carol cannot read this")
    await received(bob_phone, group, ["welcome, all", "thanks", "carol cannot read this"])
    await received(alice_laptop, group, ["welcome, all", "thanks", "carol cannot read this"])

    # Even handed the ciphertext, carol's old sender keys do not open it.
    leaked = dict(bob_phone.chat.chats[group].messages[after.seq])
    carol_phone.chat.chats[group].messages[after.seq] = leaked
    await carol_phone.read()
    assert carol_phone.texts(group) == ["welcome, all", "thanks"]
    assert str(after.seq) in carol_phone.failed[group]
    wire = json.loads(base64.b64decode(leaked["body"]))
    assert all(not key.endswith(f"/{wire['kid']}") for key in carol_phone.peer_keys)
    for device in (alice_phone, alice_laptop, bob_phone, carol_phone):
        await device.chat.close()


def unique(label: str) -> str:
    return f"canary-{label}-{uuid.uuid4().hex}"
