import pytest

from domain.membership import joined, left, was_member

pytestmark = pytest.mark.unit


def test_intervals_record_which_seqs_a_member_received() -> None:
    history = joined((), 0)
    history = left(history, 3)
    history = joined(history, 5)
    assert history == ((0, 3), (5, None))
    assert [was_member(history, seq) for seq in range(1, 8)] == [
        True, True, True, False, False, True, True,
    ]  # fmt: skip


def test_leaving_and_rejoining_without_messages_keeps_one_interval() -> None:
    assert joined(left(joined((), 2), 4), 4) == ((2, None),)


def test_joining_and_leaving_without_messages_leaves_no_trace() -> None:
    assert left(joined(((0, 1),), 3), 3) == ((0, 1),)


def test_leaving_twice_changes_nothing() -> None:
    assert left(((0, 1),), 5) == ((0, 1),)
