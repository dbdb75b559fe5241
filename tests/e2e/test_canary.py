"""The canary: unique plaintexts sent through encrypted 1:1 and group chats, and a file
sent encrypted, appear nowhere on the server side: no PostgreSQL table (the event store
included), no Kafka topic of this run, no Redis key, no service log; the stored file is
ciphertext. A plaintext message sent alongside is found in each of them, so the search
itself is shown to work."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import Iterable
from typing import Any

import psycopg
import redis
from kafka import KafkaConsumer, TopicPartition
from psycopg import sql

from client.chat import CommandFailed
from client.media import fetch_media
from infra.settings import Settings
from tests.e2e.conftest import E2EStack
from tests.e2e.test_encrypted_chats import decrypted, received


def needles(text: str) -> list[bytes]:
    """The ways a text can sit in stored bytes: as is, in base64 (at each of the three
    alignments), and each of those as hex (a bytea column read as text)."""
    raw = text.encode()
    forms = [raw]
    for shift in range(3):
        encoded = base64.b64encode(b"\x00" * shift + raw)
        forms.append(encoded[4:-4])  # the middle, where the alignment no longer matters
    return forms + [form.hex().encode() for form in forms]


def in_postgres(settings: Settings, texts: Iterable[str]) -> set[str]:
    """The texts found in any row of any table of the test database."""
    found: set[str] = set()
    with psycopg.connect(settings.pg_conninfo, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_type = 'BASE TABLE'"
            " AND table_schema NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
        assert len(tables) > 10  # the event store, the read model, accounts, keys, push
        for schema, table in tables:
            query = sql.SQL("SELECT t::text FROM {}.{} t").format(
                sql.Identifier(schema), sql.Identifier(table)
            )
            rows = "\n".join(row[0] for row in conn.execute(query)).encode()
            found.update(t for t in texts if any(n in rows for n in needles(t)))
    return found


def in_kafka(settings: Settings, texts: Iterable[str]) -> set[str]:
    """The texts found in any record of any topic of this run."""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=None, enable_auto_commit=False
    )
    run = settings.topic_prefix.rstrip(".")
    found: set[str] = set()
    try:
        topics = [t for t in consumer.topics() if t.startswith(run)]
        assert any(t.endswith("parley.events") for t in topics), topics
        partitions = [
            TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()
        ]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < end for tp, end in ends.items()):
            assert time.monotonic() < deadline, "the topics were not read to their ends"
            for batch in consumer.poll(timeout_ms=200).values():
                for record in batch:
                    data = (record.key or b"") + (record.value or b"")
                    data += b"".join(v for _, v in record.headers or [])
                    found.update(t for t in texts if any(n in data for n in needles(t)))
    finally:
        consumer.close()
    return found


def in_redis(settings: Settings, texts: Iterable[str]) -> set[str]:
    """The texts found in any key or value of the test Redis database."""
    client: Any = redis.Redis.from_url(settings.redis_url)
    found: set[str] = set()
    try:
        for key in client.scan_iter(count=1000):
            kind = client.type(key).decode()
            values: list[Any] = [key]
            if kind == "string":
                values.append(client.get(key))
            elif kind == "hash":
                values += [b for kv in client.hgetall(key).items() for b in kv]
            elif kind == "list":
                values += client.lrange(key, 0, -1)
            elif kind == "set":
                values += list(client.smembers(key))
            elif kind == "zset":
                values += client.zrange(key, 0, -1)
            elif kind == "stream":
                for _, fields in client.xrange(key):
                    values += [b for kv in fields.items() for b in kv]
            data = b"\n".join(v for v in values if isinstance(v, bytes))
            found.update(t for t in texts if any(n in data for n in needles(t)))
    finally:
        client.close()
    return found


def in_logs(stack: E2EStack, texts: Iterable[str]) -> set[str]:
    logs = "\n".join(service.text() for service in stack.stack.services.values()).encode()
    assert logs
    return {t for t in texts if any(n in logs for n in needles(t))}


async def test_no_plaintext_of_an_encrypted_chat_reaches_the_server(e2e_stack: E2EStack) -> None:
    alice = await e2e_stack.account("alice")
    bob = await e2e_stack.account("bob")
    carol = await e2e_stack.account("carol")
    alice_phone = await e2e_stack.device(alice)
    alice_laptop = await e2e_stack.device(await e2e_stack.other_device(alice, "laptop"))
    bob_phone = await e2e_stack.device(bob)
    carol_phone = await e2e_stack.device(carol)
    tag = uuid.uuid4().hex
    one_to_one = [f"canary-direct-{tag}-{i}" for i in range(3)]
    in_group = [f"canary-group-{tag}-{i}" for i in range(3)]
    control = f"canary-plaintext-{tag}"

    for text in one_to_one:
        ack = await alice_phone.send_text(bob.user_id, text)
    await received(bob_phone, ack.chat_id, one_to_one)
    group = await alice_phone.chat.create_group("canaries", [bob.user_id, carol.user_id])
    members = [alice.user_id, bob.user_id, carol.user_id]
    for text in in_group:
        await alice_phone.send_group(group, members, text)
    for device in (bob_phone, carol_phone, alice_laptop):
        await received(device, group, in_group)
    # A file: the object store holds only its ciphertext.
    photo = b"\xff\xd8\xff\xe0 a photo of " + f"canary-file-{tag}".encode() * 50
    sent = await alice_phone.send_file(bob.user_id, photo, "image/jpeg", f"canary-caption-{tag}")

    def files() -> list[dict[str, Any]]:
        return [c for c in bob_phone.contents(ack.chat_id) if c["type"] == "media"]

    await decrypted(bob_phone, lambda: len(files()) == 1)
    media = files()[0]
    assert media["caption"] == f"canary-caption-{tag}" and media["mime_type"] == "image/jpeg"
    queries = e2e_stack.stack.queries
    assert queries is not None
    # The query API authorises the download once the message is projected (the push
    # comes first): ask again until it is, to a deadline.
    deadline = time.monotonic() + 30
    while True:
        try:
            opened = await bob_phone.open_file(queries, sent.chat_id, media)
            break
        except CommandFailed as exc:
            assert exc.code == "unknown_media" and time.monotonic() < deadline, exc
            await asyncio.sleep(0.2)
    assert opened == photo
    stored = fetch_media(queries, bob, sent.chat_id, media["media_id"])
    assert not any(n in stored for n in needles(f"canary-file-{tag}"))
    # The control goes in the clear, last: once it is everywhere, so is all before it.
    await bob_phone.chat.send_text(control, to=carol.user_id)

    secrets = [*one_to_one, *in_group, f"canary-file-{tag}", f"canary-caption-{tag}"]
    settings = e2e_stack.stack.settings
    deadline = time.monotonic() + 60
    while not (in_postgres(settings, [control]) and in_redis(settings, [control])):
        assert time.monotonic() < deadline, "the control message was never projected"
        await asyncio.sleep(0.5)  # polling the projections for the control, to a deadline

    everything = [*secrets, control]
    assert in_postgres(settings, everything) == {control}
    assert in_kafka(settings, everything) == {control}
    assert in_redis(settings, everything) == {control}
    assert in_logs(e2e_stack, everything) == set()  # logs carry ids, never bodies
    for device in (alice_phone, alice_laptop, bob_phone, carol_phone):
        await device.chat.close()
