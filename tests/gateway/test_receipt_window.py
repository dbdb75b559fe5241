"""A connection's receipts coalesced per chat (`commands/gateway/receipts.py`): no server."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from commands.gateway.receipts import ReceiptWindow

pytestmark = pytest.mark.unit

WINDOW_S = 0.05


async def _wait_for(condition: object, timeout_s: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def test_the_first_receipt_goes_at_once_and_a_burst_as_its_highest() -> None:
    chat = uuid.uuid4()
    sent: list[tuple[bool, int]] = []

    async def scenario() -> None:
        window = ReceiptWindow(WINDOW_S, lambda c, read, up_to: sent.append((read, up_to)))
        window.submit(chat, False, 1)
        assert sent == [(False, 1)]  # a lone message's tick is not delayed
        for up_to in (2, 3, 5, 4):
            window.submit(chat, False, up_to)
        assert sent == [(False, 1)]
        await _wait_for(lambda: len(sent) == 2)
        assert sent == [(False, 1), (False, 5)]
        assert window.merged == 3

    asyncio.run(scenario())


def test_a_read_covers_a_held_delivered() -> None:
    chat, other = uuid.uuid4(), uuid.uuid4()
    sent: list[tuple[uuid.UUID, bool, int]] = []

    async def scenario() -> None:
        window = ReceiptWindow(WINDOW_S, lambda c, read, up_to: sent.append((c, read, up_to)))
        window.submit(chat, False, 1)
        window.submit(chat, False, 2)  # held
        window.submit(other, False, 7)  # another chat: its own window, sent at once
        window.submit(chat, True, 2)  # the first read: at once, and covers the held 2
        await _wait_for(lambda: window.open_windows == 0)  # every window closed
        assert sent == [(chat, False, 1), (other, False, 7), (chat, True, 2)]

    asyncio.run(scenario())


def test_without_a_window_every_receipt_goes() -> None:
    chat = uuid.uuid4()
    sent: list[int] = []

    async def scenario() -> None:
        window = ReceiptWindow(0, lambda c, read, up_to: sent.append(up_to))
        for up_to in (1, 2, 3):
            window.submit(chat, False, up_to)
        assert sent == [1, 2, 3]

    asyncio.run(scenario())
