"""The WebSocket gateway: holds connections, decides nothing.

A client connects to `/ws` with its access token; the gateway authenticates before the
upgrade, registers the connection in Redis (presence), and from then on:

- turns command frames into commands on Kafka (via the CommandBus, in the order the
  connection sent them) and answers each with its outcome (`ack`, `ok` or `error`);
- pushes what the delivery agent routes to this gateway (messages, receipts, chat
  changes) and volatile typing frames to the connections of the users named;
- answers `sync` from the read model, `presence` from Redis, `ping` with `pong`.

A user error is an `error` frame; the connection stays up. A connection whose send
queue overflows (a client that does not read) is closed with 1013, so that one slow
client cannot hold memory or stall the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl
from uuid import UUID

import orjson
import psycopg
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from commands.access import Access
from commands.auth import Identity
from commands.bus import CommandBus
from commands.envelope import Command, CommandType, Outcome
from commands.media import confirmed_media
from commands.protocol import (
    COMMAND_FRAMES,
    ClientFrame,
    ProtocolError,
    command_args,
    dump,
    error_frame,
    new_chat_id,
    parse_frame,
)
from commands.ratelimit import Limit, LocalBuckets, SharedBuckets, buckets_from_settings
from commands.sync import blocked_either_way, chat_summaries, missed_messages
from commands.wsprotocol import Flag, Mailbox
from domain.errors import DomainError
from domain.ids import direct_chat_id
from infra.health import Health
from infra.routing import (
    GATEWAY_TTL_S,
    PRESENCE_TTL_S,
    deliver_channel,
    gateway_key,
    last_seen_key,
    presence_key,
    route,
)
from infra.settings import Settings
from infra.subscriber import Subscription
from projections.schema import LIVE_SCHEMA

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
TYPING_DEBOUNCE_S = 2.0
MAX_IN_FLIGHT = 256
"""Commands of one connection awaiting their outcome; beyond it, its reads wait."""
MAX_ACKED_CHATS = 1024
"""Chats whose acknowledgements a connection remembers, to spare it its own receipts."""
RATE_FLUSH_S = 0.1
USER_LIMITS = (Limit.SEND_PER_USER, Limit.GROUP_CHANGE_PER_USER)
MEMBERSHIP_CACHE_S = 10.0
"""How long the gateway trusts a chat's members for typing. A membership change pushed
through this gateway (a `chat` frame: every member and the one removed get it) drops
the entry at once; the TTL bounds what a dropped push leaves behind."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(eq=False, slots=True)
class Connection:
    """One live WebSocket: who it is, and the frames waiting to be written to it.

    Kept small: a gateway holds tens of thousands. Frames wait in a `Mailbox` (a list,
    and a future only while the writer waits), ended by None once the connection closes.
    """

    ws: WebSocket
    identity: Identity
    queue_size: int
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    frames: Mailbox = field(default_factory=Mailbox)
    in_flight: int = 0  # commands sent, outcome not yet answered
    room: Flag = field(default_factory=Flag)  # clear while in_flight is at MAX_IN_FLIGHT
    typing_sent: dict[tuple[UUID, str], float] = field(default_factory=dict)
    # chat id (text) -> [delivered, read] up to which this connection acknowledged:
    # its own receipts that tell it no more are not pushed back to it (None until the
    # first acknowledgement; idle connections stay small).
    acked: dict[str, list[int]] | None = None
    closing: bool = False
    close_code: int = 1000

    @property
    def user_id(self) -> UUID:
        return self.identity.user_id

    def push(self, frame: dict[str, Any] | str) -> None:
        """Queue a frame for this connection; a full queue closes it (1013)."""
        if self.closing:
            return
        if self.frames.qsize() >= self.queue_size:
            log.warning("event=slow_consumer_closed connection=%s user=%s", self.id, self.user_id)
            self.frames.clear()  # it does not read: what is queued would never be read
            self.close(1013)
            return
        self.frames.put_nowait(frame if isinstance(frame, str) else dump(frame))

    def acknowledged(self, chat_id: str, read: bool, up_to: int) -> None:
        """Note a `delivered` or `read` this connection sent (reading implies delivery)."""
        if self.acked is None or len(self.acked) >= MAX_ACKED_CHATS:
            self.acked = {}  # beyond the bound, forget: a receipt too many, nothing worse
        marks = self.acked.setdefault(chat_id, [0, 0])
        marks[0] = max(marks[0], up_to)
        if read:
            marks[1] = max(marks[1], up_to)

    def knows(self, receipt: dict[str, Any]) -> bool:
        """Whether `receipt`, about this connection's own user, tells it nothing new: it
        moves no cursor past what this connection itself acknowledged."""
        marks = self.acked.get(receipt["chat_id"]) if self.acked is not None else None
        if marks is None:
            return False
        read = receipt.get("read_up_to")
        return bool(receipt["delivered_up_to"] <= marks[0] and (read is None or read <= marks[1]))

    def close(self, code: int) -> None:
        """Close after writing what is queued."""
        if not self.closing:
            self.closing = True
            self.close_code = code
            self.frames.put_nowait(None)

    async def next_frame(self) -> str | None:
        """The next frame to write; None once closing and nothing is left."""
        frame: str | None = await self.frames.get()
        return frame

    async def admit_command(self) -> None:
        """Wait while MAX_IN_FLIGHT commands of this connection await their outcome."""
        while self.in_flight >= MAX_IN_FLIGHT:
            self.room.clear()
            await self.room.wait()
        self.in_flight += 1

    def command_done(self) -> None:
        self.in_flight -= 1
        self.room.set()


