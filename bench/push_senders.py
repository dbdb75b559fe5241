"""The senders of `parley bench push`, in a process of their own (`python -m
bench.push_senders PHASE SPEC.json`), so the bench process, which holds the receiver,
never imports the client library and the two do not share an interpreter.

- `latency`: spec {"base", "senders", "recipients", "rate"}: the senders send one
  message to each recipient, `rate` a second in all; prints {"acked": {recipient: unix
  time of the ack}}.
- `groups`: spec {"base", "senders", "groups"}: sender i makes a group of `groups[i]`
  and sends it one message; prints {"sent": n}.

Senders are [user_id, device_id, access_token] sessions (`bench.driver.issue_accounts`).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from client import Account, ChatClient


def _client(base: str, session: list[str]) -> ChatClient:
    user_id, device, token = session
    return ChatClient(base, Account(user_id, user_id, device, token, ""), auto_delivered=False)


async def latency(spec: dict[str, Any]) -> dict[str, Any]:
    clients = [_client(spec["base"], s) for s in spec["senders"]]
    await asyncio.gather(*(c.connect() for c in clients))
    recipients, rate, lanes = spec["recipients"], spec["rate"], len(clients)
    acked: dict[str, float] = {}
    started = time.monotonic()

    async def lane(i: int) -> None:
        for n in range(i, len(recipients), lanes):
            await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
            await clients[i].send_text("ping", to=recipients[n])
            acked[recipients[n]] = time.time()

    try:
        await asyncio.gather(*(lane(i) for i in range(lanes)))
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    return {"acked": acked}


async def groups(spec: dict[str, Any]) -> dict[str, Any]:
    clients = [_client(spec["base"], s) for s in spec["senders"]]
    await asyncio.gather(*(c.connect() for c in clients))
    try:
        chats = [
            await client.create_group(f"bench {g}", members)
            for g, (client, members) in enumerate(zip(clients, spec["groups"], strict=True))
        ]
        await asyncio.gather(
            *(c.send_text("all", chat_id=chat) for c, chat in zip(clients, chats, strict=True))
        )
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    return {"sent": len(chats)}


def main() -> None:
    phase, path = sys.argv[1], sys.argv[2]
    with open(path) as spec_file:
        spec = json.load(spec_file)
    run = latency if phase == "latency" else groups
    print(json.dumps(asyncio.run(run(spec))))


if __name__ == "__main__":
    main()
