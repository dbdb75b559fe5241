"""Which projections are live or being rebuilt, and how far each is: `parley replay list`.

A projection is *rebuilding* while some session holds its rebuild lock
(projections/replay/locks.py): that survives no crash, so the state is never stale. The table
`read.rebuilds` adds what the lock cannot say: the run, its phase, how many events it
has read, when it started, and how past runs ended.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import psycopg
import redis

from infra.settings import Settings
from projections.cache import checkpoint_key
from projections.projector import ORDER
from projections.replay.locks import held_rebuild_locks
from projections.schema import LIVE_SCHEMA
from projections.status import projection_lag

PROJECTIONS = (*ORDER, "cache")
"""Everything `parley replay rebuild` can rebuild: the four tables' projections and Redis."""


class RebuildState(StrEnum):
    BUILDING = "building"  # reading the log into the shadow
    CATCHING_UP = "catching_up"  # following the live workers' checkpoints
    VERIFYING = "verifying"
    SWAPPING = "swapping"
    DONE = "done"
    DRY_RUN = "dry_run"  # built and compared, not swapped
    FAILED = "failed"


def record_start(conn: psycopg.Connection[Any], run_id: str, projections: list[str]) -> None:
    conn.execute(
        "INSERT INTO read.rebuilds (run_id, projections, state, host, pid) "
        "VALUES (%s, %s, %s, %s, %s)",
        (run_id, projections, RebuildState.BUILDING.value, socket.gethostname(), os.getpid()),
    )


def record_state(
    conn: psycopg.Connection[Any], run_id: str, state: RebuildState, events: int
) -> None:
    finished = state in (RebuildState.DONE, RebuildState.DRY_RUN, RebuildState.FAILED)
    conn.execute(
        "UPDATE read.rebuilds SET state = %s, events = %s, updated_at = now(), "
        "finished_at = CASE WHEN %s THEN now() ELSE finished_at END WHERE run_id = %s",
        (state.value, events, finished, run_id),
    )


def record_outcome(conn: psycopg.Connection[Any], run_id: str, outcome: str) -> None:
    conn.execute("UPDATE read.rebuilds SET outcome = %s WHERE run_id = %s", (outcome, run_id))


@dataclass(frozen=True)
class PartitionLag:
    partition: int
    checkpoint: int  # last applied offset, -1 if none
    log_end: int

    @property
    def lag(self) -> int:
        return max(0, self.log_end - 1 - self.checkpoint)


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    projections: list[str]
    state: str
    events: int
    started_at: datetime
    finished_at: datetime | None
    outcome: str | None


@dataclass(frozen=True)
class ProjectionStatus:
    projection: str
    rebuilding: bool
    partitions: list[PartitionLag]
    run: RunInfo | None  # the run in progress, else the last one

    @property
    def state(self) -> str:
        return "rebuilding" if self.rebuilding else "live"

    @property
    def lag(self) -> int:
        return sum(p.lag for p in self.partitions)


def replay_status(settings: Settings) -> list[ProjectionStatus]:
    """Every projection: its checkpoint per partition against the log end, and its state."""
    lags = projection_lag(settings)
    ends = {row.partition: row.log_end for row in lags}
    client = redis.Redis.from_url(settings.redis_url)
    try:
        raw: Any = client.hgetall(checkpoint_key())
    finally:
        client.close()
    cache_marks = {int(k): int(v) for k, v in raw.items()}
    with psycopg.connect(settings.pg_conninfo, autocommit=True) as conn:
        held = held_rebuild_locks(conn, list(PROJECTIONS))
        runs = _latest_runs(conn)
    out = []
    for projection in PROJECTIONS:
        if projection == "cache":
            parts = [
                PartitionLag(p, cache_marks.get(p, -1), end) for p, end in sorted(ends.items())
            ]
        else:
            parts = [
                PartitionLag(row.partition, row.checkpoint, row.log_end)
                for row in lags
                if row.projection == projection
            ]
        out.append(ProjectionStatus(projection, projection in held, parts, runs.get(projection)))
    return out


def _latest_runs(conn: psycopg.Connection[Any]) -> dict[str, RunInfo]:
    exists = conn.execute("SELECT to_regclass(%s)", (f"{LIVE_SCHEMA}.rebuilds",)).fetchone()
    if not exists or not exists[0]:
        return {}
    rows = conn.execute(
        "SELECT DISTINCT ON (p) p, run_id, projections, state, events, started_at, "
        "finished_at, outcome FROM read.rebuilds, unnest(projections) AS p "
        "ORDER BY p, started_at DESC"
    ).fetchall()
    return {row[0]: RunInfo(*row[1:]) for row in rows}
