"""The gateway's `/metrics`: what a client does shows in the counters Prometheus scrapes."""

from __future__ import annotations

import asyncio
import json

import websockets

from tests.gateway.conftest import Stack
from tests.metrics_text import scrape


def _grew(before: dict[str, float], after: dict[str, float], sample: str, by: float = 1) -> bool:
    return after.get(sample, 0) - before.get(sample, 0) >= by


def test_frames_commands_acks_deliveries_and_errors_are_counted(stack: Stack) -> None:
    alice, bob = stack.account("m-alice"), stack.account("m-bob")

    async def scenario() -> tuple[dict[str, float], dict[str, float]]:
        a, b = await stack.client(alice), await stack.client(bob)
        before = scrape(stack.base)
        sent = await a.send_text("counted", to=bob.user_id, local_id="metrics-1")
        await b.wait_until(
            lambda: sent.chat_id in b.chats and b.chats[sent.chat_id].contiguous == 1,
            timeout_s=30,
        )
        url = stack.base.replace("http", "ws", 1) + "/ws?access_token=" + alice.access_token
        async with websockets.connect(url) as raw:
            await raw.send('{"type": "send", "id": "bad"}')  # neither `to` nor `chat_id`
            answer: dict[str, object] = {}
            while answer.get("id") != "bad":  # after hello, and any receipt pushed meanwhile
                answer = json.loads(await asyncio.wait_for(raw.recv(), 30))
            assert answer["type"] == "error" and answer["code"] == "bad_frame"
            during = scrape(stack.base)
        await a.close()
        await b.close()
        return before, during

    before, after = asyncio.run(scenario())
    assert _grew(before, after, 'parley_gateway_frames_total{type="send"}', 2)
    assert _grew(before, after, 'parley_gateway_commands_total{type="send"}')
    assert _grew(before, after, "parley_gateway_acks_total")
    assert _grew(before, after, "parley_gateway_command_seconds_count")
    assert _grew(before, after, 'parley_gateway_command_seconds_bucket{le="+Inf"}')
    assert after["parley_gateway_command_seconds_sum"] > before.get(
        "parley_gateway_command_seconds_sum", 0
    )
    assert _grew(before, after, 'parley_gateway_deliveries_total{kind="message"}')
    assert _grew(before, after, 'parley_gateway_errors_total{code="bad_frame"}')
    assert _grew(before, after, "parley_gateway_connects_total")
    assert after["parley_gateway_connections"] >= 3  # alice twice and bob, at that moment
    assert _grew(before, after, 'parley_http_requests_total{status="200"}')  # the scrape
    assert after["process_resident_memory_bytes"] > 0
