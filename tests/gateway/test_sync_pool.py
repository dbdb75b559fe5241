"""Syncs waiting for a lagging projection hold no pool connection (commands/gateway/sync.py):
with more of them waiting than the gateway's pool holds, another user's sync on the same
gateway is answered at once, and the waiting syncs still bring what was stored while
the workers were stopped, once they project it."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from bench.servers import free_port
from client import ChatClient
from tests.gateway.conftest import GENEROUS_LIMITS, REGISTRATION_LIMITS, Stack
from tests.metrics_text import scrape
from tests.services import running

POOL_SIZE = 2
WAITING = 3 * POOL_SIZE  # syncs waiting on the lagging projection at once


async def _until(what: str, condition: Callable[[], bool], deadline_s: float = 30.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not await asyncio.to_thread(condition):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def test_syncs_waiting_on_a_lagging_projection_leave_the_pool_to_others(
    stack: Stack, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **GENEROUS_LIMITS,
        **REGISTRATION_LIMITS,
        "PARLEY_COMMANDS_PORT": str(port),
        "PARLEY_GATEWAY_POOL_SIZE": str(POOL_SIZE),
        # Long enough that no waiting sync gives up before the workers are resumed.
        "PARLEY_SYNC_SETTLE_TIMEOUT_S": "60",
    }
    base = f"http://127.0.0.1:{port}"
    workers = stack.services["workers"].proc
    assert workers is not None
    alice, carol = stack.account("sp-alice"), stack.account("sp-carol")
    members = [stack.account(f"sp-m{i}") for i in range(WAITING)]

    def syncs_in_progress() -> float:
        return scrape(base).get("parley_gateway_syncs", 0)

    async def scenario() -> None:
        sender = ChatClient(base, alice)
        await sender.connect()
        chat = await sender.create_group("lagging", [m.user_id for m in members])
        await sender.sync()  # the group is projected
        away = [ChatClient(base, m, timeout_s=90) for m in members]
        os.kill(workers.pid, signal.SIGSTOP)  # the projection lags from here
        try:
            sent = await sender.send_text("while the workers were stopped", chat_id=chat)
            for client in away:  # they come back after the message was stored
                await client.connect()
            syncs = [asyncio.create_task(client.sync()) for client in away]
            await _until("every sync waiting", lambda: syncs_in_progress() >= WAITING)

            other = ChatClient(base, carol, timeout_s=10)
            await other.connect()
            started = time.monotonic()
            await other.sync()  # times out (10 s) if the waiting syncs hold the pool
            took = time.monotonic() - started
            assert not any(task.done() for task in syncs), "a sync did not wait"
            assert syncs_in_progress() >= WAITING
            await other.close()
        finally:
            os.kill(workers.pid, signal.SIGCONT)
        await asyncio.wait_for(asyncio.gather(*syncs), 60)
        for client in away:
            assert client.text_of(chat, sent.seq) == "while the workers were stopped"
            await client.close()
        await sender.close()
        assert took < 5.0, f"another user's sync took {took:.2f} s"

    with running("commands", tmp_path / "commands.log", env) as commands:
        commands.wait_for_log(r"event=commands_listening")
        asyncio.run(scenario())
