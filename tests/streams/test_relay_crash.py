"""SIGKILL the relay while it publishes and writes go on: nothing lost, order kept."""

from __future__ import annotations

from pathlib import Path

from infra.event_store import ChatStore, max_position
from infra.settings import Settings
from tests.streams.chats import BackgroundWriter, ChatWriter
from tests.streams.published import check_order, event_ids, read_until, stored_event_ids
from tests.streams.relays import recorded_position, relay

CRASHES = 3


def test_killed_relays_lose_nothing_and_duplicate_at_most_a_batch_per_crash(
    relay_settings: Settings, store: ChatStore, tmp_path: Path
) -> None:
    writer = ChatWriter(store)
    writer.open(directs=60, groups=30)
    writer.write(5_000)  # a backlog, so the first relay is busy when it is killed
    log = tmp_path / "relay.log"
    with BackgroundWriter(writer, pause_s=0.005) as background:
        for crash in range(CRASHES):
            service = relay(relay_settings, log)
            start = len(service.text())
            service.start()
            # Killed right after its first acknowledged batch: the next one is in flight.
            service.wait_for_log(r"event=relay_published count=\d+", after=start)
            service.kill()
            # It died with events still to publish: in the middle of its work.
            assert recorded_position(relay_settings) < max_position(store), f"crash {crash}"
            background.wait_written(writer.written + 4_000)  # the next relay's backlog
            assert "event=relay_stopped" not in service.text()[start:], f"crash {crash}"
    expected = stored_event_ids(relay_settings)
    assert len(expected) == writer.written

    final = relay(relay_settings, log).start()
    try:
        records = read_until(relay_settings, expected, deadline_s=60)
    finally:
        final.stop()

    assert event_ids(records) == expected
    duplicates = check_order(records)
    print(f"\nrelay crash test: {len(expected)} events, {CRASHES} kills, {duplicates} duplicates")
    assert duplicates <= CRASHES * relay_settings.relay_batch_max
