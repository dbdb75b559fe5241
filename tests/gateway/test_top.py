"""`parley top --once`: the gateway's rates and latency while a client sends, from /metrics."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from bench.servers import free_port
from tests.gateway.conftest import Stack
from tests.services import ROOT


def test_top_shows_the_gateways_traffic_and_a_service_that_is_down(stack: Stack) -> None:
    alice, bob = stack.account("top-a"), stack.account("top-b")
    port = stack.base.rsplit(":", 1)[1]
    env = {
        **os.environ,
        "PARLEY_COMMANDS_PORT": port,
        "PARLEY_QUERIES_PORT": str(free_port()),  # nothing listens there
        "PARLEY_PROCESSOR_METRICS_PORT": str(free_port()),  # nor there
        "COLUMNS": "200",
    }
    top = subprocess.Popen(
        [sys.executable, "-m", "parley.cli", "top", "--once", "--interval", "3"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )

    async def traffic() -> None:
        """Sends, one after another, for as long as `parley top` measures."""
        a = await stack.client(alice)
        i = 0
        while top.poll() is None and i < 2000:
            await a.send_text(f"t{i}", to=bob.user_id, local_id=f"top-{i}")
            i += 1
        await a.close()

    asyncio.run(traffic())
    out, _ = top.communicate(timeout=60)
    assert top.returncode == 3, out  # the queries service did not answer
    table = {
        cells[0]: cells
        for cells in (
            [c.strip() for c in line.split("│")[1:-1]]
            for line in out.splitlines()
            if line.startswith("│")
        )
    }
    # service, conns, frames/s, commands/s, events/s, acks/s, errors/s, p50, p99, lag, …
    commands = table["commands"]
    assert float(commands[5].replace(",", "")) > 0, out  # acks/s
    assert float(commands[7]) > 0, out  # the command round trip's p50, in ms
    assert table["queries"][1] == "down", out
    # The services without HTTP are listed by their /metrics ports (none given: down).
    assert table["processor"][1] == "down", out
