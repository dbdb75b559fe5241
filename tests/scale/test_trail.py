"""One command's trail through the logs, by its ids (`PARLEY_LOG_LEVEL=debug`).

The sender's gateway names the command id with the client's `local_id`; the processor
that decided it names the same command id with the message id it gave, and names that
message id with the same `local_id` when it pushes it; the recipient's gateway that
hands it to the socket names them too. So an operator can follow one message from the socket it came
in on to the socket it went out of.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid

from tests.scale.conftest import Balanced
from tests.services import Service


def _find(services: list[Service], pattern: str, deadline_s: float = 30) -> re.Match[str]:
    regex = re.compile(pattern)
    deadline = time.monotonic() + deadline_s
    while True:
        for service in services:
            found = regex.search(service.text())
            if found:
                return found
        assert time.monotonic() < deadline, f"no /{pattern}/ in {[s.name for s in services]}"
        time.sleep(0.05)


def test_a_message_is_followed_by_its_ids_from_socket_to_socket(balanced: Balanced) -> None:
    alice, bob = balanced.account("t-alice"), balanced.account("t-bob")
    local_id = f"trail-{uuid.uuid4().hex[:8]}"

    async def scenario() -> str:
        a, b = await balanced.client(alice), await balanced.client(bob)
        sent = await a.send_text("followed", to=bob.user_id, local_id=local_id)
        await b.wait_until(
            lambda: sent.chat_id in b.chats and b.chats[sent.chat_id].contiguous == 1,
            timeout_s=30,
        )
        await a.close()
        await b.close()
        return str(sent.message_id)

    message_id = asyncio.run(scenario())
    gateways = balanced.gateways
    processors = [s for name, s in balanced.services.items() if name.startswith("processor")]
    sent = _find(gateways, rf"event=command_sent command=(\S+) type=send \S+ local_id={local_id} ")
    command = sent.group(1)
    _find(gateways, rf"event=command_answered command={command} ok=True")
    _find(
        processors,
        rf"event=command_decided command={command} \S+ ok=True code=- seq=1 "
        rf"message={message_id} local_id={local_id} ",
    )
    _find(processors, rf"event=message_routed .*message={message_id} local_id={local_id} ")
    _find(gateways, rf"event=message_pushed .*message={message_id} local_id={local_id} ")
