"""Open-loop traffic: messages sent at a fixed total rate, whatever the answers do.

Message *i* is due at `start + i / rate`; a late generator sends at once and the lag is
reported, so a saturated load generator is visible rather than hidden. After the
window the generator waits for every message to be acked and held by its recipients
(as long as deliveries keep coming: `drain_s` without progress, or three minutes, end
the wait), then lets each recipient sync once (reconnecting first if its connection was
closed), as a client would, so that a push dropped on the live path, or a connection
dropped under overload, is told apart from a message lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.ledger import Ledger
from bench.peers import Peer

DRAIN_CAP_S = 180.0


@dataclass(frozen=True)
class Route:
    """Who sends message i: the sender, and the user (1:1) or chat (group) it goes to."""

    sender: Peer
    to: str | None
    chat: str | None
    recipients: int


async def run_traffic(
    routes: Sequence[Route],
    ledger: Ledger,
    rate: float,
    seconds: float,
    size: int,
    start: float,
    drain_s: float,
    tag: str,
    resync: Sequence[Any] = (),
) -> dict[str, Any]:
    """Send `rate * seconds` messages over `routes` in turn; return the ledger's window."""
    total = int(rate * seconds)
    lags: list[float] = []
    tasks: set[asyncio.Task[None]] = set()
    await asyncio.sleep(max(0.0, start - time.monotonic()))
    for i in range(total):
        due = start + i / rate
        now = time.monotonic()
        if due > now:
            await asyncio.sleep(due - now)
            now = time.monotonic()
        lags.append((now - due) * 1000)
        route = routes[i % len(routes)]
        local_id = f"{tag}-{i}"
        ledger.on_send(local_id, route.recipients)
        task = asyncio.create_task(route.sender.send(local_id, size, route.to, route.chat))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    end = start + total / rate
    # Drain: wait while deliveries still progress (an overloaded server is late, not
    # lossy), until `drain_s` pass without progress or DRAIN_CAP_S after the window.
    cap = max(time.monotonic(), end) + DRAIN_CAP_S
    pending = [f"{tag}-{i}" for i in range(total)]
    progress = time.monotonic()
    while pending and time.monotonic() < min(cap, progress + drain_s):
        left = [local_id for local_id in pending if not ledger.settled(local_id)]
        if len(left) < len(pending):
            progress = time.monotonic()
        pending = left
        await asyncio.sleep(0.05)
    if tasks:
        await asyncio.wait(tasks, timeout=max(0.1, min(cap, progress + drain_s) - time.monotonic()))
    if resync and pending:
        for peer in resync:
            with contextlib.suppress(Exception):
                if peer.is_open():
                    await peer.sync()
                else:  # closed under overload: come back as a client does, and sync
                    await peer.reconnect()
        await asyncio.sleep(1.0)
    figures = ledger.window(start, end + 1e-9)
    lags.sort()
    figures["generator_lag_ms_p99"] = round(lags[int(0.99 * (len(lags) - 1))], 2) if lags else 0
    figures["generator_lag_ms_max"] = round(lags[-1], 2) if lags else 0
    figures["window_s"] = round(end - start, 3)
    return figures
