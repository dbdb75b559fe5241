"""The assignment endpoint over the registry of gateways, seen from a client's side.

A client asks `GET /v1/gateways/assign` (through the balancer here) and connects its
WebSocket straight to the URL it is given: the gateway with the fewest connections. A
gateway SIGKILLed leaves the registry (Redis: its lease expires; ZooKeeper: its session
does) and is never assigned again; the time it took is printed for docs/scaling.md.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import websockets

from infra.registry import listed_after_death_s
from tests.scale.conftest import REGISTRY_REPORT_S, Balanced
from tests.scale.test_balanced import _restart_dead

GATEWAYS = 3


def _assign(balanced: Balanced) -> dict[str, Any]:
    with urllib.request.urlopen(balanced.base + "/v1/gateways/assign", timeout=10) as answer:
        assert answer.status == 200
        assert answer.headers["Cache-Control"] == "no-store"
        body: dict[str, Any] = json.loads(answer.read())
        return body


def _until(check: Callable[[], bool], deadline_s: float, what: str) -> float:
    """Wait until `check()` holds; the seconds it took."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < deadline_s, f"not within {deadline_s}s: {what}"
        time.sleep(0.05)
    return time.monotonic() - start


def _steady(balanced: Balanced, check: Callable[[dict[str, Any]], bool]) -> Callable[[], bool]:
    """Holds when 30 answers in a row all pass `check`: ties are broken at random, so a
    few answers could pass by chance before the gateways' reports came in ((2/3)^6 = 9%
    did); 30 in a row by chance is (2/3)^30, 5 in a million."""
    return lambda: all(check(_assign(balanced)) for _ in range(30))


def test_assign_names_the_least_loaded_gateway_and_forgets_a_killed_one(
    balanced: Balanced,
) -> None:
    users = [balanced.account(f"a{i}") for i in range(5)]
    # Gateways killed by earlier tests may linger in the registry until their lease ends.
    lease = listed_after_death_s(balanced.settings)
    _until(lambda: _assign(balanced)["gateways"] == GATEWAYS, lease * 2 + 10, "3 gateways")
    ours = {f"ws://127.0.0.1:{g.env['PARLEY_COMMANDS_PORT']}/ws" for g in balanced.gateways}
    loads = REGISTRY_REPORT_S * 2 + 10  # two reports, with slack for a loaded machine

    async def connect(url: str, n: int) -> list[Any]:
        sockets = []
        for user in users[:n] if n else []:
            ws = await websockets.connect(f"{url}?access_token={user.access_token}")
            hello = json.loads(await ws.recv())
            assert hello["type"] == "hello"
            sockets.append(ws)
        del users[:n]
        return sockets

    async def scenario() -> None:
        first = _assign(balanced)["url"]
        assert first in ours
        held = await connect(first, 2)  # loads: 2, 0, 0
        await asyncio.to_thread(
            _until, _steady(balanced, lambda a: a["url"] != first), loads, "another"
        )
        second = _assign(balanced)["url"]
        held += await connect(second, 2)  # loads: 2, 2, 0
        (third,) = ours - {first, second}
        await asyncio.to_thread(
            _until, _steady(balanced, lambda a: a["url"] == third), loads, "the empty one"
        )
        held += await connect(third, 1)  # loads: 2, 2, 1: still the least loaded
        await asyncio.to_thread(
            _until,
            _steady(balanced, lambda a: a["url"] == third and a["connections"] == 1),
            loads,
            "the one with one connection",
        )
        victim = next(
            g for g in balanced.gateways if third.endswith(f":{g.env['PARLEY_COMMANDS_PORT']}/ws")
        )
        victim.kill()  # SIGKILL: no leave, no clean close of its session
        gone = _until(
            _steady(balanced, lambda a: a["url"] != third and a["gateways"] == GATEWAYS - 1),
            listed_after_death_s(balanced.settings) + loads,
            "the killed gateway out of the registry",
        )
        print(f"registry={balanced.settings.registry} killed gateway gone after {gone:.1f}s")
        for ws in held:
            await ws.close()

    try:
        asyncio.run(scenario())
    finally:
        _restart_dead(balanced)
