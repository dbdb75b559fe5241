"""One-dimensional PostgreSQL arrays built whole in their binary form, for the save's
statement (`infra.event_store.OneStatementRecorder`) and the message keys' (`key_columns`).

psycopg dumps a Python list by inspecting it on every call (its elements' types, its
dimensions, the smallest integer type that fits) and then each element through a dumper
of its own, in Python: 137-156 µs of the processor's CPU for the twelve arrays of a save
of one message, measured in the save (docs/performance.md, "A cheaper save"). The
statements' parameters have fixed types, so each array here is built in one pass with
`struct` and handed to psycopg as bytes that carry their type's oid.

Any module may import this one; it imports nothing of Parley's.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, TypeVar
from uuid import UUID

import psycopg
from psycopg import pq
from psycopg.abc import AdaptContext, Buffer
from psycopg.adapt import Dumper

_HEAD = struct.Struct("!iiIii")  # dimensions, has nulls, element type, length, lower bound
_EMPTY_HEAD = struct.Struct("!iiI")  # no dimensions: the empty array
_NULL = b"\xff\xff\xff\xff"  # an element's length of -1
_UUID_LENGTH = struct.pack("!i", 16)
_INT4 = struct.Struct("!ii")  # length 4, value
_INT8 = struct.Struct("!iq")  # length 8, value
_LENGTH = struct.Struct("!i").pack
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class PgArray(bytes):
    """An array in PostgreSQL's binary format; `oid` is the array type's."""

    __slots__ = ()
    oid: ClassVar[int] = 0
    element_oid: ClassVar[int] = 0


class UuidArray(PgArray):
    __slots__ = ()
    oid = 2951
    element_oid = 2950


class IntegerArray(PgArray):
    __slots__ = ()
    oid = 1007
    element_oid = 23


class BigintArray(PgArray):
    __slots__ = ()
    oid = 1016
    element_oid = 20


class TextArray(PgArray):
    __slots__ = ()
    oid = 1009
    element_oid = 25


class ByteaArray(PgArray):
    __slots__ = ()
    oid = 1001
    element_oid = 17


class TimestamptzArray(PgArray):
    __slots__ = ()
    oid = 1185
    element_oid = 1184


A = TypeVar("A", bound=PgArray)


def _array(kind: type[A], length: int, elements: bytes, has_null: bool) -> A:
    if not length:
        return kind(_EMPTY_HEAD.pack(0, 0, kind.element_oid))
    return kind(_HEAD.pack(1, has_null, kind.element_oid, length, 1) + elements)


def uuids(values: Sequence[UUID]) -> UuidArray:
    """A uuid[] of `values` (no nulls)."""
    return _array(UuidArray, len(values), b"".join(_UUID_LENGTH + v.bytes for v in values), False)


def integers(values: Sequence[int]) -> IntegerArray:
    """An integer[] of `values` (no nulls; each must fit in 32 bits)."""
    return _array(IntegerArray, len(values), b"".join(_INT4.pack(4, v) for v in values), False)


def bigints(values: Sequence[int]) -> BigintArray:
    """A bigint[] of `values` (no nulls; each must fit in 64 bits)."""
    return _array(BigintArray, len(values), b"".join(_INT8.pack(8, v) for v in values), False)


def _varying(kind: type[A], values: Sequence[Any], encode: Callable[[Any], bytes]) -> A:
    parts: list[bytes] = []
    has_null = False
    for value in values:
        if value is None:
            parts.append(_NULL)
            has_null = True
        else:
            data = encode(value)
            parts.append(_LENGTH(len(data)))
            parts.append(data)
    return _array(kind, len(values), b"".join(parts), has_null)


def texts(values: Sequence[str | None]) -> TextArray:
    """A text[] of `values`, None a null (UTF-8, the database's encoding)."""
    return _varying(TextArray, values, str.encode)


def byteas(values: Sequence[bytes | None]) -> ByteaArray:
    """A bytea[] of `values`, None a null."""
    return _varying(ByteaArray, values, bytes)


def _timestamptz(value: datetime) -> bytes:
    # Microseconds since 2000-01-01 UTC; a naive datetime cannot be subtracted (TypeError).
    return struct.pack("!q", (value - _PG_EPOCH) // _MICROSECOND)


def timestamptzs(values: Sequence[datetime | None]) -> TimestamptzArray:
    """A timestamptz[] of aware `values`, None a null."""
    return _varying(TimestamptzArray, values, _timestamptz)


class _PgArrayDumper(Dumper):
    """Hands a `PgArray` over as it is, typed with its class's oid.

    The oid is set per instance, not on the class, so that psycopg does not also take
    this dumper for every value it is told is of that array type (its dumpers by oid).
    """

    format = pq.Format.BINARY

    def __init__(self, cls: type, context: AdaptContext | None = None) -> None:
        super().__init__(cls, context)
        assert issubclass(cls, PgArray)
        self.oid = cls.oid

    def dump(self, obj: Any) -> Buffer:
        return obj  # type: ignore[no-any-return]


def _register(kinds: Iterable[type[PgArray]]) -> None:
    for kind in kinds:
        psycopg.adapters.register_dumper(kind, _PgArrayDumper)


# psycopg's global adapters: the template of every connection made after this import. Only
# values of these classes, which are Parley's own, are affected.
_register((UuidArray, IntegerArray, BigintArray, TextArray, ByteaArray, TimestamptzArray))
