"""Pairwise sessions (client/e2e/sessions.py): X3DH then the Double Ratchet between two
devices, with the server's bundle format (key ids), out of order, lost, bounded."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client.e2e.sessions import MAX_SKIP, Device, Envelope, Session, SessionError


def bundle_of(device: Device, with_prekey: bool = True) -> dict[str, Any]:
    """The bundle the server would hand out for `device` (`/v1/users/{id}/keys`)."""
    body = device.upload_body()
    prekey = body["one_time_prekeys"][0] if with_prekey else None
    return {
        "device_id": "d",
        "identity_key": body["identity_key"],
        "signed_prekey": body["signed_prekey"],
        "one_time_prekey": prekey,
    }


async def started() -> tuple[Device, Device, Session]:
    alice, bob = Device.create(), Device.create()
    return alice, bob, await alice.start_session(bundle_of(bob))


async def test_a_first_message_opens_the_session_and_answers_flow_back() -> None:
    alice, bob, to_bob = await started()
    first = Envelope.decode(await to_bob.encrypt(b"hello bob"))
    assert first.prekey is not None and first.prekey["opk_id"] is not None
    to_alice, plain = await bob.open_prekey_message(first)
    assert plain == b"hello bob"
    assert to_alice.peer_identity == alice.identity_key
    answer = Envelope.decode(await to_alice.encrypt(b"hi alice"))
    assert answer.prekey is None
    assert await to_bob.decrypt(answer) == b"hi alice"
    # Once answered, alice's messages no longer carry the X3DH header.
    assert Envelope.decode(await to_bob.encrypt(b"again")).prekey is None


async def test_the_one_time_prekey_is_used_once_and_only_when_the_message_decrypts() -> None:
    _alice, bob, to_bob = await started()
    first = Envelope.decode(await to_bob.encrypt(b"real"))
    held = len(bob.state.bundle.pre_keys)
    forged = Envelope(first.ratchet_pub, 0, 1, b"\x00" * 48, first.prekey)
    with pytest.raises(SessionError):
        await bob.open_prekey_message(forged)
    assert len(bob.state.bundle.pre_keys) == held  # a forgery costs no prekey
    _, plain = await bob.open_prekey_message(first)
    assert plain == b"real"
    assert len(bob.state.bundle.pre_keys) == held - 1
    with pytest.raises(SessionError):  # the same first message again: its prekey is gone
        await bob.open_prekey_message(first)


async def test_a_bundle_without_a_one_time_prekey_still_opens_a_session() -> None:
    alice, bob = Device.create(), Device.create()
    to_bob = await alice.start_session(bundle_of(bob, with_prekey=False))
    first = Envelope.decode(await to_bob.encrypt(b"no prekey left"))
    assert first.prekey is not None and first.prekey["opk_id"] is None
    _, plain = await bob.open_prekey_message(first)
    assert plain == b"no prekey left"


async def test_a_bad_signed_prekey_signature_is_refused() -> None:
    alice, bob = Device.create(), Device.create()
    bundle = bundle_of(bob)
    bundle["signed_prekey"] = {**bundle["signed_prekey"], "signature": "A" * 86 + "=="}
    with pytest.raises(SessionError):
        await alice.start_session(bundle)


async def test_an_old_signed_prekey_still_opens_first_messages_after_rotation() -> None:
    alice, bob = Device.create(), Device.create()
    to_bob = await alice.start_session(bundle_of(bob))
    bob.rotate_signed_prekey()
    first = Envelope.decode(await to_bob.encrypt(b"made before the rotation"))
    _, plain = await bob.open_prekey_message(first)
    assert plain == b"made before the rotation"


async def test_only_new_one_time_prekeys_are_uploaded() -> None:
    device = Device.create()
    body = device.upload_body()
    assert len(body["one_time_prekeys"]) == 100
    device.mark_uploaded(body)
    assert device.upload_body()["one_time_prekeys"] == []
    device.refill(left_on_server=10)
    again = device.upload_body()["one_time_prekeys"]
    assert len(again) == 90
    ids = [k["key_id"] for k in body["one_time_prekeys"] + again]
    assert len(set(ids)) == len(ids)


async def test_the_state_survives_serialisation() -> None:
    _alice, bob, to_bob = await started()
    first = Envelope.decode(await to_bob.encrypt(b"one"))
    bob = Device.from_json(bob.to_json())
    to_alice, _ = await bob.open_prekey_message(first)
    to_alice = Session.from_json(to_alice.to_json())
    to_bob = Session.from_json(to_bob.to_json())
    assert await to_bob.decrypt(Envelope.decode(await to_alice.encrypt(b"two"))) == b"two"


@settings(max_examples=15, deadline=None)
@given(st.integers(min_value=2, max_value=25), st.randoms(use_true_random=False))
async def test_out_of_order_and_lost_messages_within_the_window(
    count: int, rnd: random.Random
) -> None:
    _, bob, to_bob = await started()
    sent = [await to_bob.encrypt(f"m{i}".encode()) for i in range(count)]
    lost = rnd.randrange(count)
    order = [i for i in range(count) if i != lost]
    rnd.shuffle(order)
    to_alice: Session | None = None
    for i in order:
        envelope = Envelope.decode(sent[i])
        if to_alice is None:
            to_alice, plain = await bob.open_prekey_message(envelope)
        else:
            plain = await to_alice.decrypt(envelope)
        assert plain == f"m{i}".encode()
    assert to_alice is not None
    with pytest.raises(SessionError):  # nothing decrypts twice
        await to_alice.decrypt(Envelope.decode(sent[order[0]]))


async def test_messages_beyond_the_skip_window_are_refused() -> None:
    _, bob, to_bob = await started()
    to_alice, _ = await bob.open_prekey_message(Envelope.decode(await to_bob.encrypt(b"0")))
    for _ in range(MAX_SKIP + 1):
        await to_bob.encrypt(b"lost")
    with pytest.raises(SessionError):
        await to_alice.decrypt(Envelope.decode(await to_bob.encrypt(b"too far")))
