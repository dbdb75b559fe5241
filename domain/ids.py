"""Identifiers: Snowflake message ids and deterministic direct-chat ids."""

import threading
import time
from collections.abc import Callable
from functools import lru_cache
from typing import TypeVar
from uuid import UUID, uuid5

EPOCH_MS = 1_704_067_200_000
"""The Snowflake epoch, 2024-01-01T00:00:00Z, in Unix milliseconds."""

WORKER_BITS = 10
SEQUENCE_BITS = 12
TIME_BITS = 41
MAX_WORKER_ID = (1 << WORKER_BITS) - 1
MAX_SEQUENCE = (1 << SEQUENCE_BITS) - 1
MAX_ELAPSED_MS = (1 << TIME_BITS) - 1

DIRECT_CHAT_NAMESPACE = UUID("f5d2c00e-9e3c-4f29-ba26-701e37d3e1c5")
"""Namespace of the uuid5 ids of direct chats; part of the stored log format, never change it."""


def wall_clock_ms() -> int:
    """Milliseconds since the Unix epoch, from the system clock."""
    return time.time_ns() // 1_000_000


class Snowflake:
    """Generates strictly increasing 64-bit ids: 41 bits ms, 10 bits worker, 12 bits sequence.

    If the clock goes backwards the generator keeps using its last millisecond; if the
    sequence of a millisecond runs out it moves on to the next millisecond logically.
    """

    def __init__(self, worker_id: int, clock: Callable[[], int] = wall_clock_ms) -> None:
        if not 0 <= worker_id <= MAX_WORKER_ID:
            msg = f"worker_id must be in 0..{MAX_WORKER_ID}, got {worker_id}"
            raise ValueError(msg)
        self.worker_id = worker_id
        self._clock = clock
        self._last_ms = -1
        self._sequence = 0
        self._lock = threading.Lock()

    def next_id(self) -> int:
        """Return the next id, greater than every id this generator returned before."""
        with self._lock:
            elapsed = self._clock() - EPOCH_MS
            if elapsed < 0:
                msg = "the clock reads a time before the Snowflake epoch"
                raise ValueError(msg)
            if elapsed > self._last_ms:
                self._last_ms, self._sequence = elapsed, 0
            elif self._sequence < MAX_SEQUENCE:
                self._sequence += 1
            else:
                self._last_ms, self._sequence = self._last_ms + 1, 0
            if self._last_ms > MAX_ELAPSED_MS:
                msg = "Snowflake time bits exhausted"
                raise OverflowError(msg)
            return compose_snowflake(self._last_ms + EPOCH_MS, self.worker_id, self._sequence)


def compose_snowflake(unix_ms: int, worker_id: int, sequence: int) -> int:
    """Build an id from its parts; the inverse of `snowflake_parts`."""
    elapsed = unix_ms - EPOCH_MS
    if not 0 <= elapsed <= MAX_ELAPSED_MS:
        msg = f"time {unix_ms} is outside the Snowflake range"
        raise ValueError(msg)
    if not 0 <= worker_id <= MAX_WORKER_ID or not 0 <= sequence <= MAX_SEQUENCE:
        msg = f"worker {worker_id} or sequence {sequence} out of range"
        raise ValueError(msg)
    return (elapsed << (WORKER_BITS + SEQUENCE_BITS)) | (worker_id << SEQUENCE_BITS) | sequence


def snowflake_parts(snowflake: int) -> tuple[int, int, int]:
    """Split an id into (Unix milliseconds, worker id, sequence)."""
    if not 0 <= snowflake < 1 << (TIME_BITS + WORKER_BITS + SEQUENCE_BITS):
        msg = f"not a Snowflake id: {snowflake}"
        raise ValueError(msg)
    elapsed = snowflake >> (WORKER_BITS + SEQUENCE_BITS)
    worker_id = (snowflake >> SEQUENCE_BITS) & MAX_WORKER_ID
    return elapsed + EPOCH_MS, worker_id, snowflake & MAX_SEQUENCE


DIRECT_CHAT_IDS_KEPT = 16_384
"""1:1 chat ids remembered by `direct_chat_id` (about 200 bytes each)."""


@lru_cache(maxsize=DIRECT_CHAT_IDS_KEPT)
def direct_chat_id(user_a: UUID, user_b: UUID) -> UUID:
    """The id of the 1:1 chat between two users; the same whichever way round they come.

    Remembered for the last `DIRECT_CHAT_IDS_KEPT` pairs asked: the gateway asks it for
    every send to a user and the processor for every command of a 1:1 chat, and
    computing it (two UUIDs sorted, the name, uuid5) costs about 18 us where a hit
    costs under one."""
    if user_a == user_b:
        msg = "a direct chat needs two different users"
        raise ValueError(msg)
    low, high = sorted((user_a, user_b))
    return uuid5(DIRECT_CHAT_NAMESPACE, f"{low}:{high}")


IDS_KEPT = 16_384
"""Ids remembered by `uuid_of` and `text_of`, each (about 380 bytes an id in both: at
most 6 MiB a process); each starts again empty when full."""

_uuids: dict[str, UUID] = {}
_texts: dict[UUID, str] = {}


_K = TypeVar("_K")
_V = TypeVar("_V")


def _kept(memory: dict[_K, _V], key: _K, value: _V) -> _V:
    if len(memory) >= IDS_KEPT:
        memory.clear()
    memory[key] = value
    return value


def uuid_of(text: str) -> UUID:
    """`UUID(text)`, remembered: for the ids that come back on every command and frame
    (chats, users). A parse costs 1.1 us, a hit 0.1. Anything but a `str` is parsed as
    `UUID` would, and what it raises is raised. Not for ids seen once (a command's, a
    message's): they would only push the others out."""
    if type(text) is not str:
        return UUID(text)
    found = _uuids.get(text)
    return _kept(_uuids, text, UUID(text)) if found is None else found


def text_of(value: object) -> str:
    """`str(value)`, remembered for UUIDs: 0.2 us for a hit against 0.7 for `str`."""
    if type(value) is not UUID:
        return str(value)
    found = _texts.get(value)
    return _kept(_texts, value, str(value)) if found is None else found