def _credentials(scope: MutableMapping[str, Any]) -> tuple[str | None, str]:
    """The handshake's Origin and access token (query parameter, else bearer header).

    Read from the raw scope: Starlette's `headers` and `query_params` would stay cached
    on the socket for its whole life. Names are compared lower-cased: uvicorn's sans-I/O
    protocol passes them on as the client spelled them.
    """
    origin: str | None = None
    authorization: str | None = None
    for raw_name, value in scope["headers"]:  # the first of each, as Starlette's Headers
        name = raw_name.lower()
        if name == b"origin" and origin is None:
            origin = value.decode("latin-1")
        elif name == b"authorization" and authorization is None:
            authorization = value.decode("latin-1")
    token = ""
    for key, value in parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True):
        if key == "access_token":
            token = value
    if not token and authorization and authorization.lower().startswith("bearer "):
        token = authorization[7:].strip()
    return origin, token


class Gateway:
    """One gateway process's connections and its links to Kafka, Redis and the read model."""

    def __init__(self, settings: Settings, access: Access) -> None:
        self.settings = settings
        self.access = access
        self.id = f"gw-{uuid.uuid4().hex[:12]}"
        self.redis: Redis = access.redis
        self.health = Health()
        self.bus = CommandBus(settings, reply_to=self.id, health=self.health)
        self.pool = AsyncConnectionPool(
            settings.pg_conninfo, min_size=1, max_size=8, open=False, check=self._check_connection
        )
        self._pool_check: asyncio.Task[None] | None = None
        self.connections: dict[str, Connection] = {}
        self.by_user: dict[UUID, set[Connection]] = defaultdict(set)
        self._tasks: list[asyncio.Task[None]] = []
        self._members: dict[UUID, tuple[float, frozenset[UUID]]] = {}
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
            self._routed,
            channels=[deliver_channel(self.id)],
            patterns=["parley:logout:*"],
            on_subscribed=self._register_again,
        )

    # Lifecycle

    async def start(self) -> None:
        await self.pool.open()
        await self._create_last_seen_table()
        await self.bus.start()
        await self.redis.set(gateway_key(self.id), "1", ex=GATEWAY_TTL_S)
        await self._routes.start()
        self._tasks = [
            asyncio.create_task(self._heartbeat(), name="gateway-heartbeat"),
            asyncio.create_task(self._flush_limits(), name="gateway-rate-flush"),
        ]
        log.info("event=gateway_started gateway=%s", self.id)

    async def stop(self) -> None:
        for connection in list(self.connections.values()):
            connection.close(1001)
        await self._routes.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._forget_presence(list(self.connections.values()))
        with contextlib.suppress(Exception):
            await self.redis.delete(gateway_key(self.id))
        await self.bus.stop()
        await self.pool.close()
        log.info("event=gateway_stopped gateway=%s", self.id)

    async def _check_connection(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Checked at each checkout (an empty query): after a PostgreSQL restart every
        pooled connection is dead. The pool waits longer after each dead one it meets
        (1 s, then 2 s, 4 s, ...: a `sync` after a restart outlasted a client's 10 s
        timeout), so the first one found has the pool check all the others at once."""
        try:
            await AsyncConnectionPool.check_connection(conn)
        except psycopg.Error:
            if self._pool_check is None or self._pool_check.done():
                self._pool_check = asyncio.create_task(self.pool.check(), name="pool-check")
            raise

    # One WebSocket

    async def serve(self, ws: WebSocket) -> None:
        identity = await self._admit(ws)
        if identity is None:
            return
        await ws.accept()
        connection = Connection(ws, identity, self.settings.ws_send_queue)
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
        writer = asyncio.create_task(self._write(connection), name=f"write-{connection.id}")
        try:
            await self._read(connection)
        finally:
            connection.close(connection.close_code)
            with contextlib.suppress(Exception):
                await writer
            self.connections.pop(connection.id, None)
            self.by_user[connection.user_id].discard(connection)
            self.connection_limits.forget(Limit.SEND_PER_CONNECTION, connection.id)
            self.connection_limits.forget(Limit.GROUP_CHANGE_PER_CONNECTION, connection.id)
            if not self.by_user[connection.user_id]:
                del self.by_user[connection.user_id]
                self.user_limits.forget(USER_LIMITS, str(connection.user_id))
            await self._forget_presence([connection])
            log.info("event=disconnected connection=%s user=%s", connection.id, connection.user_id)

    async def _admit(self, ws: WebSocket) -> Identity | None:
        """Check origin and token before the upgrade; refusing answers HTTP 403."""
        origin, token = _credentials(ws.scope)
        allowed = set(self.settings.allowed_origins)
        if origin is not None and "*" not in allowed and origin not in allowed:
            log.info("event=refused reason=origin origin=%s", origin[:100])
            await ws.close(1008)
            return None
        try:
            return await self.access.tokens.authenticate(token)
        except DomainError as exc:
            log.info("event=refused reason=%s", exc.code)
            await ws.close(1008)
            return None

    async def _write(self, connection: Connection) -> None:
        while True:
            frame = await connection.next_frame()
            if frame is None:
                break
            try:
                await connection.ws.send_text(frame)
            except (WebSocketDisconnect, RuntimeError, OSError):
                break
        if connection.ws.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await connection.ws.close(connection.close_code)

    async def _read(self, connection: Connection) -> None:
        ws = connection.ws
        while not connection.closing:
            try:
                message = await ws.receive()
            except RuntimeError:
                return
            if message["type"] == "websocket.disconnect":
                return
            raw = message.get("text")
            if raw is None:
                data = message.get("bytes") or b""
                try:
                    raw = data.decode("utf-8")
                except UnicodeDecodeError:
                    connection.push(error_frame("bad_json", "frames are UTF-8 JSON text"))
                    continue
            frame: ClientFrame | None = None
            try:
                frame = parse_frame(raw)
                await self._handle(connection, frame)
            except ProtocolError as exc:
                connection.push(error_frame(exc.code, exc.message, exc.request_id))
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
        if frame.type in COMMAND_FRAMES:
            await self._command(connection, frame)
        elif frame.type == "ping":
            connection.push({"type": "pong", "id": frame.request_id, "at": now_ms()})
            await self.redis.set(last_seen_key(connection.user_id), now_ms())
        elif frame.type == "typing":
            await self._typing(connection, frame)
        elif frame.type == "sync":
            await self._sync(connection, frame)
        elif frame.type == "presence":
            await self._presence(connection, frame)

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
        if frame.type == "send" and "media" in args:
            # Only the sender's own confirmed upload; the stored reference replaces theirs.
            async with self.pool.connection() as conn:
                args["media"] = await confirmed_media(conn, actor, args["media"])
        if frame.type == "create_group":
            chat_id = new_chat_id(frame)
        elif frame.type == "send" and frame.fields.get("to") is not None:
            peer = frame.uuid("to")
            assert peer is not None
            if peer == actor:
                raise ProtocolError("bad_frame", "`to` must be another user", frame.request_id)
            chat_id = direct_chat_id(actor, peer)
            args["to"] = str(peer)
        else:
            chat = frame.uuid("chat_id")
            assert chat is not None
            chat_id = chat
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
            connection.acknowledged(str(chat_id), frame.type == "read", args["up_to"])
        if command.quiet:

            def failed(outcome: Outcome) -> None:
                connection.push(error_frame(outcome.error_code, outcome.error_message, ""))

            self.bus.fire(command, failed)
            return
        await connection.admit_command()
        try:
            waiter = self.bus.enqueue(command)
        except Exception:
            connection.command_done()
            raise
        task = asyncio.create_task(self._answer(connection, command, waiter))
        task.add_done_callback(lambda _: connection.command_done())

    def _within_limits(
        self, connection: Connection, frame: ClientFrame, per_user: Limit, per_connection: Limit
    ) -> bool:
        """Take a token from the connection's and the user's buckets, or answer
        `rate_limited` (taking from neither) and return False."""
        mine = {per_connection: connection.id}
        decision = self.connection_limits.take(mine)
        if decision.allowed:
            decision = self.user_limits.take({per_user: str(connection.user_id)})
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

    async def _answer(self, connection: Connection, command: Command, waiter: Any) -> None:
        try:
            outcome: Outcome = await waiter
        except TimeoutError:
            connection.push(
                error_frame(
                    "timeout",
                    "no outcome in time; resend with the same local_id to be sure",
                    command.request_id,
                )
            )
            return
        except Exception as exc:
            log.warning("event=command_failed error=%s", type(exc).__name__)
            connection.push(
                error_frame("unavailable", "the command could not be sent", command.request_id)
            )
            return
        if not outcome.ok:
            connection.push(
                error_frame(outcome.error_code, outcome.error_message, command.request_id)
            )
        elif command.type is CommandType.SEND:
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

    async def _typing(self, connection: Connection, frame: ClientFrame) -> None:
        chat_id = frame.uuid("chat_id")
        assert chat_id is not None
        state = frame.fields.get("state", "start")
        if state not in ("start", "stop"):
            raise ProtocolError("bad_frame", "`state` is start or stop", frame.request_id)
        members = await self._members_of(chat_id)
        if connection.user_id not in members:  # a new chat or member: the cache may be behind
            members = await self._members_of(chat_id, fresh=True)
        if connection.user_id not in members:
            raise ProtocolError("unknown_chat", "no such chat", frame.request_id)
        key = (chat_id, state)
        last = connection.typing_sent.get(key, 0.0)
        if state == "start" and time.monotonic() - last < TYPING_DEBOUNCE_S:
            return  # debounced: the others already see this user typing
        connection.typing_sent[key] = time.monotonic()
        if state == "stop":
            connection.typing_sent.pop((chat_id, "start"), None)  # the next start is news
        hidden = await self._blocked_either_way(connection.user_id, members)
        others = [m for m in members if m != connection.user_id and m not in hidden]
        await route(
            self.redis,
            others,
            {
                "type": "typing",
                "chat_id": str(chat_id),
                "user_id": str(connection.user_id),
                "state": state,
            },
        )

    async def _blocked_either_way(self, user: UUID, others: Iterable[UUID]) -> set[UUID]:
        """Those of `others` whom `user` blocked or who blocked `user`: they are not
        shown each other typing (`domain.visibility.can_see_typing`)."""
        async with self.pool.connection() as conn:
            return await blocked_either_way(conn, user, others)

    async def _members_of(self, chat_id: UUID, fresh: bool = False) -> frozenset[UUID]:
        """The chat's active members, cached for MEMBERSHIP_CACHE_S (or read `fresh`)."""
        cached = self._members.get(chat_id)
        if not fresh and cached is not None and time.monotonic() - cached[0] < MEMBERSHIP_CACHE_S:
            return cached[1]
        async with self.pool.connection() as conn, conn.cursor() as cur:
            await cur.execute(
                psycopg.sql.SQL(
                    "SELECT user_id FROM {s}.members WHERE chat_id = %s AND active"
                ).format(s=psycopg.sql.Identifier(LIVE_SCHEMA)),
                (chat_id,),
            )
            members = frozenset(row[0] for row in await cur.fetchall())
        if len(self._members) > 10_000:
            self._members.clear()
        self._members[chat_id] = (time.monotonic(), members)
        return members

    async def _sync(self, connection: Connection, frame: ClientFrame) -> None:
        raw = frame.fields.get("cursors", {})
        if not isinstance(raw, dict) or len(raw) > 10_000:
            raise ProtocolError("bad_frame", "`cursors` maps chat ids to seqs", frame.request_id)
        cursors: dict[UUID, int] = {}
        for chat, seq in raw.items():
            try:
                chat_id = UUID(chat)
            except ValueError:
                raise ProtocolError(
                    "bad_frame", "`cursors` keys are chat ids", frame.request_id
                ) from None
            if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
                raise ProtocolError("bad_frame", "`cursors` values are seqs", frame.request_id)
            cursors[chat_id] = seq
        async with self.pool.connection() as conn:
            chats = await chat_summaries(conn, connection.user_id)
            connection.push({"type": "sync_chats", "id": frame.request_id, "chats": chats})
            pages = 0
            async for page in missed_messages(conn, connection.user_id, cursors, chats):
                pages += 1
                connection.push({"type": "sync_page", "id": frame.request_id, "messages": page})
                await asyncio.sleep(0)
        connection.push({"type": "sync_done", "id": frame.request_id, "pages": pages})

    async def _presence(self, connection: Connection, frame: ClientFrame) -> None:
        user_id = frame.uuid("user_id")
        assert user_id is not None
        online = bool(await self.redis.exists(presence_key(user_id)))
        seen = await self.redis.get(last_seen_key(user_id))
        visible = await self._may_see_last_seen(connection.user_id, user_id)
        connection.push(
            {
                "type": "presence",
                "id": frame.request_id,
                "user_id": str(user_id),
                "online": online if visible else None,
                "last_seen": int(seen) if seen is not None and visible else None,
            }
        )

    async def _may_see_last_seen(self, viewer: UUID, owner: UUID) -> bool:
        if viewer == owner:
            return True
        from starlette.concurrency import run_in_threadpool

        from domain.visibility import can_see_last_seen

        try:
            theirs = await run_in_threadpool(self.access.accounts.privacy_of, owner)
            mine = await run_in_threadpool(self.access.accounts.privacy_of, viewer)
        except DomainError:
            return False
        return bool(can_see_last_seen(mine, theirs))

    # Routing in, presence out

    def _routed(self, message: dict[str, Any]) -> None:
        if message.get("type") == "pmessage":
            self._logout(message["data"])
        else:
            self._deliver(message["data"])

    async def _register_again(self) -> None:
        """After Redis came back (it may have lost the last second of writes, or all of
        them): this gateway's lease and its users' presence, written again at once, so
        the workers route pushes here before the next heartbeat would."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(gateway_key(self.id), "1", ex=GATEWAY_TTL_S)
        self._queue_presence(pipe)
        await pipe.execute()
        log.info("event=gateway_registered_again gateway=%s users=%d", self.id, len(self.by_user))

    def _queue_presence(self, pipe: Any) -> None:
        stamp = now_ms()
        for user, connections in list(self.by_user.items()):
            if not connections:
                continue
            key = presence_key(user)
            pipe.hset(key, mapping={c.id: self.id for c in connections})
            pipe.expire(key, PRESENCE_TTL_S)
            pipe.set(last_seen_key(user), stamp)

    def _deliver(self, raw: bytes) -> None:
        try:
            data = orjson.loads(raw)
            items = data["items"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("event=bad_delivery")
            return
        for item in items:
            frame = item["frame"]
            kind = frame.get("type")
            if kind == "chat":  # membership may have changed: read it again
                with contextlib.suppress(KeyError, ValueError, TypeError):
                    self._members.pop(UUID(frame["chat_id"]), None)
            text = dump(frame)
            skip_user, skip_device = item.get("except") or (None, None)
            # A receipt about the reader goes to the reader's other devices, not to the
            # one whose acknowledgement it is.
            reader = frame.get("user_id") if kind == "receipt" else None
            for user in item["users"]:
                for connection in list(self.by_user.get(UUID(user), ())):
                    if user == skip_user and connection.identity.device_id == skip_device:
                        continue
                    if user == reader and connection.knows(frame):
                        continue
                    connection.push(text)

    def _logout(self, raw: bytes) -> None:
        try:
            data = orjson.loads(raw)
            user = UUID(data["user_id"])
            sessions = set(data.get("session_ids") or [])
        except (orjson.JSONDecodeError, KeyError, ValueError, TypeError):
            return
        for connection in list(self.by_user.get(user, ())):
            if not sessions or connection.identity.session_id in sessions:
                log.info("event=logout_closed connection=%s", connection.id)
                connection.push({"type": "logged_out", "reason": data.get("reason", "logout")})
                connection.close(4001)

    async def _mark_present(self, connection: Connection) -> None:
        """Register the connection; a user's first connection here loads their limits."""
        key = presence_key(connection.user_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(key, connection.id, self.id)
        pipe.expire(key, PRESENCE_TTL_S)
        pipe.set(last_seen_key(connection.user_id), now_ms())
        await pipe.execute()
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

    async def _forget_presence(self, connections: list[Connection]) -> None:
        if not connections:
            return
        pipe = self.redis.pipeline(transaction=False)
        for connection in connections:
            pipe.hdel(presence_key(connection.user_id), connection.id)
            pipe.set(last_seen_key(connection.user_id), now_ms())
        try:
            await pipe.execute()
        except Exception as exc:
            log.warning("event=presence_cleanup_failed error=%s", type(exc).__name__)
        await self._persist_last_seen({c.user_id for c in connections})

    async def _create_last_seen_table(self) -> None:
        """Once per gateway, not per disconnect: gateways starting together may race to
        create it, and the loser's error only means it exists."""
        try:
            async with self.pool.connection() as conn:
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS last_seen (user_id uuid PRIMARY KEY, "
                    "at timestamptz NOT NULL)"
                )
        except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateTable):
            pass

    async def _persist_last_seen(self, users: set[UUID]) -> None:
        """On disconnect, last seen goes to PostgreSQL too (Redis holds the live value)."""
        try:
            async with self.pool.connection() as conn:
                for user in users:
                    await conn.execute(
                        "INSERT INTO last_seen (user_id, at) VALUES (%s, now()) "
                        "ON CONFLICT (user_id) DO UPDATE SET at = excluded.at",
                        (user,),
                    )
        except (psycopg.Error, OSError) as exc:
            log.warning("event=last_seen_persist_failed error=%s", type(exc).__name__)

    async def _heartbeat(self) -> None:
        """Renew this gateway's lease often, its users' presence and last seen less often.

        The lease (`GATEWAY_TTL_S`) is one key, renewed three times per TTL. Presence
        entries live `PRESENCE_TTL_S` and are renewed three times per that TTL, one
        hash write, one expiry and one last-seen stamp per user, not per connection.
        """
        lease_every = GATEWAY_TTL_S / 3
        presence_every = PRESENCE_TTL_S / 3
        last_presence = time.monotonic()
        while True:
            await asyncio.sleep(lease_every)
            try:
                pipe = self.redis.pipeline(transaction=False)
                pipe.set(gateway_key(self.id), "1", ex=GATEWAY_TTL_S)
                if time.monotonic() - last_presence >= presence_every - 0.5:
                    last_presence = time.monotonic()
                    self._queue_presence(pipe)
                await pipe.execute()
                self.health.up("heartbeat")
            except Exception as exc:
                self.health.down("heartbeat", exc)


def _retry_after(exc: DomainError) -> dict[str, Any]:
    retry = getattr(exc, "retry_after_s", None)
    return {} if retry is None else {"retry_after_s": retry}
