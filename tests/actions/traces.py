"""Where a piece of plaintext is still found: every table of a database, every record of
the events and the commands topics, every key of the Redis database.

A body is stored as it is, in base64 (JSON, the envelopes) or as bytea (shown in hex by
PostgreSQL's text form of a row), so each of those forms is looked for. A base64 form
is only found at a 3-byte boundary: the needle is looked for at the start of a body,
which is where a test puts it.
"""

from __future__ import annotations

import base64
import time
from typing import Any

import psycopg
import redis
from kafka import KafkaConsumer, TopicPartition
from psycopg import sql

from infra.settings import Settings
from infra.topics import COMMANDS, EVENTS


def forms(needle: bytes) -> list[bytes]:
    """The needle as stored: itself, and its base64 (the part of it at 3-byte steps)."""
    whole = len(needle) - len(needle) % 3
    return [needle, base64.b64encode(needle[:whole]).rstrip(b"=")]


def in_postgres(settings: Settings, needle: bytes) -> list[str]:
    """The tables (schema.table) with a row holding the needle in any form."""
    patterns = []
    for form in forms(needle):
        for text in (form.decode(), form.hex()):
            escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            patterns.append(f"%{escaped}%")
    found = []
    with psycopg.connect(settings.pg_conninfo, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_type = 'BASE TABLE' "
            "AND table_schema NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
        for schema, table in tables:
            row = conn.execute(
                sql.SQL("SELECT count(*) FROM {}.{} t WHERE t::text LIKE ANY(%s)").format(
                    sql.Identifier(schema), sql.Identifier(table)
                ),
                (patterns,),
            ).fetchone()
            if row and row[0]:
                found.append(f"{schema}.{table}")
    return found


def in_topic(settings: Settings, topic: str, needle: bytes) -> int:
    """How many records of `topic`, from its first kept one, hold the needle in any form."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        count = 0
        while any(consumer.position(tp) < ends[tp] for tp in partitions):
            for records in consumer.poll(timeout_ms=500).values():
                count += sum(any(f in r.value for f in forms(needle)) for r in records)
        return count
    finally:
        consumer.close()


def out_of_commands_topic(settings: Settings, needle: bytes, deadline_s: float = 30.0) -> None:
    """Wait until no record of the commands topic holds the needle: the processor deletes
    the commands it decided and committed (commands/processor/truncate.py)."""
    topic = settings.topic(COMMANDS)
    deadline = time.monotonic() + deadline_s
    while in_topic(settings, topic, needle):
        assert time.monotonic() < deadline, f"still in {topic} after {deadline_s} s"
        time.sleep(0.2)


def in_redis(settings: Settings, needle: bytes) -> list[str]:
    """The keys of the Redis database whose value holds the needle in any form."""
    client = redis.Redis.from_url(settings.redis_url)
    found = []
    try:
        for key in client.scan_iter(count=1000):
            if any(f in _value(client, key) for f in forms(needle)):
                found.append(key.decode())
    finally:
        client.close()
    return found


def _value(client: Any, key: bytes) -> bytes:
    kind = client.type(key)
    if kind == b"string":
        return bytes(client.get(key) or b"")
    if kind == b"hash":
        return b"\0".join(k + b"\0" + v for k, v in client.hgetall(key).items())
    if kind == b"zset":
        return b"\0".join(client.zrange(key, 0, -1))
    if kind == b"list":
        return b"\0".join(client.lrange(key, 0, -1))
    if kind == b"set":
        return b"\0".join(client.smembers(key))
    if kind == b"stream":
        return repr(client.xrange(key)).encode()
    return b""


def anywhere(settings: Settings, needle: bytes) -> list[str]:
    """Every place the needle is found: PostgreSQL tables, the events and commands
    topics, Redis keys."""
    places = in_postgres(settings, needle)
    for topic in (settings.topic(EVENTS), settings.topic(COMMANDS)):
        if in_topic(settings, topic, needle):
            places.append(topic)
    return places + [f"redis {key}" for key in in_redis(settings, needle)]
