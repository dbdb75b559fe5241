"""The gateway's side of the write path: put commands on Kafka, await their outcomes.

Each gateway has its own reply channel (Redis pub/sub ``parley:replies:<id>``) that it
subscribes to before sending anything; the processor publishes each command's outcome
there. The subscription outlives a Redis restart (`infra.subscriber`): while it is away
the bus reports `reply_listener` down in the process's `Health` (and `/readyz`). A lost
reply is not a lost message: the client resends with the same local id and gets the same
answer. A quiet command (`fire`) is answered only if it failed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from commands.command import Command, CommandType, Outcome, reply_channel
from commands.gateway.outbox import Outbox
from infra.health import Health
from infra.settings import Settings
from infra.subscriber import Subscription
from infra.topics import COMMANDS

log = logging.getLogger("parley.bus")

MAX_QUIET = 100_000
"""Quiet commands remembered at once; beyond it the oldest's failures go untold."""


class CommandBus:
    """Submit commands and await their outcomes, correlated by command id."""

    def __init__(self, settings: Settings, reply_to: str, health: Health | None = None) -> None:
        self.settings = settings
        self.reply_to = reply_to
        self.health = health or Health()
        self.topic = settings.topic(COMMANDS)
        self._pending: dict[str, asyncio.Future[Outcome]] = {}
        # Sends awaiting their outcome: command id -> (key, command), to ask again for
        # answers published while the reply channel was away (`_ask_again`).
        self._sends: dict[str, tuple[bytes, bytes]] = {}
        # Quiet commands: command id -> (when to forget it, what to do if it failed).
        self._quiet: OrderedDict[str, tuple[float, Callable[[Outcome], None]]] = OrderedDict()
        self._listener: Subscription | None = None
        self._outbox: Outbox | None = None

    async def start(self) -> None:
        self._listener = Subscription(
            self.settings.redis_url,
            self.health,
            "reply_listener",
            self._reply,
            channels=[reply_channel(self.reply_to)],
            on_subscribed=self._ask_again,
        )
        await self._listener.start()
        self._outbox = Outbox(self.settings, self.topic, f"parley-gateway-{self.reply_to}")
        self._outbox.start()

    async def stop(self) -> None:
        if self._outbox is not None:
            await self._outbox.stop()
        if self._listener is not None:
            await self._listener.stop()
        for future in self._pending.values():
            if not future.done():
                future.cancel()

    async def submit(self, command: Command, timeout_s: float | None = None) -> Outcome:
        """Send `command` (its reply_to must be this bus's) and wait for its outcome."""
        return await self.enqueue(command, timeout_s)

    def enqueue(self, command: Command, timeout_s: float | None = None) -> Awaitable[Outcome]:
        """Hand `command` to the producer now, in call order; await the result for its outcome.

        Commands enqueued one after another from one task reach Kafka in that order, so
        one device's messages to a chat keep their order. The await raises what ended
        the wait instead (`request`).
        """
        answer: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()

        def answered(result: Outcome | BaseException) -> None:
            if answer.done():  # the caller stopped waiting
                return
            if isinstance(result, Outcome):
                answer.set_result(result)
            elif isinstance(result, asyncio.CancelledError):
                answer.cancel()
            else:
                answer.set_exception(result)

        self.request(command, answered, timeout_s)
        return answer

    def request(
        self,
        command: Command,
        answered: Callable[[Outcome | BaseException], None],
        timeout_s: float | None = None,
    ) -> None:
        """Hand `command` to the producer now, in call order (as `enqueue`); `answered`
        is called once, in the event loop, with the outcome, or with what ended the wait:
        `TimeoutError` (no outcome within the deadline, Kafka's acknowledgement
        included), the producer's error, or `CancelledError` (the bus stopped).

        The gateway asks this for every command a client waits on: a task and two
        `wait_for` for each cost it about 20 us a send more than a timer and two
        callbacks (docs/performance.md, "The hot path, fourth step")."""
        assert self._outbox is not None, "start() the bus first"
        loop = asyncio.get_running_loop()
        key = str(command.command_id)
        future: asyncio.Future[Outcome] = loop.create_future()
        self._pending[key] = future
        encoded = command.encode()
        if command.type == CommandType.SEND:
            self._sends[key] = (command.key, encoded)
        delivery = self._outbox.append(command.key, encoded)

        def finish(result: Outcome | BaseException) -> None:
            if self._pending.get(key) is not future:
                return  # answered already
            del self._pending[key]
            self._sends.pop(key, None)
            timer.cancel()
            answered(result)

        def reported(sent: asyncio.Future[None]) -> None:
            if sent.cancelled():
                finish(asyncio.CancelledError())
            elif (error := sent.exception()) is not None:
                finish(error)

        def decided(outcome: asyncio.Future[Outcome]) -> None:
            finish(asyncio.CancelledError() if outcome.cancelled() else outcome.result())

        wait = self.settings.command_timeout_s if timeout_s is None else timeout_s
        timer = loop.call_later(wait, finish, TimeoutError())
        delivery.add_done_callback(reported)
        future.add_done_callback(decided)

    def fire(self, command: Command, on_failure: Callable[[Outcome], None]) -> None:
        """Hand a quiet command to the producer now, in call order (as `enqueue`);
        `on_failure` is called with its outcome only if it failed (or could not be
        sent). Success is silent, and nothing waits for it."""
        assert self._outbox is not None, "start() the bus first"
        assert command.quiet, "only quiet commands are fired"
        key = str(command.command_id)
        now = time.monotonic()
        while self._quiet:  # forget the oldest once no failure can come for them
            oldest, (forget_at, _) = next(iter(self._quiet.items()))
            if forget_at > now and len(self._quiet) < MAX_QUIET:
                break
            del self._quiet[oldest]
        self._quiet[key] = (now + self.settings.command_timeout_s, on_failure)
        delivery = self._outbox.append(command.key, command.encode())

        def sent(future: asyncio.Future[None]) -> None:
            if future.cancelled() or future.exception() is not None:
                entry = self._quiet.pop(key, None)
                if entry is not None:
                    entry[1](
                        Outcome(
                            key,
                            "",
                            str(command.chat_id),
                            ok=False,
                            error_code="unavailable",
                            error_message="the command could not be sent",
                        )
                    )

        delivery.add_done_callback(sent)

    async def _ask_again(self) -> None:
        """The reply channel is back after Redis went away: the answers to the sends
        still waiting may have been published meanwhile, to no one. Send them again:
        a send is idempotent (same sender, device and local id: the same message, seq
        and answer, marked `duplicate`), so each gets its answer now rather than the
        client's resend after a timeout."""
        assert self._outbox is not None
        waiting = [
            self._sends[k] for k, f in self._pending.items() if k in self._sends and not f.done()
        ]
        for key, encoded in waiting:
            self._outbox.append(key, encoded)
        if waiting:
            log.info("event=sends_asked_again count=%d", len(waiting))

    def _reply(self, message: dict[str, Any]) -> None:
        try:
            outcome = Outcome.decode(message["data"])
        except (ValueError, KeyError) as exc:
            log.warning("event=bad_reply error=%s", type(exc).__name__)
            return
        future = self._pending.get(outcome.command_id)
        if future is not None and not future.done():
            future.set_result(outcome)
            return
        quiet = self._quiet.pop(outcome.command_id, None)
        if quiet is not None and not outcome.ok:
            quiet[1](outcome)
