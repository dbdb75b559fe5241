"""The command processor: the single writer of the chats in the partitions it owns.

It consumes `parley.commands`, decides each command against cached Chat aggregates,
saves everything a batch decided in one transaction (group commit), then, in one Redis
round trip, sends each command's outcome to the reply channel the command names and
pushes the batch's new messages, receipts and chat changes to the gateways of the
users online (`live.py`), and hands the batch's events to Kafka `parley.events`
(`publishing.py`); only then does it commit its Kafka offsets. Consumption is
at-least-once; commands are idempotent (local ids, watermarks, no-op group changes), so
a redelivered command changes nothing. The Kafka loop around it is `consumer.py`.
"""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol
from uuid import UUID

import redis
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError, PersistenceError, Recording

from commands.command import BadCommand, Command, Outcome, peek_reply, reply_channel
from commands.processor import metrics
from commands.processor.handlers import HANDLERS, Context, IdGenerator, Limits
from commands.processor.live import LiveBatch, RecentSenders, audience_of, cursors_of, log_trail
from commands.processor.people import BatchPeople, asked_of_people
from commands.processor.publishing import EventPublisher
from domain.chat import Chat
from domain.errors import DomainError
from domain.ids import text_of, uuid_of
from infra.event_store import SNAPSHOT_INTERVAL, ChatStore, chat_position
from infra.lua import execute_blocking
from infra.routing import queue_joined, queue_route
from infra.settings import Settings

log = logging.getLogger("parley.processor")

MAX_CONFLICT_RETRIES = 5


@dataclass
class Decided:
    """One command's decision before the save: its result or error, and its last event."""

    command_id: str
    request_id: str
    reply_to: str
    chat_id: str
    quiet: bool = False  # reply only if it failed
    result: dict[str, Any] | None = None
    error: tuple[str, str] | None = None
    version: int | None = None  # the chat's version after this command's last event


@dataclass
class BatchChats:
    """The chats one batch touches: from the store's cache, or created in this batch."""

    store: ChatStore
    touched: dict[UUID, Chat] = field(default_factory=dict)

    def get(self, chat_id: UUID) -> Chat | None:
        chat = self.touched.get(chat_id)
        if chat is not None:
            return chat
        try:
            chat = self.store.repository.get(chat_id)
        except AggregateNotFoundError:
            return None
        self.touched[chat_id] = chat
        return chat

    def add(self, chat: Chat) -> None:
        self.touched[chat.id] = chat


class ReplyPipeline(Protocol):
    def publish(self, channel: str, message: bytes) -> Any: ...

    def evalsha(self, sha: str, numkeys: int, *args: Any) -> Any: ...

    def hset(self, name: str, key: str, value: int) -> Any: ...

    def expire(self, name: str, time: int) -> Any: ...

    def execute(self) -> Any: ...


class Replies(Protocol):
    """Where outcomes and pushes go: Redis (`redis.Redis`), or a test's list."""

    def pipeline(self, transaction: bool = ...) -> ReplyPipeline: ...


