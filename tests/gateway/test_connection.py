"""A connection's bound on commands in flight and its own receipts (no socket needed).

Its frames out, and a slow reader, are `test_wire.py`'s."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from commands.gateway.connection import MAX_ACKED_CHATS, MAX_IN_FLIGHT, Connection
from infra.auth import Identity


def connection() -> Connection:
    identity = Identity(uuid.uuid4(), "d1", "s1", "t1", 0)
    return Connection(ws=None, identity=identity)  # type: ignore[arg-type]


def test_commands_beyond_the_bound_wait_for_one_to_be_answered() -> None:
    async def scenario() -> tuple[bool, bool]:
        c = connection()
        for _ in range(MAX_IN_FLIGHT):
            await c.admit_command()
        extra = asyncio.ensure_future(c.admit_command())
        for _ in range(5):  # it runs, finds no room and waits on the flag
            await asyncio.sleep(0)
        waited = not extra.done()
        c.command_done()
        await asyncio.wait_for(extra, 5)
        return waited, c.in_flight == MAX_IN_FLIGHT

    assert asyncio.run(scenario()) == (True, True)


def _receipt(chat: str, delivered: int, read: int | None) -> dict[str, Any]:
    return {
        "type": "receipt",
        "chat_id": chat,
        "user_id": "me",
        "delivered_up_to": delivered,
        "read_up_to": read,
    }


def test_a_connection_knows_the_receipts_of_its_own_acknowledgements_only() -> None:
    c = connection()
    assert not c.knows(_receipt("x", 1, None))  # nothing acknowledged yet
    c.acknowledged("x", read=False, up_to=5)
    assert c.knows(_receipt("x", 5, None)) and c.knows(_receipt("x", 3, None))
    assert not c.knows(_receipt("x", 6, None))  # another device got further
    assert not c.knows(_receipt("x", 5, 5))  # this one has read nothing yet
    assert not c.knows(_receipt("y", 1, None))  # another chat
    c.acknowledged("x", read=True, up_to=7)  # reading implies delivery
    assert c.knows(_receipt("x", 7, 7)) and c.knows(_receipt("x", 7, None))
    c.acknowledged("x", read=False, up_to=2)  # an older acknowledgement moves nothing back
    assert c.knows(_receipt("x", 7, 7))


def test_the_acknowledgements_remembered_are_bounded() -> None:
    c = connection()
    for n in range(MAX_ACKED_CHATS):
        c.acknowledged(f"chat{n}", read=True, up_to=1)
    assert c.knows(_receipt("chat0", 1, 1))
    c.acknowledged("one more", read=True, up_to=1)
    assert c.acked is not None and len(c.acked) == 1
    assert not c.knows(_receipt("chat0", 1, 1))  # forgotten: pushed, as before
