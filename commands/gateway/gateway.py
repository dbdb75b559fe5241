"""The WebSocket gateway: holds connections, decides nothing.

A client connects to `/ws` with its access token; the gateway authenticates before the
upgrade, registers the connection in Redis (presence), and from then on:

- turns command frames into commands on Kafka (via the CommandBus, in the order the
  connection sent them) and answers each with its outcome (`ack`, `ok` or `error`);
- pushes what the command processor routes to this gateway (messages, receipts, chat
  changes) and volatile typing frames to the connections of the users named;
- answers `sync` from the read model, `presence` from Redis, `ping` with `pong`.

A user error is an `error` frame; the connection stays up. A connection whose send
queue overflows (a client that does not read) is closed with 1013, so that one slow
client cannot hold memory or stall the others. A gateway told to stop (SIGTERM) drains
(`drain`): it answers `/healthz` with 503 until the balancer has seen it, then closes
every connection with 1012 (reconnect) and waits, boundedly, for them to go.

Here: the connections' lifecycle, their read loop, and the dispatch of each frame. The
rest has its own module: the socket (`wire`), a connection's state (`connection`),
typing frames (`typing_indicator`), presence and the gateway's lease (`presence`), the
frames routed here (`fanout`), sync pages (`sync`). Over 400 lines on purpose: what
remains is one path, a connection from its handshake through its loop to each frame's
answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from dataclasses import dataclass
from functools import partial
from typing import Any
from uuid import UUID

import psycopg
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis
from redis.exceptions import RedisError

from commands.accounts.access import Access
from commands.command import Command, CommandType, Outcome
from commands.gateway import metrics
from commands.gateway.bus import CommandBus
from commands.gateway.connection import Connection, credentials, now_ms
from commands.gateway.envelopes import checked_envelopes, refuse_forged_envelopes
from commands.gateway.fanout import FanOut
from commands.gateway.forward import forward, parse_forward
from commands.gateway.presence import Presence
from commands.gateway.protocol import (
    COMMAND_FRAMES,
    ClientFrame,
    ProtocolError,
    command_args,
    error_frame,
    new_chat_id,
    parse_frame,
)
from commands.gateway.receipts import ReceiptWindow, receipt_window
from commands.gateway.sync import answer_sync
from commands.gateway.typing_indicator import Typing
from commands.gateway.wire import WebSocket
from commands.media.uploads import confirmed_media, release_media
from commands.ratelimit import Limit, LocalBuckets, SharedBuckets, buckets_from_settings
from domain.errors import DomainError
from domain.ids import direct_chat_id, text_of
from infra.auth import Identity
from infra.health import Health
from infra.registry import GatewayRecord, GatewayRegistry
from infra.routing import (
    deliver_channel,
    last_seen_key,
)
from infra.settings import Settings
from infra.subscriber import Subscription

log = logging.getLogger("parley.gateway")

GROUP_FRAMES = frozenset(
    {
        "create_group",
        "rename_group",
        "add_member",
        "remove_member",
        "leave_group",
        "promote_admin",
        "demote_admin",
    }
)
RATE_FLUSH_S = 0.1
RECONNECT = 1012
"""The close code of a draining gateway (RFC 6455 "service restart"): connect again,
through the balancer, to another gateway (docs/protocol.md)."""
DRAIN_POLL_S = 0.05
USER_LIMITS = (Limit.SEND_PER_USER, Limit.GROUP_CHANGE_PER_USER)


@dataclass(frozen=True)
class GatewayAdapters:
    """What a gateway works with besides `Access`, built by the composition root: its id
    (its reply channel and its key in the registry), what it reports as down (`/readyz`),
    the command bus replying on that channel, a PostgreSQL pool (closed) for sync and
    last seen, and the registry of live gateways it joins. `start` opens them."""

    gateway_id: str
    health: Health
    bus: CommandBus
    pool: AsyncConnectionPool
    registry: GatewayRegistry


class Gateway:
    """One gateway process's connections and its links to Kafka, Redis and the read model."""

    def __init__(self, settings: Settings, access: Access, adapters: GatewayAdapters) -> None:
        self.settings = settings
        self.access = access
        self.id = adapters.gateway_id
        self.redis: Redis = access.redis
        self.health = adapters.health
        self.bus = adapters.bus
        self.pool = adapters.pool
        self.registry = adapters.registry
        self.gateways = adapters.registry.watch(settings.registry_report_s)  # assign.py
        self.connections: dict[str, Connection] = {}
        self.draining = False
        self.health_checks = 0  # `/healthz` requests answered: a balancer watches us
        self.refused_checks = 0  # of them, answered "draining"
        self.syncs = 0  # being answered now (`parley_gateway_syncs`)
        self.by_user: dict[UUID, set[Connection]] = defaultdict(set)
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = (
            set()
        )  # forwards, media releases: held till done
        self.typing = Typing(self.pool, self.redis)
        self.presence = Presence(
            self.id, self.redis, self.pool, access.accounts, self.health, self.by_user
        )
        self.fanout = FanOut(self.by_user, self.typing)
        # Rate limits are decided here, with no round trip: a connection's buckets live
        # only here; a user's are reconciled with Redis in the background (every
        # RATE_FLUSH_S), so they hold across reconnects and gateways.
        buckets = buckets_from_settings(settings)
        self.connection_limits = LocalBuckets(buckets)
        self.user_limits = SharedBuckets(self.redis, buckets)
        self._routes = Subscription(
            settings.redis_url,
            self.health,
            "delivery_listener",
            self.fanout.routed,
            channels=[deliver_channel(self.id)],
            patterns=["parley:logout:*"],
            on_subscribed=self.presence.register_again,
        )

    # Lifecycle

    async def start(self, url: str) -> None:
        """Open the links, then join the registry as reachable at `url` (ws://…/ws)."""
        await self.pool.open()
        await self.bus.start()
        await self._routes.start()
        await self.registry.join(GatewayRecord(self.id, url, 0))
        await self.gateways.start()
        metrics.CONNECTIONS.read = lambda: len(self.connections)
        metrics.SYNCS.read = lambda: self.syncs
        self._tasks = [
            asyncio.create_task(self.presence.heartbeat(), name="gateway-heartbeat"),
            asyncio.create_task(self._flush_limits(), name="gateway-rate-flush"),
            asyncio.create_task(self._report_load(), name="gateway-registry"),
        ]
        log.info("event=gateway_started gateway=%s url=%s", self.id, url)

    async def _report_load(self) -> None:
        """Tell the registry this gateway lives and how many connections it holds."""
        while not self.draining:
            await asyncio.sleep(self.settings.registry_report_s)
            if self.draining:
                return
            try:
                await self.registry.report(len(self.connections))
                self.health.up("registry")
            except Exception as exc:  # the registry is down: keep serving, say so
                self.health.down("registry", exc)

    async def stop(self) -> None:
        for connection in list(self.connections.values()):
            connection.close(1001)
        await self._routes.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.presence.forget(list(self.connections.values()))
        with contextlib.suppress(Exception):
            await self.registry.leave()
        await self.gateways.close()
        with contextlib.suppress(Exception):
            await self.registry.close()
        await self.bus.stop()
        await self.pool.close()
        log.info("event=gateway_stopped gateway=%s", self.id)

    def checked(self) -> bool:
        """Count a health check; whether it may be answered healthy (not draining)."""
        self.health_checks += 1
        if self.draining:
            self.refused_checks += 1
        return not self.draining

    async def drain(self) -> None:
        """Stop taking connections and send the clients elsewhere, within bounded time.

        While the balancer still routes here (it has not yet seen `balancer_fall` checks
        refused, and `gateway_drain_notice_s` has not passed), clients told to reconnect
        would come straight back; so the connections are closed (1012) only then, and
        the gateway waits up to `gateway_drain_s` for them to go. A gateway nothing
        health-checks (no balancer) closes them at once.
        """
        self.draining = True
        loop = asyncio.get_running_loop()
        log.info("event=gateway_draining connections=%d", len(self.connections))
        try:  # no more clients sent here by the assignment endpoint
            await self.registry.leave()
        except Exception as exc:
            log.warning("event=registry_leave_failed error=%s", type(exc).__name__)
        if self.health_checks:
            notice = loop.time() + self.settings.gateway_drain_notice_s
            while self.refused_checks < self.settings.balancer_fall and loop.time() < notice:
                await asyncio.sleep(DRAIN_POLL_S)
        for connection in list(self.connections.values()):
            connection.close(RECONNECT)
        deadline = loop.time() + self.settings.gateway_drain_s
        while self.connections and loop.time() < deadline:
            await asyncio.sleep(DRAIN_POLL_S)
        log.info("event=gateway_drained connections_left=%d", len(self.connections))

    # One WebSocket

    async def serve(self, ws: WebSocket) -> None:
        if self.draining:  # reached us before the balancer noticed: go elsewhere
            if ws.accept():
                ws.close(RECONNECT)
            return
        identity = await self._admit(ws)
        if identity is None or not ws.accept():
            return
        metrics.CONNECTS.inc()
        connection = Connection(ws, identity)
        self.connections[connection.id] = connection
        self.by_user[connection.user_id].add(connection)
        await self._mark_present(connection)
        heartbeat = self.settings.ws_heartbeat_s
        heartbeat_s = int(heartbeat) if heartbeat.is_integer() else heartbeat  # 20, not 20.0
        log.info(
            "event=connected connection=%s user=%s device=%s",
            connection.id,
            connection.user_id,
            identity.device_id,
        )
        connection.push(
            {
                "type": "hello",
                "user_id": str(identity.user_id),
                "device_id": identity.device_id,
                "connection_id": connection.id,
                "gateway_id": self.id,
                "heartbeat_s": heartbeat_s,
                "max_frame_bytes": self.settings.ws_max_frame_bytes,
            }
        )
        try:
            await self._read(connection)
        finally:
            connection.close(connection.close_code)
            self.connections.pop(connection.id, None)
            self.by_user[connection.user_id].discard(connection)
            self.connection_limits.forget(Limit.SEND_PER_CONNECTION, connection.id)
            self.connection_limits.forget(Limit.GROUP_CHANGE_PER_CONNECTION, connection.id)
            if not self.by_user[connection.user_id]:
                del self.by_user[connection.user_id]
                self.user_limits.forget(USER_LIMITS, str(connection.user_id))
            await self.presence.forget([connection])
            log.info("event=disconnected connection=%s user=%s", connection.id, connection.user_id)

    async def _admit(self, ws: WebSocket) -> Identity | None:
        """Check origin and token before the upgrade; refusing answers HTTP 403."""
        origin, token = credentials(ws.headers, ws.query_string)
        allowed = set(self.settings.allowed_origins)
        if origin is not None and "*" not in allowed and origin not in allowed:
            log.info("event=refused reason=origin origin=%s", origin[:100])
            ws.refuse()
            return None
        try:
            return await self.access.tokens.authenticate(token)
        except DomainError as exc:
            log.info("event=refused reason=%s", exc.code)
            ws.refuse()
            return None

    async def _read(self, connection: Connection) -> None:
        ws = connection.ws
        while not connection.closing:
            raw = await ws.receive()
            if raw is None:
                return
            if isinstance(raw, bytes):  # a binary message: JSON in UTF-8 is taken too
                try:
                    raw = raw.decode("utf-8")
                except UnicodeDecodeError:
                    connection.push(error_frame("bad_json", "frames are UTF-8 JSON text"))
                    continue
            frame: ClientFrame | None = None
            try:
                frame = parse_frame(raw)
                await self._handle(connection, frame)
            except ProtocolError as exc:
                connection.push(error_frame(exc.code, exc.message, exc.request_id, **exc.extra()))
            except DomainError as exc:
                request_id = frame.request_id if frame is not None else ""
                connection.push(
                    error_frame(exc.code, exc.message or exc.code, request_id, **_retry_after(exc))
                )
            except (psycopg.OperationalError, RedisError) as exc:  # a server is away
                log.warning(
                    "event=frame_unavailable connection=%s type=%s error=%s",
                    connection.id,
                    frame.type if frame else "?",
                    type(exc).__name__,
                )
                request_id = frame.request_id if frame is not None else ""
                connection.push(
                    error_frame("unavailable", "a server is away; retry shortly", request_id)
                )
            except Exception as exc:  # a bug must not take the connection down with it
                log.exception(
                    "event=frame_failed connection=%s type=%s error=%s",
                    connection.id,
                    frame.type if frame else "?",
                    type(exc).__name__,
                )
                connection.push(
                    error_frame(
                        "internal",
                        "the frame could not be handled",
                        frame.request_id if frame else "",
                    )
                )

    # Frames

    async def _handle(self, connection: Connection, frame: ClientFrame) -> None:
        metrics.FRAMES.inc(frame.type)
        if frame.type in COMMAND_FRAMES:
            await self._command(connection, frame)
        elif frame.type == "ping":
            connection.push({"type": "pong", "id": frame.request_id, "at": now_ms()})
            await self.redis.set(last_seen_key(connection.user_id), now_ms())
        elif frame.type == "typing":
            await self.typing.handle(connection, frame)
        elif frame.type == "sync":
            self.syncs += 1
            try:
                await answer_sync(
                    self.pool, self.redis, connection, frame, self.settings.sync_settle_timeout_s
                )
            finally:
                self.syncs -= 1
        elif frame.type == "presence":
            await self.presence.answer(connection, frame)
        elif frame.type == "forward":
            self._forward(connection, frame)

    async def _command(self, connection: Connection, frame: ClientFrame) -> None:
        actor = connection.user_id
        kind = COMMAND_FRAMES[frame.type]
        args = command_args(frame)
        if frame.type == "send":
            allowed = self._within_limits(
                connection, frame, Limit.SEND_PER_USER, Limit.SEND_PER_CONNECTION
            )
        elif frame.type in GROUP_FRAMES:
            allowed = self._within_limits(
                connection, frame, Limit.GROUP_CHANGE_PER_USER, Limit.GROUP_CHANGE_PER_CONNECTION
            )
        else:
            allowed = True
        if not allowed:
            return
        if frame.type == "send" and frame.fields.get("envelopes") is not None:
            peer = frame.uuid("to", required=False)
            args["body"] = await checked_envelopes(
                self.pool, frame, actor, connection.identity.device_id, peer
            )
        elif frame.type == "send":
            refuse_forged_envelopes(frame, args["body"])
        if frame.type == "create_group":
            chat_id = new_chat_id(frame)
        elif frame.type == "send" and frame.fields.get("to") is not None:
            peer = frame.uuid("to")
            assert peer is not None
            if peer == actor:
                raise ProtocolError("bad_frame", "`to` must be another user", frame.request_id)
            chat_id = direct_chat_id(actor, peer)
            args["to"] = text_of(peer)
        else:
            chat = frame.uuid("chat_id")
            assert chat is not None
            chat_id = chat
        if frame.type == "send" and "media" in args:
            # Only the sender's own confirmed upload; the stored reference replaces theirs.
            async with self.pool.connection() as conn:
                args["media"] = await confirmed_media(conn, actor, args["media"])
        command = Command(
            kind,
            chat_id,
            actor,
            args,
            device_id=connection.identity.device_id,
            reply_to=self.id,
            request_id=frame.request_id,
            # A frame without an `id` asked for no answer: only a failure is told.
            quiet=not frame.request_id and frame.type != "send",
        )
        if frame.type in ("delivered", "read"):
            connection.acknowledged(text_of(chat_id), frame.type == "read", args["up_to"])
            if command.quiet:  # coalesced: nobody waits for its answer
                self._receipts(connection).submit(chat_id, frame.type == "read", args["up_to"])
                return
        metrics.COMMANDS.inc(frame.type)
        if log.isEnabledFor(logging.DEBUG):  # the command's trail (PARLEY_LOG_LEVEL=debug)
            log.debug(
                "event=command_sent command=%s type=%s chat=%s local_id=%s request=%s "
                "connection=%s",
                command.command_id,
                frame.type,
                chat_id,
                args.get("local_id", "-"),
                frame.request_id or "-",
                connection.id,
            )
        if command.quiet:

            def failed(outcome: Outcome) -> None:
                connection.push(error_frame(outcome.error_code, outcome.error_message, ""))

            self.bus.fire(command, failed)
            return
        await connection.admit_command()
        started = asyncio.get_running_loop().time()
        try:
            self.bus.request(command, partial(self._answered, connection, command, started))
        except Exception:
            connection.command_done()
            raise

    def _forward(self, connection: Connection, frame: ClientFrame) -> None:
        """Copy a message to a few chats (`commands.gateway.forward`), as one send for
        the rate limits; its copies are answered together, in the background."""
        request = parse_forward(frame, self.settings.forward_max_chats)
        limits = (Limit.SEND_PER_USER, Limit.SEND_PER_CONNECTION)
        if not self._within_limits(connection, frame, *limits):
            return
        copies = forward(connection, request, frame.request_id, self.pool, self.bus, self.id)
        task = asyncio.create_task(copies)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _receipts(self, connection: Connection) -> ReceiptWindow:
        if connection.receipts is None:
            connection.receipts = receipt_window(self.settings, self.bus, self.id, connection)
        window: ReceiptWindow = connection.receipts
        return window

    def _within_limits(
        self, connection: Connection, frame: ClientFrame, per_user: Limit, per_connection: Limit
    ) -> bool:
        """Take a token from the connection's and the user's buckets, or answer
        `rate_limited` (taking from neither) and return False."""
        mine = {per_connection: connection.id}
        decision = self.connection_limits.take(mine)
        if decision.allowed:
            decision = self.user_limits.take({per_user: text_of(connection.user_id)})
            if not decision.allowed:
                self.connection_limits.give_back(mine)
        if not decision.allowed:
            connection.push(
                error_frame(
                    "rate_limited",
                    "too many requests; retry after retry_after_s",
                    frame.request_id,
                    retry_after_s=decision.retry_after_s,
                )
            )
        return decision.allowed

    def _answered(
        self,
        connection: Connection,
        command: Command,
        started: float,
        result: Outcome | BaseException,
    ) -> None:
        """Tell the client the outcome of `command` (`CommandBus.request`'s callback)."""
        try:
            if isinstance(result, asyncio.CancelledError):
                return  # the gateway is stopping
            if isinstance(result, TimeoutError):
                log.info("event=command_timeout command=%s", command.command_id)
                connection.push(
                    error_frame(
                        "timeout",
                        "no outcome in time; resend with the same local_id to be sure",
                        command.request_id,
                    )
                )
                return
            if isinstance(result, BaseException):
                log.warning(
                    "event=command_failed command=%s error=%s",
                    command.command_id,
                    type(result).__name__,
                )
                connection.push(
                    error_frame("unavailable", "the command could not be sent", command.request_id)
                )
                return
            outcome = result
            took = asyncio.get_running_loop().time() - started
            metrics.COMMAND_SECONDS.observe(took)
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "event=command_answered command=%s ok=%s code=%s ms=%.1f",
                    command.command_id,
                    outcome.ok,
                    outcome.error_code or "-",
                    took * 1000,
                )
            if not outcome.ok:
                if command.type is CommandType.SEND and "media" in command.args:
                    # Refused: the upload was not sent. Released before the client is told.
                    task = asyncio.create_task(self._refused_media(connection, command, outcome))
                    self._background.add(task)
                    task.add_done_callback(self._background.discard)
                    return
                connection.push(
                    error_frame(outcome.error_code, outcome.error_message, command.request_id)
                )
            elif command.type is CommandType.SEND:
                metrics.ACKS.inc()
                connection.push(
                    {
                        "type": "ack",
                        "id": command.request_id,
                        "chat_id": outcome.chat_id,
                        "position": outcome.position,
                        **outcome.result,
                    }
                )
            else:
                connection.push(
                    {
                        "type": "ok",
                        "id": command.request_id,
                        "command": command.type,
                        "chat_id": outcome.chat_id,
                        "position": outcome.position,
                        "result": outcome.result,
                    }
                )
        finally:
            connection.command_done()

    async def _refused_media(
        self, connection: Connection, command: Command, outcome: Outcome
    ) -> None:
        try:
            async with self.pool.connection() as conn:
                await release_media(conn, command.actor, command.args["media"])
        except Exception as exc:  # the upload stays unsendable until it expires
            log.warning("event=media_release_failed error=%s", type(exc).__name__)
        finally:
            connection.push(
                error_frame(outcome.error_code, outcome.error_message, command.request_id)
            )

    async def _mark_present(self, connection: Connection) -> None:
        """Register the connection; a user's first connection here loads their limits."""
        await self.presence.mark(connection)
        if not self.user_limits.knows(USER_LIMITS[0], str(connection.user_id)):
            await self.user_limits.load(USER_LIMITS, str(connection.user_id))

    async def _flush_limits(self) -> None:
        """Add the users' takes to their shared buckets in Redis, a few times a second."""
        while True:
            await asyncio.sleep(RATE_FLUSH_S)
            try:
                await self.user_limits.flush()
            except Exception as exc:  # kept, and counted at the next flush
                log.warning("event=rate_flush_failed error=%s", type(exc).__name__)


def _retry_after(exc: DomainError) -> dict[str, Any]:
    retry = getattr(exc, "retry_after_s", None)
    return {} if retry is None else {"retry_after_s": retry}
