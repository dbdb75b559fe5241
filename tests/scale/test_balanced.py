"""Three gateways behind HAProxy and two processors, seen from the clients' side.

Users land on all three gateways through one address and chat across them; a gateway
SIGKILLed mid-load costs nothing (every acked message delivered once, in order, after
its users reconnect through the balancer); a gateway sent SIGTERM drains: its clients
are told to reconnect (close 1012), the balancer stops routing to it, and it exits.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from collections.abc import Callable

import websockets

from client.chat import ChatState
from tests.gateway.test_gateway_crash import _reconnect
from tests.scale.conftest import Balanced

PAIRS = 3
MESSAGES = 30
KILL_AFTER = 10  # acks of the first sender before its gateway dies


def test_users_on_three_gateways_chat_and_survive_one_killed(balanced: Balanced) -> None:
    users = [balanced.account(f"u{i}") for i in range(2 * PAIRS)]

    async def scenario() -> None:
        clients = [await balanced.client(user) for user in users]
        landed = {c.hello["gateway_id"] for c in clients}
        assert len(landed) == 3, f"leastconn spreads 6 users over 3 gateways: {landed}"
        victim_id = clients[0].hello["gateway_id"]
        victim = balanced.gateway_of(victim_id)
        pairs = [(clients[2 * i], clients[2 * i + 1]) for i in range(PAIRS)]
        acked: list[dict[int, int]] = [{} for _ in pairs]  # the seq of each acked send
        chats: list[str] = []
        for n, (sender, receiver) in enumerate(pairs):
            first = await sender.send_text("m0", to=receiver.user_id, local_id=f"p{n}-m0")
            chats.append(first.chat_id)
            acked[n][0] = first.seq
        killed = asyncio.Event()

        async def send_all(n: int) -> None:
            sender = pairs[n][0]
            for i in range(1, MESSAGES):
                if n == 0 and i == KILL_AFTER:
                    victim.kill()  # SIGKILL, our own process, mid-stream
                    killed.set()
                while i not in acked[n]:
                    try:
                        ack = await sender.send_text(
                            f"m{i}", chat_id=chats[n], local_id=f"p{n}-m{i}"
                        )
                        acked[n][i] = ack.seq
                    except Exception:
                        await _reconnect(sender)  # through the balancer; resends unacked

        await asyncio.gather(*(send_all(n) for n in range(PAIRS)))
        assert killed.is_set()
        for n, (_, receiver) in enumerate(pairs):
            if receiver.hello["gateway_id"] == victim_id:
                await _reconnect(receiver)
            chat = receiver.chats[chats[n]]
            await receiver.wait_until(_holds_all(chat), timeout_s=60)
            got = [chat.messages[seq]["local_id"] for seq in range(1, MESSAGES + 1)]
            assert got == [f"p{n}-m{i}" for i in range(MESSAGES)]  # once each, in order
            assert [acked[n][i] for i in range(MESSAGES)] == list(range(1, MESSAGES + 1))
        moved = [c for c in clients if c.hello["gateway_id"] == victim_id]
        assert not moved, "every user of the killed gateway is now on another one"
        for c in clients:
            await c.close()

    try:
        asyncio.run(scenario())
    finally:
        _restart_dead(balanced)


def _holds_all(chat: ChatState) -> Callable[[], bool]:
    return lambda: chat.contiguous == MESSAGES


def _restart_dead(balanced: Balanced) -> None:
    """Bring back a gateway a test killed, so the next test finds three again."""
    for gateway in balanced.gateways:
        if gateway.proc is not None and gateway.proc.poll() is not None:
            offset = len(gateway.text())
            gateway.start()
            gateway.wait_for_log(r"event=commands_listening", 90, offset)
    balanced.until_all_routed()


def _count(balanced: Balanced, text: str) -> int:
    return balanced.balancer_log().count(text)


def _wait_for(check: Callable[[], bool], deadline_s: float = 30.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not check():
        assert time.monotonic() < deadline, "not within the deadline"
        time.sleep(0.05)


def test_a_gateway_told_to_stop_drains_to_the_others(balanced: Balanced) -> None:
    alice, bob = balanced.account("alice"), balanced.account("bob")
    url = balanced.base.replace("http", "ws", 1) + "/ws?access_token="

    async def scenario() -> None:
        ws = await websockets.connect(url + alice.access_token, compression=None)
        hello = json.loads(await ws.recv())
        gateway = balanced.gateway_of(hello["gateway_id"])
        server = balanced.slot_of(gateway)
        assert gateway.proc is not None
        down = f"gateways/{server} is DOWN"
        downs = _count(balanced, down)
        started = time.monotonic()
        gateway.proc.send_signal(signal.SIGTERM)
        try:
            while True:
                await asyncio.wait_for(ws.recv(), timeout=30)
        except websockets.ConnectionClosed as closed:
            assert closed.rcvd is not None and closed.rcvd.code == 1012  # reconnect
        # The balancer stopped routing to it on its health answer (503, draining), while
        # the client was still connected: the client was sent away only after that…
        await asyncio.to_thread(_wait_for, lambda: _count(balanced, down) > downs, 10)
        line = balanced.balancer_log().split(down, downs + 1)[-1].splitlines()[0]
        assert "Layer7 wrong status, code: 503" in line
        assert re.search(r" [1-9]\d* sessions active", line), line  # ours still open
        # …and the process is gone within its bounded drain.
        await asyncio.to_thread(gateway.proc.wait, 30)
        bound = balanced.settings.gateway_drain_notice_s + balanced.settings.gateway_drain_s
        assert time.monotonic() - started < bound + 5
        assert "event=gateway_drained connections_left=0" in gateway.text()
        # Reconnecting through the same address lands on another gateway, which works.
        again = await balanced.client(alice)
        other = await balanced.client(bob)
        assert again.hello["gateway_id"] != hello["gateway_id"]
        sent = await again.send_text("after the drain", to=bob.user_id, local_id="d1")
        await other.wait_until(
            lambda: (
                other.chats.get(sent.chat_id) is not None
                and other.chats[sent.chat_id].contiguous == 1
            ),
            timeout_s=30,
        )
        await again.close()
        await other.close()
        await ws.close()

    try:
        asyncio.run(scenario())
    finally:
        _restart_dead(balanced)
