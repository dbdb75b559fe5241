from itertools import pairwise
from uuid import UUID, uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.ids import (
    EPOCH_MS,
    MAX_SEQUENCE,
    MAX_WORKER_ID,
    Snowflake,
    compose_snowflake,
    direct_chat_id,
    snowflake_parts,
    text_of,
    uuid_of,
)

pytestmark = pytest.mark.unit

NOW = EPOCH_MS + 1_000_000


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, ms: int = NOW) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def test_ids_are_positive_64_bit_and_carry_their_parts() -> None:
    generator = Snowflake(worker_id=7, clock=FakeClock())
    first = generator.next_id()
    assert 0 < first < 2**63
    assert snowflake_parts(first) == (NOW, 7, 0)
    assert snowflake_parts(generator.next_id()) == (NOW, 7, 1)


def test_ids_increase_when_the_clock_goes_backwards() -> None:
    clock = FakeClock()
    generator = Snowflake(worker_id=1, clock=clock)
    before = generator.next_id()
    clock.ms -= 5_000
    after = generator.next_id()
    assert after > before
    assert snowflake_parts(after) == (NOW, 1, 1)


def test_sequence_overflow_borrows_the_next_millisecond() -> None:
    generator = Snowflake(worker_id=3, clock=FakeClock())
    ids = [generator.next_id() for _ in range(MAX_SEQUENCE + 2)]
    assert ids == sorted(set(ids))
    assert snowflake_parts(ids[MAX_SEQUENCE]) == (NOW, 3, MAX_SEQUENCE)
    assert snowflake_parts(ids[-1]) == (NOW + 1, 3, 0)


def test_the_clock_catching_up_resets_the_sequence() -> None:
    clock = FakeClock()
    generator = Snowflake(worker_id=0, clock=clock)
    generator.next_id()
    clock.ms += 1
    assert snowflake_parts(generator.next_id()) == (NOW + 1, 0, 0)


def test_the_default_clock_works() -> None:
    generator = Snowflake(worker_id=MAX_WORKER_ID)
    first, second = generator.next_id(), generator.next_id()
    assert second > first
    assert snowflake_parts(first)[1] == MAX_WORKER_ID


@pytest.mark.parametrize("worker_id", [-1, MAX_WORKER_ID + 1])
def test_worker_id_must_fit_ten_bits(worker_id: int) -> None:
    with pytest.raises(ValueError, match="worker_id"):
        Snowflake(worker_id=worker_id)


def test_a_clock_before_the_epoch_is_refused() -> None:
    with pytest.raises(ValueError, match="epoch"):
        Snowflake(worker_id=0, clock=FakeClock(EPOCH_MS - 1)).next_id()


def test_exhausted_time_bits_are_refused() -> None:
    with pytest.raises(OverflowError):
        Snowflake(worker_id=0, clock=FakeClock(EPOCH_MS + 2**41)).next_id()


@given(
    ms=st.integers(EPOCH_MS, EPOCH_MS + 2**41 - 1),
    worker_id=st.integers(0, MAX_WORKER_ID),
    sequence=st.integers(0, MAX_SEQUENCE),
)
def test_parts_round_trip(ms: int, worker_id: int, sequence: int) -> None:
    snowflake = compose_snowflake(ms, worker_id, sequence)
    assert 0 <= snowflake < 2**63
    assert snowflake_parts(snowflake) == (ms, worker_id, sequence)


@given(st.lists(st.integers(-3, 3), max_size=300))
def test_ids_strictly_increase_whatever_the_clock_does(steps: list[int]) -> None:
    clock = FakeClock()
    generator = Snowflake(worker_id=5, clock=clock)
    ids = []
    for step in steps:
        clock.ms += step
        ids.append(generator.next_id())
    assert all(a < b for a, b in pairwise(ids))


@pytest.mark.parametrize("args", [(-1, 0, 0), (EPOCH_MS - 1, 0, 0), (NOW, 1024, 0), (NOW, 0, 4096)])
def test_compose_refuses_parts_out_of_range(args: tuple[int, int, int]) -> None:
    with pytest.raises(ValueError, match="range"):
        compose_snowflake(*args)


@pytest.mark.parametrize("snowflake", [-1, 2**63])
def test_parts_refuse_non_snowflakes(snowflake: int) -> None:
    with pytest.raises(ValueError, match="Snowflake"):
        snowflake_parts(snowflake)


def test_direct_chat_id_is_the_same_either_way_round() -> None:
    alice, bob = uuid4(), uuid4()
    assert direct_chat_id(alice, bob) == direct_chat_id(bob, alice)
    assert direct_chat_id(alice, bob) != direct_chat_id(alice, uuid4())
    assert direct_chat_id(alice, bob).version == 5


def test_direct_chat_id_needs_two_users() -> None:
    alice = uuid4()
    with pytest.raises(ValueError, match="two different users"):
        direct_chat_id(alice, alice)


@given(
    st.uuids(), st.sampled_from([str, lambda u: u.hex, lambda u: str(u).upper(), lambda u: u.urn])
)
def test_uuid_of_and_text_of_agree_with_uuid_and_str(value: UUID, spell: object) -> None:
    text = spell(value)  # type: ignore[operator]
    for _ in range(2):  # parsed, then remembered
        assert uuid_of(text) == UUID(text) == value
        assert text_of(value) == str(value)
    assert text_of("not a uuid") == "not a uuid"
    assert text_of(7) == "7"


@given(st.one_of(st.text(max_size=40), st.integers(), st.none(), st.lists(st.integers())))
def test_uuid_of_refuses_what_uuid_refuses(junk: object) -> None:
    try:
        expected: object = UUID(junk)  # type: ignore[arg-type]
    except Exception as exc:  # whatever UUID raises, uuid_of raises too
        with pytest.raises(type(exc)):
            uuid_of(junk)  # type: ignore[arg-type]
    else:
        assert uuid_of(junk) == expected  # type: ignore[arg-type]
