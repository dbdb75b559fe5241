"""The relay over the real PostgreSQL and Kafka: every event once, in order, promptly."""

from __future__ import annotations

import itertools
import re
from collections import defaultdict
from pathlib import Path

from infra.event_store import ChatStore, max_position
from infra.settings import Settings
from tests.streams.chats import ChatWriter
from tests.streams.published import check_order, event_ids, read_until, stored_event_ids
from tests.streams.relays import relay, relay_status, wait_position


def test_every_stored_event_is_published_once_in_log_order(
    relay_settings: Settings, store: ChatStore, tmp_path: Path
) -> None:
    writer = ChatWriter(store)
    writer.open(directs=60, groups=30)
    writer.write(2_000)
    expected = stored_event_ids(relay_settings)
    assert len(expected) == writer.written >= 2_000

    service = relay(relay_settings, tmp_path / "relay.log").start()
    try:
        records = read_until(relay_settings, expected)
    finally:
        service.stop()

    assert event_ids(records) == expected
    assert len(records) == len(expected), "a clean run publishes each event exactly once"
    assert check_order(records) == 0
    by_partition: dict[int, list[int]] = defaultdict(list)
    for record in records:
        by_partition[record.partition].append(record.envelope.position)
    assert len(by_partition) > 1
    for positions in by_partition.values():
        assert all(a < b for a, b in itertools.pairwise(positions))
    assert "event=relay_active" in service.text()
    assert re.search(r"event=relay_stopped name=\S+ published=\d+", service.text())


def test_a_commit_wakes_the_relay_and_status_shows_the_lag(
    relay_settings: Settings, store: ChatStore, tmp_path: Path
) -> None:
    writer = ChatWriter(store)
    writer.open(directs=5, groups=5)
    head = max_position(store)
    before = relay_status(relay_settings)
    assert re.search(rf"head\s+{head}\n", before)
    assert re.search(rf"lag\s+{head}\n", before)

    # The poll fallback is 30 s here: only the store's NOTIFY can wake the relay in time.
    service = relay(relay_settings, tmp_path / "relay.log", PARLEY_RELAY_POLL_S="30").start()
    try:
        service.wait_for_log("event=relay_active")
        wait_position(relay_settings, head, deadline_s=30)
        for _ in range(5):
            writer.round()
            waited = wait_position(relay_settings, max_position(store), deadline_s=2)
            assert waited < 1.0
        after = relay_status(relay_settings)
    finally:
        service.stop()
    assert re.search(rf"position\s+{max_position(store)}\s", after)
    assert re.search(r"lag\s+0\n", after)
