"""Stop Kafka while writes go on: the relay waits, then catches up by itself, losing nothing.

The broker stopped here is one of the test's own (tests/private_kafka.py), never the
shared one.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.event_store import ChatStore, max_position
from infra.settings import Settings
from infra.stack.kafka import Kafka
from infra.topics import ensure_topics
from tests.private_kafka import private_kafka
from tests.streams.chats import BackgroundWriter, ChatWriter
from tests.streams.published import check_order, event_ids, read_until, stored_event_ids
from tests.streams.relays import recorded_position, relay, wait_position


@pytest.fixture
def own_kafka(base_settings: Settings, tmp_path: Path) -> Iterator[Kafka]:
    """A one-node broker of this test's own, stopped (for good) at the end."""
    with private_kafka(base_settings, tmp_path) as kafka:
        yield kafka


def test_the_relay_catches_up_after_a_broker_restart_with_no_loss(
    own_kafka: Kafka, relay_settings: Settings, store: ChatStore, tmp_path: Path
) -> None:
    settings = relay_settings.replace(kafka_bootstrap=own_kafka.settings.kafka_bootstrap)
    ensure_topics(settings)
    writer = ChatWriter(store)
    writer.open(directs=20, groups=10)
    service = relay(
        settings, tmp_path / "relay.log", PARLEY_KAFKA_BOOTSTRAP=settings.kafka_bootstrap
    ).start()
    try:
        service.wait_for_log("event=relay_active")
        with BackgroundWriter(writer, pause_s=0.02) as background:
            wait_position(settings, 500, deadline_s=30)
            own_kafka.down()
            down_at = time.monotonic()
            stuck_at = recorded_position(settings)
            background.wait_written(writer.written + 1_000)
            # Nothing can be acknowledged while the broker is down: the position holds.
            assert recorded_position(settings) == stuck_at
            assert max_position(store) > stuck_at
            own_kafka.up()
            print(f"\nkafka was down for {time.monotonic() - down_at:.1f}s")
            background.wait_written(writer.written + 500)
        assert service.proc is not None and service.proc.poll() is None, "the relay died"
        caught_up = wait_position(settings, max_position(store), deadline_s=60)
        print(f"relay caught up {caught_up:.1f}s after the last write")
        expected = stored_event_ids(settings)
        records = read_until(settings, expected, deadline_s=60)
    finally:
        service.stop()
    assert event_ids(records) == expected
    assert "event=waiting_for_kafka" in service.text()
    duplicates = check_order(records)
    print(f"broker restart: {len(expected)} events, {duplicates} duplicates")
    assert duplicates <= relay_settings.relay_batch_max
