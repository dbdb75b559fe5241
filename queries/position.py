"""Read-your-writes on demand: wait until the read model has reached a command's position.

A command ack carries `chat_id` and `position` (the log position of its last event). A
request may send `X-Parley-Position: <chat_id>:<position>`; before answering, the
service polls `read.chats.position` of that chat (every 5 ms, backing off to 50 ms)
until it is at or past the position, up to `read_your_writes_timeout_s`, then answers
`425 not_yet_projected`. The chat must be one the caller is or was a member of: the
wait for someone else's chat never ends early, so it answers exactly like a chat that
does not exist (or has not been projected yet).
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from uuid import UUID

from psycopg import sql
from starlette.requests import Request

from projections.schema import LIVE_SCHEMA
from queries.errors import BadPosition, NotYetProjected
from queries.params import MAX_SEQ
from queries.resources import ReadSide, read_side_of

HEADER = "x-parley-position"
_FORMAT = re.compile(
    r"([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}):([0-9]{1,19})"
)
_POLL_FIRST_S = 0.005
_POLL_MAX_S = 0.05

_REACHED = sql.SQL(
    "SELECT c.position >= %s FROM {s}.chats c JOIN {s}.members m "
    "ON m.chat_id = c.chat_id AND m.user_id = %s WHERE c.chat_id = %s"
).format(s=sql.Identifier(LIVE_SCHEMA))


@dataclass(frozen=True, slots=True)
class Position:
    """A place in the log that one chat's projections must have reached."""

    chat_id: UUID
    position: int


def position_header(request: Request) -> Position | None:
    """The request's `X-Parley-Position`, if any; `bad_position` if malformed."""
    raw = request.headers.get(HEADER)
    if raw is None:
        return None
    found = _FORMAT.fullmatch(raw.strip())
    if found is None or int(found.group(2)) > MAX_SEQ:
        raise BadPosition()
    return Position(UUID(found.group(1)), int(found.group(2)))


async def wait_for_position(read_side: ReadSide, user_id: UUID, wanted: Position) -> float:
    """Return (seconds waited) once the chat's projections reached the position.

    Raises `not_yet_projected` when the deadline passes first.
    """
    started = time.monotonic()
    deadline = started + read_side.settings.read_your_writes_timeout_s
    pause = _POLL_FIRST_S
    while True:
        async with read_side.pool.connection() as conn:
            row = await (
                await conn.execute(_REACHED, (wanted.position, user_id, wanted.chat_id))
            ).fetchone()
        if row is not None and row[0]:
            return time.monotonic() - started
        left = deadline - time.monotonic()
        if left <= 0:
            raise NotYetProjected()
        await asyncio.sleep(min(pause, left))
        pause = min(pause * 2, _POLL_MAX_S)


async def read_your_writes(request: Request, user_id: UUID) -> None:
    """Honour the request's `X-Parley-Position`, if any: wait, or raise 425 / 400.

    Called by each route once its parameters are read, so a malformed request is
    answered 400/404 at once rather than after the wait.
    """
    wanted = position_header(request)
    if wanted is not None:
        waited = await wait_for_position(read_side_of(request), user_id, wanted)
        request.state.waited_ms = round(waited * 1000, 1)
