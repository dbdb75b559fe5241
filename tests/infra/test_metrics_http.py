"""`/metrics` of the services without HTTP, and reading it back: the exposition over a
socket of its own, labelled gauges, histogram timing, and the quantiles and means taken
from two scrapes."""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from types import SimpleNamespace

import pytest
from aiokafka.structs import TopicPartition
from hypothesis import given
from hypothesis import strategies as st

from commands.processor import metrics as processor_metrics
from infra.metrics import REGISTRY, GaugeSet, Histogram, Registry
from infra.metrics_http import MetricsServer
from infra.metrics_scrape import observed, quantile, scrape
from streams import notifier_metrics
from tests.metrics_text import parse

pytestmark = pytest.mark.unit


def test_a_background_service_answers_metrics_on_its_own_port() -> None:
    processor_metrics.COMMANDS.inc(amount=3)
    server = MetricsServer("127.0.0.1", 0).start()
    try:
        with urllib.request.urlopen(server.address + "/metrics", timeout=5) as answer:
            assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            samples = parse(answer.read().decode())  # every line in the text format
        assert samples["parley_processor_commands_total"] >= 3
        assert "process_resident_memory_bytes" in samples
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(server.address + "/other", timeout=5)
        assert refused.value.code == 404
    finally:
        server.close()


def test_lags_per_partition_from_librdkafka_statistics() -> None:
    stats = {
        "topics": {
            "commands": {
                "partitions": {
                    "0": {"fetch_state": "active", "app_offset": 90, "hi_offset": 100},
                    "10": {"fetch_state": "active", "app_offset": 5, "hi_offset": 5},
                    # assigned, nothing taken yet: from the committed offset, or the first
                    "4": {
                        "fetch_state": "active",
                        "app_offset": -1001,
                        "committed_offset": 3,
                        "hi_offset": 7,
                    },
                    "5": {
                        "fetch_state": "offset-query",
                        "app_offset": -1001,
                        "committed_offset": -1001,
                        "lo_offset": 0,
                        "hi_offset": 0,
                    },
                    "2": {"fetch_state": "none", "app_offset": 1, "hi_offset": 7},  # not ours
                    "-1": {"app_offset": -1, "hi_offset": -1},
                }
            }
        }
    }
    processor_metrics.kafka_stats(json.dumps(stats))
    lags = {"0": 10.0, "10": 0.0, "4": 4.0, "5": 0.0}
    assert processor_metrics.LAG.values == lags
    lines = list(processor_metrics.LAG.samples())
    assert lines == [
        'parley_processor_consumer_lag{partition="0"} 10',
        'parley_processor_consumer_lag{partition="4"} 4',
        'parley_processor_consumer_lag{partition="5"} 0',
        'parley_processor_consumer_lag{partition="10"} 0',
    ]
    processor_metrics.kafka_stats("not json")  # logged, the last lags kept
    assert processor_metrics.LAG.values == lags


def test_the_notifier_counts_a_batch_and_its_lag() -> None:
    tp = TopicPartition("events", 3)
    consumer = SimpleNamespace(highwater=lambda _: 50)
    before = notifier_metrics.EVENTS.values.get("", 0.0)
    records = [SimpleNamespace(offset=40), SimpleNamespace(offset=41)]
    notifier_metrics.note_batch(consumer, {tp: records}, 2)
    assert notifier_metrics.EVENTS.values[""] == before + 2
    assert notifier_metrics.LAG.values["3"] == 8.0


def test_a_timed_block_is_observed_even_when_it_raises() -> None:
    registry = Registry()
    timed = registry.add(Histogram("t_seconds", "a block"))
    with timed.time():
        pass
    with pytest.raises(ValueError), timed.time():
        raise ValueError
    assert timed.series[""][-1] >= 0 and sum(timed.series[""][:-1]) == 2
    gauges = registry.add(GaugeSet("g", "per partition", "partition"))
    gauges.replace({"1": 2.0})
    assert 'g{partition="1"} 2' in registry.render()


@given(st.lists(st.floats(min_value=0.0, max_value=20.0), min_size=1, max_size=200))
def test_mean_and_quantiles_from_two_scrapes_match_the_observations(values: list[float]) -> None:
    registry = Registry()
    timed = registry.add(Histogram("x_seconds", "observed"))
    timed.observe(0.5)  # before the first scrape: not counted
    before = parse(registry.render())
    for value in values:
        timed.observe(value)
    after = parse(registry.render())
    seen = observed(before, after, "x_seconds")
    assert seen["count"] == len(values)
    assert math.isclose(seen["mean"], sum(values) / len(values) * 1000, abs_tol=0.01)
    # The median lies in the bucket that holds the true median (interpolated inside it).
    ordered = sorted(values)
    middle = ordered[math.ceil(0.5 * len(ordered)) - 1]
    bounds = (0.0, *timed.bounds, math.inf)
    index = next(i for i in range(1, len(bounds)) if middle <= bounds[i])
    p50 = quantile(before, after, "x_seconds", 0.5)
    assert bounds[index - 1] - 1e-9 <= p50 <= min(bounds[index], bounds[-2]) + 1e-9


def test_an_unreachable_service_scrapes_as_none() -> None:
    server = MetricsServer("127.0.0.1", 0)
    address = server.address
    server.close()  # never started: nothing listens
    assert scrape(address, timeout_s=1) is None
    assert REGISTRY.render().endswith("\n")
