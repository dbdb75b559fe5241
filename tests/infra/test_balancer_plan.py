"""HAProxy's slots planned from the registry's live gateways (`infra.balancer.plan`)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra.balancer import Slot, plan, resync, slot_names
from infra.registry import GatewayRecord

pytestmark = pytest.mark.unit


def _gateway(port: int) -> GatewayRecord:
    return GatewayRecord(f"gw-{port}", f"ws://127.0.0.1:{port}/ws", 0)


def _empty(count: int) -> dict[str, Slot]:
    return {name: Slot() for name in slot_names(count)}


def test_gateways_take_free_slots_then_drain_when_they_leave_and_come_back_to_theirs() -> None:
    slots, commands, unplaced = plan(_empty(3), [_gateway(9001), _gateway(9002)])
    assert slots["gw1"] == Slot("127.0.0.1:9001", True) and slots["gw2"] == Slot(
        "127.0.0.1:9002", True
    )
    assert commands == [
        "set server gateways/gw1 addr 127.0.0.1 port 9001",
        "set server gateways/gw1 state ready",
        "set server gateways/gw2 addr 127.0.0.1 port 9002",
        "set server gateways/gw2 state ready",
    ]
    assert unplaced == []
    # 9001 leaves: its slot drains (open connections stay), nothing else moves.
    slots, commands, _ = plan(slots, [_gateway(9002)])
    assert commands == ["set server gateways/gw1 state drain"]
    assert slots["gw1"] == Slot("127.0.0.1:9001", False)
    # A new gateway takes the never-used slot first; 9001 back takes its own again.
    slots, commands, _ = plan(slots, [_gateway(9002), _gateway(9003), _gateway(9001)])
    assert slots["gw3"].address == "127.0.0.1:9003"
    assert slots["gw1"] == Slot("127.0.0.1:9001", True)
    assert "set server gateways/gw1 state ready" in commands
    # Nothing changed: nothing to send.
    assert plan(slots, [_gateway(9001), _gateway(9002), _gateway(9003)])[1] == []


def test_more_gateways_than_slots_are_reported_and_a_drained_slot_is_reused() -> None:
    slots, _, unplaced = plan(_empty(1), [_gateway(9001), _gateway(9002)])
    assert unplaced == ["127.0.0.1:9002"]
    slots, commands, unplaced = plan(slots, [_gateway(9002)])
    assert unplaced == []
    assert slots["gw1"] == Slot("127.0.0.1:9002", True)
    assert "set server gateways/gw1 addr 127.0.0.1 port 9002" in commands


def test_resync_sends_every_slot_from_nothing() -> None:
    slots = {"gw1": Slot("127.0.0.1:9001", True), "gw2": Slot("127.0.0.1:9002", False)}
    slots["gw3"] = Slot()
    assert resync(slots) == [
        "set server gateways/gw1 addr 127.0.0.1 port 9001",
        "set server gateways/gw1 state ready",
        "set server gateways/gw2 addr 127.0.0.1 port 9002",
        "set server gateways/gw2 state drain",
        "set server gateways/gw3 state maint",
    ]


@given(st.lists(st.sets(st.integers(9000, 9011), max_size=8), min_size=1, max_size=12))
def test_any_sequence_of_registry_lists_routes_to_exactly_the_live_gateways(
    lists: list[set[int]],
) -> None:
    slots = _empty(8)
    for ports in lists:
        slots, _, unplaced = plan(slots, [_gateway(p) for p in ports])
        ready = {s.address for s in slots.values() if s.ready}
        assert ready == {f"127.0.0.1:{p}" for p in ports}  # 8 slots hold up to 8 live ones
        assert unplaced == []
        addresses = [s.address for s in slots.values() if s.address]
        assert len(addresses) == len(set(addresses))  # no gateway in two slots
