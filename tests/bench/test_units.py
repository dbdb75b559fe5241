"""The arithmetic of the benchmark: percentiles, the ledger's window, compare."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from bench.ledger import Ledger, body_text
from bench.results import compare
from bench.stats import percentile, ratio, summary

pytestmark = pytest.mark.unit


def test_percentiles_are_nearest_rank() -> None:
    samples = [float(i) for i in range(1, 101)]
    assert percentile(samples, 50) == 50.0
    assert percentile(samples, 99) == 99.0
    assert percentile(samples, 100) == 100.0
    assert summary([])["count"] == 0
    assert summary([3.0, 1.0, 2.0])["max"] == 3.0
    assert ratio(1.0, 0.0) is None
    assert ratio(3.0, 2.0) == 1.5


def test_body_text_has_the_asked_size_and_names_the_message() -> None:
    text = body_text("m-17", 100)
    assert len(text) == 100
    assert text.startswith("m-17|")


def test_ledger_counts_loss_duplicates_and_failures() -> None:
    ledger = Ledger()
    start = time.monotonic()
    for local_id in ("a", "b", "c", "d"):
        ledger.on_send(local_id)
    ledger.on_ack("a", 1)
    ledger.on_receive("a")
    ledger.on_ack("b", 2)
    ledger.on_ack("b", 3)  # stored twice under two seqs: a duplicate
    ledger.on_receive("b")
    ledger.on_ack("c", 4)  # acked, never received: lost
    ledger.on_error("rate_limited", "d")  # refused for good: a failure, not a loss
    ledger.on_receipt("a")
    window = ledger.window(start, time.monotonic() + 1)
    assert (window["sent"], window["acked"], window["deliveries"]) == (4, 3, 2)
    assert (window["lost"], window["duplicates"], window["failed"]) == (1, 1, 1)
    assert window["errors"] == {"rate_limited": 1}
    assert len(window["receipt_ms"]) == 1
    assert ledger.settled("d") and ledger.settled("a") and not ledger.settled("c")
    assert ledger.window(start, time.monotonic() + 1)["errors"] == {}  # counters per window


def test_compare_prints_only_what_differs(tmp_path: Path) -> None:
    def result(name: str, p99: float) -> Path:
        path = tmp_path / name
        body = {
            "scenario": "oneone",
            "date": "d",
            "commit": "c",
            "parameters": {"rate": 1000},
            "figures": {"parley": {"delivered_ms": {"p50": 5.0, "p99": p99}}},
        }
        path.write_text(json.dumps(body))
        return path

    lines = compare(result("a.json", 20.0), result("b.json", 40.0))
    assert any("figures.parley.delivered_ms.p99" in line and "2.00" in line for line in lines)
    assert not any("p50" in line for line in lines)


def test_projection_latency_is_read_from_the_first_checkpoint_covering_an_offset() -> None:
    from bench.live_projections import Seen, _covers

    seen = Seen.__new__(Seen)
    seen.steps = {0: [(4, 10.0), (9, 10.5), (20, 11.0)]}
    assert seen.at(0, 3) == 10.0
    assert seen.at(0, 9) == 10.5
    assert seen.at(0, 10) == 11.0
    try:
        seen.at(0, 21)
    except RuntimeError:
        pass
    else:
        raise AssertionError("an offset never covered must not get a time")
    # Checkpoints are the last offset applied; `ends` are one past the last offset.
    assert _covers({0: 9, 1: 3}, {0: 10, 1: 4})
    assert not _covers({0: 9}, {0: 10, 1: 1})
    assert not _covers({0: 8, 1: 3}, {0: 10, 1: 4})


def test_the_latency_poller_is_waited_for_until_it_saw_the_last_offset_itself() -> None:
    """The phase once stopped its poller as soon as a read of its own saw the end covered,
    before the poller had polled again: the last offsets had no time ("never projected")."""
    from bench.live_projections import Seen

    class Checkpoints:
        def __init__(self) -> None:
            self.reads = iter([{0: 3}, {0: 3}, {0: 6}, {0: 9}])

        def read(self) -> dict[int, int]:
            return next(self.reads, {0: 9})

    seen = Seen(Checkpoints())  # type: ignore[arg-type]
    seen.start()
    seen.wait({0: 10}, deadline_s=10)
    seen.stop()
    assert seen.at(0, 9) >= seen.at(0, 4) >= seen.at(0, 3)
