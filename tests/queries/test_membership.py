"""Pages of history from membership intervals: exactly the visible seqs, in order, with
cursors that walk the whole history in either direction without gaps or repeats."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from queries.membership import Interval, page_of, visible_intervals


def visible(intervals: tuple[Interval, ...]) -> list[int]:
    return [s for a, b in intervals for s in range(a + 1, b + 1)]


histories = st.lists(
    st.tuples(st.integers(0, 60), st.one_of(st.none(), st.integers(0, 60))), max_size=4
).map(lambda rows: [(a, None if b is None else max(a, b)) for a, b in rows])


@given(histories, st.integers(0, 70))
def test_intervals_are_the_seqs_of_the_rows(rows: list[tuple[int, int | None]], last: int) -> None:
    intervals = visible_intervals(rows, last)
    expected = sorted(
        {s for a, b in rows for s in range(a + 1, (last if b is None else min(b, last)) + 1)}
    )
    assert visible(intervals) == expected
    assert all(a < b for a, b in intervals)
    assert all(intervals[i][1] < intervals[i + 1][0] for i in range(len(intervals) - 1))


@settings(max_examples=300)
@given(
    histories,
    st.integers(0, 70),
    st.one_of(st.none(), st.integers(0, 80)),
    st.one_of(st.none(), st.integers(1, 80)),
    st.integers(1, 12),
)
def test_a_page_is_the_visible_seqs_between_the_cursors(
    rows: list[tuple[int, int | None]], last: int, after: int | None, before: int | None, limit: int
) -> None:
    intervals = visible_intervals(rows, last)
    seqs = visible(intervals)
    between = [s for s in seqs if (after is None or s > after) and (before is None or s < before)]
    page = page_of(intervals, after, before, limit)
    expected = between[:limit] if after is not None else between[-limit:]
    assert list(page.seqs) == expected
    if page.before_seq is not None:
        assert any(s < page.before_seq for s in seqs)
        assert page.seqs == () or page.before_seq == page.seqs[0]
    else:
        assert not any(s < (page.seqs[0] if page.seqs else (after or 0) + 1) for s in seqs) or (
            after is None and not page.seqs
        )
    if page.after_seq is not None:
        assert any(s > page.after_seq for s in seqs)


@given(histories, st.integers(0, 70), st.integers(1, 7))
def test_cursors_walk_the_whole_history_both_ways(
    rows: list[tuple[int, int | None]], last: int, limit: int
) -> None:
    intervals = visible_intervals(rows, last)
    backwards: list[int] = []
    page = page_of(intervals, None, None, limit)
    while True:
        backwards = list(page.seqs) + backwards
        if page.before_seq is None:
            break
        page = page_of(intervals, None, page.before_seq, limit)
    assert backwards == visible(intervals)
    forwards: list[int] = []
    page = page_of(intervals, 0, None, limit)
    while True:
        forwards += page.seqs
        if page.after_seq is None:
            break
        page = page_of(intervals, page.after_seq, None, limit)
    assert forwards == visible(intervals)
