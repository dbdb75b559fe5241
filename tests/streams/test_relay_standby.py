"""Two relays: one publishes, the other stands by and takes over when the first dies."""

from __future__ import annotations

import time
from pathlib import Path

from infra.event_store import ChatStore, max_position
from infra.settings import Settings
from tests.services import Service
from tests.streams.chats import ChatWriter
from tests.streams.published import check_order, event_ids, read_until, stored_event_ids
from tests.streams.relays import relay, wait_position

TAKEOVER_DEADLINE_S = 5.0


def _roles(relays: list[Service], deadline_s: float = 30.0) -> tuple[Service, Service]:
    """(active, standby) once one relay logged relay_active and the other relay_standby."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        active = [r for r in relays if "event=relay_active" in r.text()]
        standby = [r for r in relays if "event=relay_standby" in r.text()]
        if active and standby:
            assert len(active) == 1, "both relays became active"
            return active[0], standby[0]
        time.sleep(0.05)
    raise AssertionError("no active and standby relay:\n" + "\n".join(r.text() for r in relays))


def test_a_standby_relay_takes_over_when_the_active_one_dies(
    relay_settings: Settings, store: ChatStore, tmp_path: Path
) -> None:
    writer = ChatWriter(store)
    writer.open(directs=20, groups=10)
    relays = [relay(relay_settings, tmp_path / f"relay-{n}.log").start() for n in (1, 2)]
    try:
        active, standby = _roles(relays)
        wait_position(relay_settings, max_position(store), deadline_s=30)
        writer.write(300)
        wait_position(relay_settings, max_position(store), deadline_s=30)
        assert "event=relay_active" not in standby.text()

        active.kill()
        killed_at = time.monotonic()
        writer.write(300)
        standby.wait_for_log("event=relay_active", deadline_s=TAKEOVER_DEADLINE_S)
        wait_position(relay_settings, max_position(store), deadline_s=30)
        print(f"\nrelay standby took over in {time.monotonic() - killed_at:.2f}s")
        records = read_until(relay_settings, stored_event_ids(relay_settings))
    finally:
        for service in relays:
            service.stop()
    assert event_ids(records) == stored_event_ids(relay_settings)
    check_order(records)
