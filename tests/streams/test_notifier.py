"""Push notifications end to end: real services, a real notifier, local receivers that
verify each provider's protocol (tests/streams/push_receivers.py), clients over HTTP and
WebSockets as docs/push.md describes them."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from kafka import KafkaConsumer, TopicPartition

from client.chat import Account, ChatClient, CommandFailed, _post, register_and_login
from client.e2e import SecureChat
from infra.settings import Settings
from infra.topics import PUSH_DEAD
from projections.schema import migrate
from streams.push_status import push_status
from tests.fullstack import FullStack, full_stack
from tests.gateway.conftest import REGISTRATION_LIMITS
from tests.services import Service
from tests.streams.push_receivers import ApnsReceiver, FcmReceiver, WebPushReceiver

pytestmark = pytest.mark.slow

GRACE_S = 3.0
MAX_TRIES = 3


@dataclass
class PushStack:
    stack: FullStack
    webpush: WebPushReceiver
    fcm: FcmReceiver
    apns: ApnsReceiver
    notifier: Service
    settings: Settings  # the notifier's

    @property
    def base(self) -> str:
        return self.stack.base


@pytest.fixture(scope="module")
def push(topics: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PushStack]:
    migrate(topics)
    logs = tmp_path_factory.mktemp("push-stack")
    webpush, fcm, apns = WebPushReceiver(), FcmReceiver(), ApnsReceiver(logs)
    account_file = logs / "fcm-service-account.json"
    account_file.write_text(json.dumps(fcm.service_account))
    env = {
        **REGISTRATION_LIMITS,
        "PARLEY_WEBPUSH_SUBJECT": "mailto:ops@parley.test",
        "PARLEY_WEBPUSH_VAPID_KEY": str(logs / "vapid.pem"),
        # The receiver is on loopback over http: only its exact origin is let through.
        "PARLEY_WEBPUSH_TRUSTED_ORIGINS": webpush.origin,
        "PARLEY_FCM_SERVICE_ACCOUNT": str(account_file),
        "PARLEY_FCM_BASE_URL": fcm.origin,
        "PARLEY_APNS_KEY_PATH": str(apns.key_path),
        "PARLEY_APNS_KEY_ID": apns.key_id,
        "PARLEY_APNS_TEAM_ID": apns.team_id,
        "PARLEY_APNS_TOPIC": apns.topic,
        "PARLEY_APNS_BASE_URL": apns.base_url,
        "PARLEY_APNS_CA_FILE": str(apns.cert_path),
        "PARLEY_PUSH_GRACE_S": str(GRACE_S),
        "PARLEY_PUSH_BACKOFF_S": "0.2",
        "PARLEY_PUSH_MAX_TRIES": str(MAX_TRIES),
        "PARLEY_PUSH_CONCURRENCY": "2",
        "PARLEY_PUSH_POLL_S": "0.05",
    }
    with full_stack(topics, logs, **env) as stack:
        notifier = Service("notifier", logs / "notifier.log", stack.env).start()
        try:
            notifier.wait_for_log(r"event=notifier_ready", deadline_s=90)
            settings = topics.replace(
                push_grace_s=GRACE_S, push_max_tries=MAX_TRIES, webpush_subject="mailto:x"
            )
            yield PushStack(stack, webpush, fcm, apns, notifier, settings)
        finally:
            notifier.stop()
            webpush.stop()
            fcm.stop()
            apns.stop()


def user(push: PushStack, name: str, device: str = "phone") -> Account:
    return register_and_login(push.base, f"{name}{uuid.uuid4().hex[:8]}", device_id=device)


def webpush_device(push: PushStack, account: Account) -> str:
    """Register the account's device for Web Push; the receiver's name for it."""
    device = f"{account.username}-{account.device_id}"
    subscription = push.webpush.subscribe(device)
    answer = _post(
        push.base,
        "/v1/me/push",
        {"provider": "webpush", "subscription": subscription},
        account.access_token,
    )
    assert answer == {"registered": "webpush", "device_id": account.device_id}
    return device


async def connected(push: PushStack, account: Account, **options: Any) -> ChatClient:
    client = ChatClient(push.base, account, **options)
    await client.connect()
    return client


async def wait_for(what: str, check: Any, deadline_s: float = 60.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def settle(push: PushStack, chat_id: str, seq: int) -> None:
    """Wait until the notifier has decided about everything up to this message: it is
    projected (so it is on the log), the notifier consumed the log, no message is in its
    grace period and nothing is due."""
    async with await psycopg.AsyncConnection.connect(push.settings.pg_conninfo) as conn:

        def projected() -> Any:
            return conn.execute(
                "SELECT 1 FROM read.messages WHERE chat_id = %s AND seq = %s", (chat_id, seq)
            )

        deadline = time.monotonic() + 60
        while (await (await projected()).fetchone()) is None:
            assert time.monotonic() < deadline, "the message was never projected"
            await asyncio.sleep(0.05)
            await conn.rollback()
    while True:
        status = await asyncio.to_thread(push_status, push.settings)
        if status.settled:
            return
        assert time.monotonic() < deadline + 60, f"the notifier never settled: {status}"
        await asyncio.sleep(0.1)


def read_to_end(settings: Settings, name: str, deadline_s: float = 30.0) -> list[bytes]:
    """Every record the topic holds now: read from the start up to its end offsets (what
    was there when asked), not until a pause with nothing new."""
    topic = settings.topic(name)
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=None, enable_auto_commit=False
    )
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        values: list[bytes] = []
        deadline = time.monotonic() + deadline_s
        while any(consumer.position(tp) < ends[tp] for tp in partitions):
            assert time.monotonic() < deadline, f"{topic} not read to its end"
            for batch in consumer.poll(timeout_ms=200).values():
                values.extend(r.value for r in batch)
        return values
    finally:
        consumer.close()


def target_count(push: PushStack, account: Account) -> int:
    with psycopg.connect(push.settings.pg_conninfo) as conn:
        row = conn.execute(
            "SELECT count(*) FROM push.targets WHERE user_id = %s", (account.user_id,)
        ).fetchone()
    return int(row[0]) if row else 0


async def test_an_offline_device_gets_exactly_one_push_that_decrypts(push: PushStack) -> None:
    alice, bob = user(push, "alice"), user(push, "bob")
    _post(push.base, "/v1/me/profile", {"display_name": "Alice A."}, alice.access_token)
    device = webpush_device(push, bob)
    sender = await connected(push, alice)
    try:
        ack = await sender.send_text("hello, are you there?", to=bob.user_id)
        await wait_for("the push", lambda: push.webpush.arrivals[device])
        await settle(push, ack.chat_id, ack.seq)
    finally:
        await sender.close()
    (arrival,) = push.webpush.arrivals[device]
    assert push.webpush.rejected == []
    # No preview unless the recipient allows it; the collapse key is the chat's.
    assert arrival.payload == {
        "type": "message",
        "chat_id": ack.chat_id,
        "sender": "Alice A.",
        "count": "1",
    }
    assert arrival.collapse == ack.chat_id.replace("-", "")
    assert arrival.headers["urgency"] == "high"


async def test_a_device_that_gets_the_message_inside_the_grace_period_gets_no_push(
    push: PushStack,
) -> None:
    alice, bob = user(push, "alice"), user(push, "bob")
    device = webpush_device(push, bob)
    online = await connected(push, bob)  # acknowledges delivery as messages arrive
    sender = await connected(push, alice)
    try:
        ack = await sender.send_text("you are online", to=bob.user_id)
        await online.wait_until(lambda: online.texts(ack.chat_id) == ["you are online"])
        await settle(push, ack.chat_id, ack.seq)
    finally:
        await sender.close()
        await online.close()
    assert push.webpush.arrivals[device] == []
    assert push.webpush.attempts[device] == []


async def test_ten_messages_in_one_chat_collapse_into_one_push(push: PushStack) -> None:
    alice, bob = user(push, "alice"), user(push, "bob")
    _post(push.base, "/v1/me/push/prefs", {"previews": True}, bob.access_token)
    device = webpush_device(push, bob)
    sender = await connected(push, alice)
    try:
        started = time.monotonic()
        acks = [await sender.send_text(f"message {i}", to=bob.user_id) for i in range(10)]
        assert time.monotonic() - started < GRACE_S, "sent too slowly to fall in one grace"
        await settle(push, acks[-1].chat_id, acks[-1].seq)
    finally:
        await sender.close()
    (arrival,) = push.webpush.arrivals[device]
    assert arrival.payload["count"] == "10"
    assert arrival.payload["preview"] == "message 9"  # the newest, allowed by bob


async def test_an_encrypted_message_gives_no_preview_even_when_previews_are_on(
    push: PushStack, tmp_path: Path
) -> None:
    alice, bob = user(push, "alice"), user(push, "bob")
    _post(push.base, "/v1/me/push/prefs", {"previews": True}, bob.access_token)
    device = webpush_device(push, bob)
    SecureChat(ChatClient(push.base, bob), tmp_path / "bob", "pw").publish_keys()  # offline
    sender = await connected(push, alice)
    secure = SecureChat(sender, tmp_path / "alice", "pw")
    secure.publish_keys()
    try:
        ack = await secure.send_text(bob.user_id, "a secret no push may show")
        await wait_for("the push", lambda: push.webpush.arrivals[device])
        await settle(push, ack.chat_id, ack.seq)
    finally:
        await sender.close()
    (arrival,) = push.webpush.arrivals[device]
    assert arrival.payload == {
        "type": "message",
        "chat_id": ack.chat_id,
        "sender": alice.username,
        "count": "1",
    }


async def test_mute_do_not_disturb_blocked_senders_and_own_devices_get_no_push(
    push: PushStack,
) -> None:
    alice, bob, carol, dave = (user(push, n) for n in ("alice", "bob", "carol", "dave"))
    alice_laptop = register_and_login(push.base, alice.username, device_id="laptop")
    devices = {a.username: webpush_device(push, a) for a in (bob, carol, dave)}
    laptop = webpush_device(push, alice_laptop)
    sender = await connected(push, alice)
    try:
        muted = await sender.send_text("first", to=bob.user_id)
        _post(push.base, "/v1/me/push/prefs", {"mute": [muted.chat_id]}, bob.access_token)
        prefs = _post(push.base, "/v1/me/push/prefs", {"dnd": True}, carol.access_token)
        assert prefs == {"previews": False, "dnd": True, "muted": []}
        _post(
            push.base,
            "/v1/me/blocks",
            {"action": "block", "user_id": alice.user_id},
            dave.access_token,
        )
        await settle(push, muted.chat_id, muted.seq)
        before = {d: len(push.webpush.arrivals[d]) for d in devices.values()}
        await sender.send_text("to muted bob", chat_id=muted.chat_id)
        await sender.send_text("to carol in dnd", to=carol.user_id)
        last = await sender.send_text("to dave who blocked alice", to=dave.user_id)
        await settle(push, last.chat_id, last.seq)
    finally:
        await sender.close()
    assert {d: len(push.webpush.arrivals[d]) for d in devices.values()} == before
    assert push.webpush.arrivals[laptop] == []  # alice's own send, from her phone


async def test_a_410_removes_the_subscription(push: PushStack) -> None:
    alice, bob = user(push, "alice"), user(push, "bob")
    device = webpush_device(push, bob)
    push.webpush.answer(device, 410)
    sender = await connected(push, alice)
    try:
        ack = await sender.send_text("gone?", to=bob.user_id)
        await settle(push, ack.chat_id, ack.seq)
        assert target_count(push, bob) == 0
        again = await sender.send_text("still gone", chat_id=ack.chat_id)
        await settle(push, again.chat_id, again.seq)
    finally:
        await sender.close()
    assert len(push.webpush.attempts[device]) == 1  # nothing after the 410
    assert push.webpush.arrivals[device] == []


async def test_a_429_is_retried_after_its_retry_after(push: PushStack) -> None:
    alice, bob = user(push, "alice"), user(push, "bob")
    device = webpush_device(push, bob)
    push.webpush.answer(device, 429, headers={"Retry-After": "2"})
    sender = await connected(push, alice)
    try:
        ack = await sender.send_text("slow down", to=bob.user_id)
        await wait_for("the retried push", lambda: push.webpush.arrivals[device])
        await settle(push, ack.chat_id, ack.seq)
    finally:
        await sender.close()
    first, second = push.webpush.attempts[device]
    assert second - first >= 2.0 - 0.05  # not the 0.2 s backoff: the provider's Retry-After
    assert len(push.webpush.arrivals[device]) == 1


async def test_a_push_that_fails_every_try_goes_to_the_dead_letter_topic(
    push: PushStack,
) -> None:
    alice, bob = user(push, "alice"), user(push, "bob")
    device = webpush_device(push, bob)
    push.webpush.answer(device, 503, times=MAX_TRIES)
    sender = await connected(push, alice)
    try:
        ack = await sender.send_text("nobody home", to=bob.user_id)
        await settle(push, ack.chat_id, ack.seq)
    finally:
        await sender.close()
    assert len(push.webpush.attempts[device]) == MAX_TRIES
    # Marked dead, then written to the topic: read it whole until the letter is there.
    deadline = time.monotonic() + 30
    while True:
        dead = [json.loads(value) for value in read_to_end(push.settings, PUSH_DEAD)]
        mine = [d for d in dead if d["chat_id"] == ack.chat_id]
        if mine or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert len(mine) == 1
    assert mine[0]["tries"] == MAX_TRIES and mine[0]["status"] == 503
    assert target_count(push, bob) == 1  # a failing provider is not a gone device


async def test_fcm_pushes_with_a_service_account_token_and_forgets_unregistered_tokens(
    push: PushStack,
) -> None:
    alice, bob, carol = user(push, "alice"), user(push, "bob"), user(push, "carol")
    for account, token in ((bob, "fcm-bob"), (carol, "fcm-carol")):
        answer = _post(
            push.base, "/v1/me/push", {"provider": "fcm", "token": token}, account.access_token
        )
        assert answer["registered"] == "fcm"
    push.fcm.registered.add("fcm-bob")  # carol's app was uninstalled: FCM answers 404
    sender = await connected(push, alice)
    try:
        to_bob = await sender.send_text("over fcm", to=bob.user_id)
        last = await sender.send_text("over fcm too", to=carol.user_id)
        await settle(push, to_bob.chat_id, to_bob.seq)
        await settle(push, last.chat_id, last.seq)
    finally:
        await sender.close()
    (arrival,) = push.fcm.arrivals["fcm-bob"]
    assert arrival.payload["chat_id"] == to_bob.chat_id and arrival.payload["count"] == "1"
    assert arrival.collapse == to_bob.chat_id.replace("-", "")
    assert push.fcm.rejected == [] and push.fcm.tokens_issued >= 1
    assert target_count(push, carol) == 0 and target_count(push, bob) == 1


async def test_apns_pushes_over_http2_with_a_provider_token_and_forgets_a_410_token(
    push: PushStack,
) -> None:
    alice, bob, carol = user(push, "alice"), user(push, "bob"), user(push, "carol")
    bob_token, carol_token = uuid.uuid4().hex * 2, uuid.uuid4().hex * 2
    for account, token in ((bob, bob_token), (carol, carol_token)):
        answer = _post(
            push.base, "/v1/me/push", {"provider": "apns", "token": token}, account.access_token
        )
        assert answer["registered"] == "apns"
    push.apns.answer(carol_token, 410)
    sender = await connected(push, alice)
    try:
        to_bob = await sender.send_text("over apns", to=bob.user_id)
        last = await sender.send_text("over apns too", to=carol.user_id)
        await settle(push, to_bob.chat_id, to_bob.seq)
        await settle(push, last.chat_id, last.seq)
    finally:
        await sender.close()
    assert push.apns.protocols == {"h2"} and push.apns.rejected == []
    (arrival,) = push.apns.arrivals[bob_token]
    assert arrival.payload["aps"]["thread-id"] == to_bob.chat_id
    assert arrival.payload["aps"]["alert"]["body"] == "1 new message"  # no preview allowed
    assert arrival.collapse == to_bob.chat_id.replace("-", "")
    assert target_count(push, carol) == 0 and target_count(push, bob) == 1


async def test_registrations_are_checked_and_typed(push: PushStack) -> None:
    bob = user(push, "bob")
    subscription = push.webpush.subscribe("x")
    other_port = f"http://127.0.0.1:{push.webpush.port + 1}/wp/x"  # loopback, not listed
    bad: list[tuple[dict[str, Any], str]] = [
        ({"provider": "carrier-pigeon", "token": "x"}, "bad_request"),
        ({"provider": "webpush", "subscription": subscription | {"keys": {}}}, "bad_request"),
        ({"provider": "apns", "token": "not hex!"}, "bad_request"),
        ({"provider": "fcm"}, "bad_request"),
    ]
    for url in ("ftp://x", other_port, "https://169.254.169.254/latest/meta-data/"):
        refused = {"provider": "webpush", "subscription": subscription | {"endpoint": url}}
        bad.append((refused, "push_endpoint_refused"))
    for body, code in bad:
        with pytest.raises(CommandFailed) as failed:
            _post(push.base, "/v1/me/push", body, bob.access_token)
        assert failed.value.code == code, body
    assert target_count(push, bob) == 0


async def test_logout_removes_the_devices_push_target(push: PushStack) -> None:
    bob = user(push, "bob")
    webpush_device(push, bob)
    # Registering again replaces the target: still one.
    webpush_device(push, bob)
    assert target_count(push, bob) == 1
    _post(push.base, "/v1/auth/logout", {"refresh_token": bob.refresh_token})
    assert target_count(push, bob) == 0


async def test_a_notifier_killed_mid_batch_misses_none_and_repeats_at_most_its_in_flight(
    push: PushStack,
) -> None:
    alice = user(push, "alice")
    members = [user(push, f"m{i}") for i in range(12)]
    devices = [webpush_device(push, m) for m in members]
    push.webpush.delay_s = 0.25  # two at a time: 1.5 s for the whole batch
    sender = await connected(push, alice)
    try:
        chat_id = await sender.create_group("everyone", [m.user_id for m in members])
        ack = await sender.send_text("all hands", chat_id=chat_id)
        await wait_for(
            "the batch to be under way",
            lambda: sum(len(push.webpush.arrivals[d]) for d in devices) >= 3,
        )
        push.notifier.kill()
        before = sum(len(push.webpush.arrivals[d]) for d in devices)
        assert before < len(devices), "the kill came after the batch"
        log_at = len(push.notifier.text())
        push.notifier.start()
        push.notifier.wait_for_log(r"event=notifier_ready", deadline_s=90, after=log_at)
        await settle(push, ack.chat_id, ack.seq)
    finally:
        push.webpush.delay_s = 0.0
        await sender.close()
    received = sum(len(push.webpush.arrivals[d]) for d in devices)
    assert all(len(push.webpush.shown(d)) == 1 for d in devices)  # none missed, one shown
    # What was in flight when it died may go again, nothing else: at most 2 (concurrency).
    assert len(devices) <= received <= len(devices) + 2


def test_parley_push_test_and_status(push: PushStack) -> None:
    bob = user(push, "bob")
    device = webpush_device(push, bob)
    env = {**os.environ, **push.stack.env}

    def parley(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "parley.cli", "push", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    sent = parley("test", bob.device_id, "--user", bob.username)
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.startswith("webpush: sent (HTTP 201)")
    (arrival,) = push.webpush.arrivals[device]
    assert arrival.payload["type"] == "test"
    missing = parley("test", "no-such-device", "--user", bob.username)
    assert missing.returncode == 1 and "has no push target" in missing.stderr
    status = parley("status")
    assert status.returncode == 0, status.stderr
    webpush_row = next(line for line in status.stdout.splitlines() if line.startswith("webpush"))
    assert int(webpush_row.split()[1]) >= 1  # registered devices
