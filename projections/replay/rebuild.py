"""`parley replay rebuild`: rebuild projections from the log beside the live ones, then swap.

One run (docs/replay.md has the why of each step):

1. take the projections' rebuild locks (a second rebuild is refused), create the shadow
   schema `read_shadow_<run>` (and, for `cache`, the key prefix `parley:replay:<run>:`);
2. read `parley.events` from the beginning with a plain consumer and apply it with the
   `BulkProjector` to the shadow: the projections asked for plus what they read
   (`DEPENDS_ON`; the cache reads members and unread), never delivery or notifications;
3. with `--verify`: catch up to the live checkpoints, pause the live workers, take a
   snapshot of both sides, resume, compare; `--dry-run` stops here;
4. catch up to the log end until close, pause the workers, apply the last records,
   swap the tables (one transaction) and the cache keys, resume; drop the old copies.

Over 400 lines on purpose: one procedure (build, catch up, verify, swap) whose steps
share the run's state and are read in order.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID

import psycopg
import redis.asyncio as aioredis

from infra.settings import Settings
from projections.bulk import BulkProjector
from projections.cache import apply_cache
from projections.projector import DEPENDS_ON, ORDER, Record, expire_inbox
from projections.replay.cache_shadow import (
    KeySwap,
    cache_checkpoints,
    drop_keys,
    finish_recent,
    shadow_prefix,
    shadow_runs,
    swap_keys,
)
from projections.replay.errors import PartialRebuild, SwapFailed, UnknownProjection
from projections.replay.listing import (
    PROJECTIONS,
    RebuildState,
    record_outcome,
    record_start,
    record_state,
)
from projections.replay.locks import (
    pause_workers,
    release_rebuild_locks,
    resume_workers,
    try_rebuild_locks,
)
from projections.replay.logreader import LogReader
from projections.replay.shadow import (
    create_shadow,
    drop_run,
    hold_run,
    old_schema,
    orphaned_runs,
    run_is_orphan,
    swap_in,
)
from projections.replay.verify import VerifyReport, verify_cache, verify_tables
from projections.schema import LIVE_SCHEMA, migrate

log = logging.getLogger("parley.replay")

CACHE_READS = ("chats", "receipts")
"""What `apply_cache` reads from PostgreSQL (members, unread): built in the shadow too."""


class Progress(Protocol):
    """What a replay reports as it goes (the CLI draws a rich progress bar)."""

    def phase(self, name: str, total: int) -> None: ...

    def advance(self, records: int) -> None: ...


class _Silent:
    def phase(self, name: str, total: int) -> None:
        pass

    def advance(self, records: int) -> None:
        pass


@dataclass(frozen=True)
class RebuildOptions:
    projections: tuple[str, ...]
    from_offset: int | None = None
    from_time: datetime | None = None
    verify: bool = False
    dry_run: bool = False


@dataclass
class RebuildSummary:
    run_id: str
    projections: list[str]
    built: list[str]
    records: int = 0
    applied: int = 0
    bad_records: int = 0
    seconds: float = 0.0
    pauses_ms: list[float] = field(default_factory=list)
    swapped: bool = False
    verify: VerifyReport | None = None
    cache_keys: KeySwap | None = None

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0


def plan(names: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """The projections to swap, in order, and the PostgreSQL ones to build for them."""
    for name in names:
        if name not in PROJECTIONS:
            raise UnknownProjection(name, PROJECTIONS)
    targets = [p for p in PROJECTIONS if p in names]
    needed = {d for p in targets if p in ORDER for d in (p, *DEPENDS_ON[p])}
    if "cache" in targets:
        needed.update(CACHE_READS)
    return targets, [p for p in ORDER if p in needed]


async def rebuild(
    settings: Settings, options: RebuildOptions, progress: Progress | None = None
) -> RebuildSummary:
    """Rebuild `options.projections` (see the module docstring); return what it did."""
    targets, built = plan(options.projections)
    run_id = uuid.uuid4().hex[:10]
    migrate(settings)
    redis = aioredis.Redis.from_url(settings.redis_url)
    control = psycopg.connect(settings.pg_conninfo, autocommit=True)
    try:
        try_rebuild_locks(control, targets)
        try:
            hold_run(control, run_id)
            await _drop_orphans(control, redis)
            record_start(control, run_id, targets)
            log.info("event=replay_started run=%s projections=%s", run_id, ",".join(targets))
            run = _Run(settings, options, run_id, targets, built, control, redis, progress)
            try:
                summary = await run.execute()
            except BaseException as exc:
                log.error("event=replay_failed run=%s error=%s", run_id, type(exc).__name__)
                with suppress(psycopg.Error):  # the original error matters more
                    record_state(control, run_id, RebuildState.FAILED, run.summary.records)
                    record_outcome(control, run_id, f"{type(exc).__name__}: {exc}"[:500])
                raise
            finally:
                with suppress(psycopg.Error):  # else the next run drops the leftovers
                    await run.close()
            done = RebuildState.DONE if summary.swapped else RebuildState.DRY_RUN
            record_state(control, run_id, done, summary.records)
            return summary
        finally:
            release_rebuild_locks(control, targets)
    finally:
        control.close()
        await redis.aclose()


async def _drop_orphans(control: psycopg.Connection[Any], redis: aioredis.Redis) -> None:
    """Leftovers of runs that died (their session is gone): schemas and shadow keys."""
    for run_id in orphaned_runs(control):
        drop_run(control, run_id)
    for run_id in await shadow_runs(redis):
        if run_is_orphan(control, run_id):
            await drop_keys(redis, shadow_prefix(run_id))


class _Run:
    """One rebuild, from the empty shadow to the swap."""

    def __init__(
        self,
        settings: Settings,
        options: RebuildOptions,
        run_id: str,
        targets: list[str],
        built: list[str],
        control: psycopg.Connection[Any],
        redis: aioredis.Redis,
        progress: Progress | None,
    ) -> None:
        self.settings = settings
        self.options = options
        self.run_id = run_id
        self.targets = targets
        self.pg_targets = [p for p in targets if p in ORDER]
        self.cache = "cache" in targets
        self.control = control
        self.redis = redis
        self.progress = progress or _Silent()
        self.shadow = ""
        self.prefix = shadow_prefix(run_id)
        self.built = built
        self.recent_clock: dict[UUID, float] = {}
        self.recent_dirty: set[UUID] = set()
        self.projector = BulkProjector(built)
        self.reader: LogReader | None = None
        self.conn: psycopg.AsyncConnection[Any] | None = None
        self.summary = RebuildSummary(run_id, targets, built)
        self.started = time.monotonic()

    async def execute(self) -> RebuildSummary:
        self.shadow = create_shadow(self.settings, self.run_id)
        self.projector = BulkProjector(self.built, self.shadow)
        self.reader = LogReader(self.settings)
        self.conn = await psycopg.AsyncConnection.connect(self.settings.pg_conninfo)
        # The shadow is rebuilt from the log if the database crashes: no WAL flush waits.
        await self.conn.execute("SET synchronous_commit TO off")
        await self.conn.commit()
        begin = self.reader.beginnings()
        starts = self.reader.start_at(self.options.from_offset, self.options.from_time)
        if any(starts[p] > begin[p] for p in starts) and not self.options.dry_run:
            raise PartialRebuild(
                "a rebuild that skips the start of the log would swap in projections "
                "missing those events; add --dry-run to build and compare such a window"
            )
        ends = self.reader.log_end()
        self.progress.phase("building", self.reader.remaining(ends))
        await self._apply_until(ends)
        self._state(RebuildState.CATCHING_UP)
        if self.options.verify or self.options.dry_run:  # a dry run always compares
            self.summary.verify = await self._verify()
        if self.options.dry_run:
            self._finish()
            log.info("event=replay_dry_run run=%s records=%d", self.run_id, self.summary.records)
            return self.summary
        await self._swap()
        self._finish()
        log.info(
            "event=replay_swapped run=%s projections=%s records=%d seconds=%.1f pauses_ms=%s",
            self.run_id,
            ",".join(self.targets),
            self.summary.records,
            self.summary.seconds,
            ",".join(f"{p:.0f}" for p in self.summary.pauses_ms),
        )
        return self.summary

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
        if self.conn is not None:
            await self.conn.close()
        drop_run(self.control, self.run_id)
        if self.cache:
            await drop_keys(self.redis, self.prefix)

    def _finish(self) -> None:
        assert self.reader is not None
        self.summary.seconds = time.monotonic() - self.started
        self.summary.bad_records = self.reader.stats.bad

    def _state(self, state: RebuildState) -> None:
        record_state(self.control, self.run_id, state, self.summary.records)

    # Reading and applying

    async def _apply_until(self, targets: Mapping[int, int]) -> None:
        """Apply the log to the shadow up to `targets` (next offset, per partition)."""
        assert self.reader is not None and self.conn is not None
        # The next batch is read from Kafka (in a thread) while this one is written.
        batches = iter(self.reader.read(targets, self.settings.replay_batch_max))
        batch = await asyncio.to_thread(next, batches, None)
        while batch is not None:
            following = asyncio.ensure_future(asyncio.to_thread(next, batches, None))
            try:
                await self._apply(batch)
            finally:
                batch = await following
        self.summary.records = self.reader.stats.records

    async def _apply(self, batch: list[Record]) -> None:
        assert self.conn is not None and self.reader is not None
        async with self.conn.transaction():
            self.summary.applied += await self.projector.apply_batch(self.conn, batch)
        if self.cache:
            await apply_cache(
                self.redis,
                self.conn,
                batch,
                schema=self.shadow,
                prefix=self.prefix,
                recent_clock=self.recent_clock,
            )
            self.recent_dirty.update(
                r.envelope.chat_id for r in batch if r.envelope.type == "MessageSent"
            )
            await self.conn.commit()
        self.progress.advance(len(batch))

    async def _catch_up(self, target: str) -> dict[int, int]:
        """Follow the log end (or the live checkpoints) until within `replay_pause_below`."""
        assert self.reader is not None
        while True:
            goal = await self._goal(target)
            remaining = self.reader.remaining(goal)
            if remaining <= self.settings.replay_pause_below:
                return goal
            self.progress.phase("catching up", remaining)
            await self._apply_until(goal)

    async def _goal(self, target: str) -> dict[int, int]:
        """Where to read to: the log end, or what the live projections have applied."""
        assert self.reader is not None
        ends = self.reader.log_end()
        if target == "log_end":
            return ends
        live = await self._live_marks()
        return {
            p: max(self.reader.position[p], min(end, live.get(p, end - 1) + 1))
            for p, end in ends.items()
        }

    async def _live_marks(self) -> dict[int, int]:
        """The live checkpoints of the projections being rebuilt, per partition (max)."""
        marks: dict[int, int] = {}
        rows = self.control.execute(
            f'SELECT partition, max("offset") FROM "{LIVE_SCHEMA}".checkpoints '
            "WHERE projection = ANY(%s) GROUP BY partition",
            (self.pg_targets,),
        ).fetchall()
        marks.update({int(r[0]): int(r[1]) for r in rows})
        if self.cache:
            for p, offset in (await cache_checkpoints(self.redis)).items():
                marks[p] = max(marks.get(p, -1), offset)
        return marks

    async def _finish_recent(self) -> None:
        if self.cache and self.recent_dirty:
            await finish_recent(self.redis, self.prefix, self.recent_clock, self.recent_dirty)
            self.recent_dirty = set()

    async def _expire_inbox(self) -> None:
        assert self.conn is not None
        if "inbox" in self.pg_targets:
            await expire_inbox(
                self.conn, self.settings.inbox_ttl_days, datetime.now(UTC), self.shadow
            )
            await self.conn.commit()

    # Verify

    async def _verify(self) -> VerifyReport:
        """Compare shadow and live at the same point of the log (the live checkpoints)."""
        assert self.reader is not None
        self._state(RebuildState.VERIFYING)
        await self._catch_up("live")
        await self._finish_recent()
        await self._expire_inbox()
        report = VerifyReport()
        snapshot = psycopg.connect(self.settings.pg_conninfo)
        try:
            paused = time.monotonic()
            pause_workers(self.control)
            try:
                live = await self._goal("live")
                await self._apply_until(live)
                await self._finish_recent()
                report.ahead_partitions = sorted(
                    p for p, at in self.reader.position.items() if at > live[p]
                )
                snapshot.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                snapshot.execute("SELECT 1 FROM pg_class LIMIT 1")  # the snapshot is taken
                if self.cache:
                    report.cache = await verify_cache(self.redis, self.prefix)
            finally:
                resume_workers(self.control)
                self.summary.pauses_ms.append((time.monotonic() - paused) * 1000)
            report.tables = verify_tables(snapshot, self.pg_targets, self.shadow)
        finally:
            snapshot.close()
        return report

    # Swap

    async def _swap(self) -> None:
        """Catch up to the log end, pause the workers, apply the rest, swap; retry if a
        live table stays locked by a query for longer than the lock timeout."""
        assert self.reader is not None
        for attempt in range(1, self.settings.replay_swap_attempts + 1):
            await self._catch_up("log_end")
            await self._finish_recent()
            await self._expire_inbox()
            self._state(RebuildState.SWAPPING)
            paused = time.monotonic()
            pause_workers(self.control)
            try:
                await self._apply_until(self.reader.log_end())
                await self._finish_recent()
                try:
                    if self.pg_targets:
                        swap_in(
                            self.control,
                            self.pg_targets,
                            self.shadow,
                            old_schema(self.run_id),
                            self.settings.replay_swap_lock_timeout_ms,
                        )
                except psycopg.errors.LockNotAvailable:
                    log.warning("event=replay_swap_retry run=%s attempt=%d", self.run_id, attempt)
                    continue
                if self.cache:
                    self.summary.cache_keys = await swap_keys(self.redis, self.prefix)
                self.summary.swapped = True
                return
            finally:
                resume_workers(self.control)
                self.summary.pauses_ms.append((time.monotonic() - paused) * 1000)
        raise SwapFailed(
            f"the live tables stayed locked by queries through "
            f"{self.settings.replay_swap_attempts} attempts; nothing was swapped"
        )