class CommandProcessor:
    """Decides and stores batches of commands; see the module docstring.

    It works with what it is handed (`parley.wiring` builds them): the event store (on
    PostgreSQL, or in memory), the id generator and where replies go.
    """

    def __init__(
        self,
        settings: Settings,
        store: ChatStore,
        ids: IdGenerator,
        replies: Replies,
        people: BatchPeople,
        publisher: EventPublisher | None = None,
    ) -> None:
        self.settings = settings
        self.publisher = publisher  # None: events stay in the store (tests of deciding)
        self.store = store
        self.ids = ids
        self.replies = replies
        self.people = people
        self.limits = Limits.from_settings(settings)
        self.owned: dict[int, set[UUID]] = defaultdict(set)  # partition -> cached chats
        self.partition_of: dict[UUID, int] = {}
        self.last_position: dict[UUID, int] = {}
        self.decided_total = 0
        self.poisoned: set[str] = set()  # commands whose handler failed: answered `internal`
        self.recent = RecentSenders()
        self.live = LiveBatch(people, self.recent)

    # The batch: decide, save, reply.

    def process(self, records: Iterable[tuple[int, bytes]]) -> list[Outcome]:
        """Decide and store one batch of (partition, raw command); return the outcomes."""
        batch = [(partition, raw, _decoded(raw)) for partition, raw in records]
        commands = [command for _, _, command in batch if isinstance(command, Command)]
        conflicts = 0
        while conflicts <= MAX_CONFLICT_RETRIES:
            chats = BatchChats(self.store)
            senders, named = asked_of_people(commands)
            audience = audience_of(chats.get(c.chat_id) for c in commands)
            self.people.prepare([*senders, *audience, *named], named)
            self.live = LiveBatch(self.people, self.recent)
            try:
                decided = [self._decide(chats, p, raw, command) for p, raw, command in batch]
            except _Redo:
                self._evict(chats.touched)
                continue
            try:
                with metrics.COMMIT_SECONDS.time():
                    positions, recordings = self._save(chats)
            except IntegrityError:
                # A stale writer: another processor appended to one of these chats (we
                # lost its partition for a while). Reload them all and decide again.
                self._evict(chats.touched)
                conflicts += 1
                metrics.CONFLICTS.inc()
                log.warning("event=conflict attempt=%d chats=%d", conflicts, len(chats.touched))
                continue
            except BaseException:
                self._evict(chats.touched)
                raise
            outcomes = [self._outcome(d, positions) for d in decided]
            self.live.committed(positions)
            with metrics.PUBLISH_SECONDS.time():
                self._reply(decided, outcomes, positions)
                if self.publisher is not None:
                    self.publisher.saved(recordings, self.partition_of)
            metrics.count_outcomes(outcomes)
            self.decided_total += len(outcomes)
            return outcomes
        raise RuntimeError(f"batch still conflicts after {MAX_CONFLICT_RETRIES} retries")

    def _decide(
        self, chats: BatchChats, partition: int, raw: bytes, command: Command | BadCommand
    ) -> Decided:
        if isinstance(command, BadCommand):
            command_id, reply_to, request_id = peek_reply(raw)
            return Decided(command_id, request_id, reply_to, "", error=(command.code, str(command)))
        decided = Decided(
            str(command.command_id),
            command.request_id,
            command.reply_to,
            text_of(command.chat_id),
            quiet=command.quiet,
        )
        if decided.command_id in self.poisoned:
            decided.error = ("internal", "the command could not be decided")
            return decided
        ctx = Context(chats, self.ids, self.limits, self.people)
        before = chats.touched.get(command.chat_id)
        pending_before = len(before.pending_events) if before is not None else 0
        cursors = cursors_of(before, command.actor)
        try:
            decided.result = HANDLERS[command.type](ctx, command)
        except DomainError as exc:
            decided.error = (exc.code, exc.message or exc.code)
        except BadCommand as exc:
            decided.error = (exc.code, str(exc))
        except Exception as exc:
            # A bug in one command must not stop the partition. Its chat may hold half a
            # decision, so the batch is decided again from the store without it.
            log.exception(
                "event=decide_failed command=%s type=%s error=%s",
                command.command_id,
                command.type,
                type(exc).__name__,
            )
            self.poisoned.add(str(command.command_id))
            raise _Redo() from exc
        chat = chats.touched.get(command.chat_id)
        if chat is not None:
            self.owned[partition].add(chat.id)
            self.partition_of[chat.id] = partition
            if decided.error is None and len(chat.pending_events) > pending_before:
                decided.version = chat.version
                self.live.note(chat, chat.pending_events[pending_before:], cursors)
        return decided

    def _save(self, chats: BatchChats) -> tuple[dict[tuple[UUID, int], int], list[Recording[UUID]]]:
        """Save all touched chats in one transaction; map (chat, version) to position.

        With a publisher, the save is refused (`Fenced`) if another processor has
        claimed one of the chats' partitions since."""
        changed = [c for c in chats.touched.values() if c.pending_events]
        if not changed:
            return {}, []
        before = {c.id: c.version - len(c.pending_events) for c in changed}
        if self.publisher is None:
            recordings = self.store.save(*changed)
        else:
            writer = self.publisher.writer({self.partition_of[c.id] for c in changed})
            recordings = self.store.save(*changed, writer=writer)
        positions: dict[tuple[UUID, int], int] = {}
        for recording in recordings:
            event = recording.domain_event
            position = recording.notification.id
            positions[(event.originator_id, event.originator_version)] = position
            self.last_position[event.originator_id] = position
        due = [
            c for c in changed if c.version // SNAPSHOT_INTERVAL > before[c.id] // SNAPSHOT_INTERVAL
        ]
        if due:
            try:
                self.store.snapshot(due)
            except PersistenceError as exc:  # an optimisation only: the events are stored
                log.warning("event=snapshot_failed chats=%d error=%s", len(due), type(exc).__name__)
        return positions, recordings

    def _outcome(self, decided: Decided, positions: dict[tuple[UUID, int], int]) -> Outcome:
        if decided.error is not None:
            code, message = decided.error
            return Outcome(
                decided.command_id,
                decided.request_id,
                decided.chat_id,
                ok=False,
                error_code=code,
                error_message=message,
            )
        chat_id = uuid_of(decided.chat_id)
        position = None
        if decided.version is not None:
            position = positions.get((chat_id, decided.version))
        if position is None:
            # Nothing new was stored (a resend, a no-op): the chat's newest position is
            # at or after the original event, so it serves read-your-writes for the chat.
            position = self.last_position.get(chat_id)
            if position is None:
                position = chat_position(self.store, chat_id)
                self.last_position[chat_id] = position
        return Outcome(
            decided.command_id,
            decided.request_id,
            decided.chat_id,
            ok=True,
            result=decided.result or {},
            position=position,
        )

    def _reply(
        self,
        decided: list[Decided],
        outcomes: list[Outcome],
        positions: dict[tuple[UUID, int], int],
    ) -> None:
        """The outcomes to their gateways, then the batch's pushes: one round trip."""
        replies = [
            (reply_channel(d.reply_to), outcome.encode())
            for d, outcome in zip(decided, outcomes, strict=True)
            if d.reply_to and not (d.quiet and outcome.ok)
        ]
        items = self.live.items
        joins = [
            (user, chat_id, positions[(chat_id, version)])
            for user, chat_id, version in self.live.joins
            if (chat_id, version) in positions
        ]
        if log.isEnabledFor(logging.DEBUG):  # PARLEY_LOG_LEVEL=debug: each command's trail
            log_trail(log, decided, outcomes, items)
        if not replies and not items:
            return

        def build(pipe: ReplyPipeline) -> None:
            for channel, message in replies:
                pipe.publish(channel, message)
            queue_route(pipe, items)
            queue_joined(pipe, joins)

        try:
            execute_blocking(self.replies, build, transaction=False)
        except redis.RedisError as exc:
            # The outcome is stored; a client that hears nothing resends and gets the
            # same answer (idempotent), so a lost reply costs a retry, not a message;
            # a lost push is recovered by the recipient's sync.
            log.warning(
                "event=reply_failed outcomes=%d pushes=%d error=%s",
                len(replies),
                len(items),
                type(exc).__name__,
            )

    def _evict(self, chats: Iterable[UUID]) -> None:
        cache = self.store.repository.cache
        if cache is None:
            return
        for chat_id in list(chats):
            with contextlib.suppress(KeyError):
                cache.get(chat_id, evict=True)

    def drop_partitions(self, partitions: Iterable[int]) -> None:
        """Forget the chats of partitions this processor no longer owns."""
        for partition in partitions:
            chats = self.owned.pop(partition, set())
            self._evict(chats)
            self.recent.forget(chats)
            for chat_id in chats:
                self.last_position.pop(chat_id, None)
                self.partition_of.pop(chat_id, None)


def _decoded(raw: bytes) -> Command | BadCommand:
    """The command, or why it cannot be read (answered when the batch is decided)."""
    try:
        return Command.decode(raw)
    except BadCommand as exc:
        return exc


class _Redo(Exception):
    """Decide the batch again (a command's handler failed; it is now poisoned)."""
