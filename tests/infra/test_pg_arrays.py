"""Arrays built in PostgreSQL's binary form (`infra.pg_arrays`) read back in the real
PostgreSQL as the values they were built from, with the type they claim."""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg import pq
from psycopg.types.array import ListBinaryDumper

from infra import pg_arrays
from infra.settings import Settings


@pytest.fixture(scope="module")
def conn(settings: Settings) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(settings.pg_conninfo, autocommit=True) as conn:
        yield conn


def _read_back(conn: psycopg.Connection[Any], array: pg_arrays.PgArray) -> tuple[Any, str]:
    row = conn.execute("SELECT %b, pg_typeof(%b)::text", (array, array)).fetchone()
    assert row is not None
    return row[0], row[1]


TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"))
"""Text PostgreSQL can hold (no NUL, no lone surrogate)."""
MOMENTS = st.datetimes(
    min_value=datetime(2, 1, 1),
    max_value=datetime(9998, 12, 31),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))]),
)

CASES: list[tuple[str, Callable[[Any], pg_arrays.PgArray], st.SearchStrategy[Any]]] = [
    ("uuid[]", pg_arrays.uuids, st.uuids()),
    ("integer[]", pg_arrays.integers, st.integers(-(2**31), 2**31 - 1)),
    ("bigint[]", pg_arrays.bigints, st.integers(-(2**63), 2**63 - 1)),
    ("text[]", pg_arrays.texts, st.none() | TEXT),
    ("bytea[]", pg_arrays.byteas, st.none() | st.binary()),
    ("timestamp with time zone[]", pg_arrays.timestamptzs, st.none() | MOMENTS),
]


@pytest.mark.parametrize(("type_name", "build", "element"), CASES, ids=[c[0] for c in CASES])
def test_an_array_reads_back_as_the_values_it_was_built_from(
    conn: psycopg.Connection[Any],
    type_name: str,
    build: Callable[[Sequence[Any]], pg_arrays.PgArray],
    element: st.SearchStrategy[Any],
) -> None:
    @settings(max_examples=60, deadline=None)
    @given(values=st.lists(element, max_size=8))
    def read_back(values: list[Any]) -> None:
        assert _read_back(conn, build(values)) == (values, type_name)

    read_back()


@pytest.mark.unit
def test_a_value_out_of_its_type_s_range_is_refused() -> None:
    with pytest.raises(struct.error):
        pg_arrays.integers([2**31])
    with pytest.raises(struct.error):
        pg_arrays.bigints([2**63])


@pytest.mark.unit
def test_a_time_without_a_zone_is_refused() -> None:
    with pytest.raises(TypeError):
        pg_arrays.timestamptzs([datetime(2026, 1, 1)])


@pytest.mark.unit
def test_psycopg_still_dumps_lists_of_the_same_types_its_own_way() -> None:
    """The arrays' dumper is registered for their classes only, never by type oid."""
    for kind in (pg_arrays.UuidArray, pg_arrays.TextArray, pg_arrays.TimestamptzArray):
        dumper = psycopg.adapters.get_dumper_by_oid(kind.oid, pq.Format.BINARY)
        assert issubclass(dumper, ListBinaryDumper)
