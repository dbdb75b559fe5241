"""A processor joins and another leaves while users chat across three gateways.

The processors share the commands topic's partitions in one consumer group: a new one
takes some of them, one sent SIGTERM finishes its batch, commits and leaves, and its
partitions move to the others. Throughout, every acked message reaches its recipient
once and in order (per-chat `seq`), and the senders never stop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from client.chat import ChatState
from tests.gateway.test_gateway_crash import _reconnect
from tests.scale.conftest import Balanced
from tests.services import Service

PAIRS = 3
AFTER_CHANGES = 15  # messages each pair still sends once the group settled again


def test_a_processor_joins_and_one_leaves_under_load(balanced: Balanced) -> None:
    users = [balanced.account(f"r{i}") for i in range(2 * PAIRS)]
    leaving = balanced.services["processor-1"]
    joining = Service("processor", balanced.logs / "processor-3.log", balanced.env)

    async def change_processors() -> None:
        before = len(leaving.text())
        joining.start()
        await asyncio.to_thread(joining.wait_for_log, r"partitions_assigned partitions=\[\d", 90)
        # The group settled with the newcomer: the one about to leave was given its share.
        await asyncio.to_thread(
            leaving.wait_for_log, r"partitions_assigned partitions=\[\d", 90, before
        )
        offset = len(leaving.text())
        await asyncio.to_thread(leaving.stop)  # SIGTERM: finish the batch, commit, leave
        # It stopped by itself (its offsets committed, or if a rebalance refused the commit,
        # its last batch is decided again elsewhere and answered from the stored outcome).
        assert "event=processor_stopped" in leaving.text()[offset:]

    async def scenario() -> None:
        clients = [await balanced.client(user) for user in users]
        pairs = [(clients[2 * i], clients[2 * i + 1]) for i in range(PAIRS)]
        chats = []
        for n, (sender, receiver) in enumerate(pairs):
            first = await sender.send_text("m0", to=receiver.user_id, local_id=f"r{n}-m0")
            chats.append(first.chat_id)
        sent = [1] * PAIRS
        changes = asyncio.create_task(change_processors())

        async def send(n: int) -> None:
            sender = pairs[n][0]
            extra = 0
            while extra < AFTER_CHANGES:
                i = sent[n]
                while True:
                    try:
                        ack = await sender.send_text(
                            f"m{i}", chat_id=chats[n], local_id=f"r{n}-m{i}"
                        )
                        break
                    except Exception:  # a command timed out while partitions moved
                        await _reconnect(sender)
                assert ack.seq == i + 1, f"pair {n}: message {i} acked as seq {ack.seq}"
                sent[n] = i + 1
                if changes.done():
                    extra += 1

        await asyncio.gather(*(send(n) for n in range(PAIRS)))
        await changes  # its failure, if any, fails the test
        for n, (_, receiver) in enumerate(pairs):
            chat = receiver.chats[chats[n]]
            await receiver.wait_until(_holds(chat, sent[n]), timeout_s=60)
            got = [chat.messages[seq]["local_id"] for seq in range(1, sent[n] + 1)]
            assert got == [f"r{n}-m{i}" for i in range(sent[n])]  # once each, in order
        for c in clients:
            await c.close()
        print(f"messages per chat while the processors changed: {sent}")

    try:
        asyncio.run(scenario())
    finally:
        joining.stop()
        if leaving.proc is not None and leaving.proc.poll() is not None:
            offset = len(leaving.text())
            leaving.start()
            leaving.wait_for_log(r"partitions_assigned partitions=\[\d", 90, offset)


def _holds(chat: ChatState, count: int) -> Callable[[], bool]:
    return lambda: chat.contiguous == count
