"""The services' garbage collector tuning (`infra/runtime.py`)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from infra.runtime import tune_gc
from infra.settings import Settings

pytestmark = pytest.mark.unit


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_services_collect_the_young_generation_less_often_and_skip_start_up(
    restored_gc: None,
) -> None:
    _, gen1, gen2 = gc.get_threshold()
    tune_gc(Settings().gc_gen0_threshold)
    assert gc.get_threshold() == (20_000, gen1, gen2)
    assert gc.get_freeze_count() > 0


def test_a_threshold_of_zero_keeps_python_defaults(restored_gc: None) -> None:
    before = gc.get_threshold()
    tune_gc(0)
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
