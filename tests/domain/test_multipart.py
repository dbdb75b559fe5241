"""The multipart rules: how a file is cut into parts, and what a completion must list."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.media import BadUpload, SizeMismatch
from domain.multipart import (
    MIB,
    BadPartNumber,
    PartLimits,
    PartMismatch,
    PartPlan,
    TooManyParts,
    check_completion,
    check_part_numbers,
    plan_parts,
)

pytestmark = pytest.mark.unit

LIMITS = PartLimits(min_part=8 * MIB, max_part=64 * MIB, max_parts=1000)


@given(st.integers(min_value=1, max_value=64 * MIB * 1000))
def test_a_plan_covers_the_file_within_the_bounds(size: int) -> None:
    plan = plan_parts(size, None, LIMITS)
    assert LIMITS.min_part <= plan.part_size <= LIMITS.max_part
    assert plan.part_size % MIB == 0
    assert 1 <= plan.parts <= LIMITS.max_parts
    sizes = [plan.size_of(n) for n in range(1, plan.parts + 1)]
    assert sum(sizes) == size
    assert all(s == plan.part_size for s in sizes[:-1]) and 0 < sizes[-1] <= plan.part_size


def test_the_smallest_parts_are_taken_unless_the_file_needs_bigger_ones() -> None:
    assert plan_parts(2 * 1024 * MIB, None, LIMITS).part_size == 8 * MIB  # 256 parts
    assert plan_parts(10_000 * MIB, None, LIMITS).part_size == 10 * MIB
    with pytest.raises(TooManyParts):
        plan_parts(64 * MIB * 1000 + 1, None, LIMITS)
    with pytest.raises(TooManyParts):
        plan_parts(8 * MIB * 1000 + 1, 8 * MIB, LIMITS)


@pytest.mark.parametrize("part_size", [8 * MIB - 1, 64 * MIB + 1, "8388608", True, 1.5])
def test_a_part_size_out_of_bounds_is_a_bad_upload(part_size: object) -> None:
    with pytest.raises(BadUpload):
        plan_parts(100 * MIB, part_size, LIMITS)


def test_part_numbers_go_from_one_to_parts_each_once() -> None:
    plan = PartPlan(3 * 8 * MIB - 1, 8 * MIB)
    assert check_part_numbers([3, 1], plan) == [3, 1]
    for numbers in ([0], [4], [1, 1], [], "1", [True], [1.0]):
        with pytest.raises(BadPartNumber):
            check_part_numbers(numbers, plan)
    with pytest.raises(TooManyParts):
        check_part_numbers([1, 2, 3, 3], plan)


def test_a_completion_lists_every_stored_part_with_its_etag_and_size() -> None:
    plan = PartPlan(2 * 8 * MIB + 5, 8 * MIB)
    stored = {1: ("a", 8 * MIB), 2: ("b", 8 * MIB), 3: ("c", 5)}
    listed = [{"part_number": n, "etag": f'"{e}"'} for n, e in ((3, "c"), (1, "a"), (2, "b"))]
    assert check_completion(listed, plan, stored) == [(1, "a"), (2, "b"), (3, "c")]
    with pytest.raises(BadPartNumber):
        check_completion(listed[:2], plan, stored)
    with pytest.raises(TooManyParts):
        check_completion([*listed, listed[0]], plan, stored)
    with pytest.raises(PartMismatch):
        check_completion(listed, plan, {**stored, 2: ("other", 8 * MIB)})
    with pytest.raises(PartMismatch):
        check_completion(listed, plan, {1: stored[1], 3: stored[3]})
    with pytest.raises(SizeMismatch):
        check_completion(listed, plan, {**stored, 3: ("c", 6)})
