"""`GET /healthz` (the process answers) and `GET /readyz` (it can serve reads).

Ready means: PostgreSQL answers, Redis answers, and the projections are at most
`queries_ready_max_lag` events behind the log (`projections.status.projection_lag`,
the sum over projections and partitions). The lag needs Kafka and costs a metadata
round trip, so it is measured at most once every `LAG_TTL_S` seconds per process; if
Kafka cannot be asked, the lag is reported as null and does not make the service
unready (the read model can still be served, however stale).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from infra.settings import Settings
from projections.status import projection_lag
from queries.errors import log
from queries.resources import read_side_of
from queries.responses import answer

CHECK_TIMEOUT_S = 2.0
LAG_TTL_S = 5.0


class LagGauge:
    """The projections' total lag, measured at most once every `LAG_TTL_S` seconds."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._value: int | None = None
        self._at = -LAG_TTL_S
        self._lock = asyncio.Lock()

    async def lag(self) -> int | None:
        async with self._lock:
            if time.monotonic() - self._at >= LAG_TTL_S:
                self._value = await self._measure()
                self._at = time.monotonic()
            return self._value

    async def _measure(self) -> int | None:
        try:
            rows = await asyncio.wait_for(
                run_in_threadpool(projection_lag, self.settings), CHECK_TIMEOUT_S * 2
            )
        except Exception as exc:  # Kafka or the checkpoints cannot be read: lag unknown
            log.warning("event=lag_unknown error=%s", type(exc).__name__)
            return None
        return sum(row.lag for row in rows)


async def healthz(request: Request) -> Response:
    return answer({"status": "ok"})


async def readyz(request: Request) -> Response:
    read_side = read_side_of(request)
    checks: dict[str, Any] = {}
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            async with read_side.pool.connection() as conn:
                await conn.execute("SELECT 1")
        checks["postgres"] = "ok"
    except Exception as exc:  # any failure to reach PostgreSQL makes the service unready
        checks["postgres"] = f"unreachable: {type(exc).__name__}"
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            await read_side.redis.ping()
        checks["redis"] = "ok"
    except Exception as exc:  # any failure to reach Redis makes the service unready
        checks["redis"] = f"unreachable: {type(exc).__name__}"
    gauge: LagGauge = request.app.state.lag_gauge
    lag = await gauge.lag()
    limit = read_side.settings.queries_ready_max_lag
    lag_ok = lag is None or lag <= limit
    ready = checks["postgres"] == "ok" and checks["redis"] == "ok" and lag_ok
    body = {"ready": ready, **checks, "projection_lag": lag, "max_lag": limit}
    if not ready:
        log.warning(
            "event=not_ready postgres=%s redis=%s lag=%s", checks["postgres"], checks["redis"], lag
        )
    return answer(body, status=200 if ready else 503)
