"""Prometheus metrics for `GET /metrics`, in the text exposition format (version 0.0.4).

A small implementation of the three kinds Parley uses: counters, histograms and gauges
read at scrape time. The modules that count declare their instruments at import, in one
registry per process (`REGISTRY`), as Prometheus clients do; a service serves them with
`metrics_routes()`; a service without HTTP (processor, relay, workers, notifier) serves
them on a port of its own (`infra.metrics_http`). An instrument carries at most one label
(a frame type, an error code, a partition), always from a bounded set. An increment is a
dict lookup and an addition, with no lock: each instrument is written from one thread
(the event loop, or the processor's or relay's loop). A scrape from another thread reads
each instrument's dict in one C-level copy (`sorted(d.items())`, under the GIL), so it
never sees one change size; it may miss an observation being added, never break.
"""

from __future__ import annotations

import bisect
import os
import resource
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
"""For counts per batch (commands, events)."""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return repr(float(value)) if value != int(value) else f"{int(value)}"


class Instrument:
    kind = ""

    def __init__(self, name: str, help: str, label: str = "") -> None:
        self.name = name
        self.help = help
        self.label = label

    def _labels(self, value: str, extra: str = "") -> str:
        pairs = [f'{self.label}="{_escape(value)}"'] if self.label else []
        if extra:
            pairs.append(extra)
        return "{" + ",".join(pairs) + "}" if pairs else ""

    def samples(self) -> Iterator[str]:
        raise NotImplementedError


class Counter(Instrument):
    """A count that only goes up (per label value)."""

    kind = "counter"

    def __init__(self, name: str, help: str, label: str = "") -> None:
        super().__init__(name, help, label)
        self.values: dict[str, float] = {}

    def inc(self, label: str = "", amount: float = 1.0) -> None:
        self.values[label] = self.values.get(label, 0.0) + amount

    def samples(self) -> Iterator[str]:
        for label, value in sorted(self.values.items()):
            yield f"{self.name}{self._labels(label)} {_number(value)}"


class Histogram(Instrument):
    """Observations counted in cumulative buckets, with their sum and count."""

    kind = "histogram"

    def __init__(
        self, name: str, help: str, buckets: tuple[float, ...] = LATENCY_BUCKETS, label: str = ""
    ) -> None:
        super().__init__(name, help, label)
        self.bounds = buckets
        self.series: dict[str, list[float]] = {}  # per label: bucket counts…, +Inf, sum

    def observe(self, value: float, label: str = "") -> None:
        series = self.series.get(label)
        if series is None:
            series = self.series[label] = [0.0] * (len(self.bounds) + 2)
        series[bisect.bisect_left(self.bounds, value)] += 1
        series[-1] += value

    @contextmanager
    def time(self, label: str = "") -> Iterator[None]:
        """Observe how long the block took (seconds), whether or not it raised."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.observe(time.perf_counter() - started, label)

    def samples(self) -> Iterator[str]:
        for label, series in sorted(self.series.items()):
            running = 0.0
            for bound, count in zip((*self.bounds, float("inf")), series, strict=False):
                running += count
                le = "+Inf" if bound == float("inf") else _number(bound)
                labels = self._labels(label, 'le="' + le + '"')
                yield f"{self.name}_bucket{labels} {_number(running)}"
            yield f"{self.name}_sum{self._labels(label)} {_number(series[-1])}"
            yield f"{self.name}_count{self._labels(label)} {_number(running)}"


class Gauge(Instrument):
    """A value read when scraped (`read`, set by whoever knows it; not shown until then).
    A total kept elsewhere (the CPU time) is read the same way, declared a counter."""

    def __init__(self, name: str, help: str, kind: str = "gauge") -> None:
        super().__init__(name, help)
        self.kind = kind
        self.read: Callable[[], float] | None = None

    def samples(self) -> Iterator[str]:
        if self.read is not None:
            yield f"{self.name} {_number(self.read())}"


class GaugeSet(Instrument):
    """A gauge per label value (a partition's lag), all replaced at once by `replace`."""

    kind = "gauge"

    def __init__(self, name: str, help: str, label: str) -> None:
        super().__init__(name, help, label)
        self.values: dict[str, float] = {}

    def replace(self, values: dict[str, float]) -> None:
        self.values = values

    def set(self, label: str, value: float) -> None:
        self.values[label] = value

    def samples(self) -> Iterator[str]:
        for label, value in sorted(self.values.items(), key=_label_order):
            yield f"{self.name}{self._labels(label)} {_number(value)}"


def _label_order(item: tuple[str, float]) -> tuple[int, str]:
    """Partitions in number order: 2 before 10."""
    label = item[0]
    return (int(label), "") if label.isdigit() else (1 << 62, label)


AnyInstrument = TypeVar("AnyInstrument", bound=Instrument)


class Registry:
    """The instruments of one process, rendered together."""

    def __init__(self) -> None:
        self.instruments: dict[str, Instrument] = {}

    def add(self, instrument: AnyInstrument) -> AnyInstrument:
        if instrument.name in self.instruments:
            raise ValueError(f"metric {instrument.name} is declared twice")
        self.instruments[instrument.name] = instrument
        return instrument

    def render(self) -> str:
        """Every instrument that has samples: one declared by a module this process
        imports but never uses (a gateway's, in a processor) is left out."""
        lines = []
        for instrument in list(self.instruments.values()):
            samples = list(instrument.samples())
            if samples:
                lines += [f"# HELP {instrument.name} {instrument.help}"]
                lines += [f"# TYPE {instrument.name} {instrument.kind}", *samples]
        return "\n".join(lines) + "\n"


REGISTRY = Registry()

PROCESS_CPU = REGISTRY.add(
    Gauge("process_cpu_seconds_total", "CPU time used (user and system).", "counter")
)
PROCESS_RSS = REGISTRY.add(Gauge("process_resident_memory_bytes", "Resident memory."))
PROCESS_START = REGISTRY.add(Gauge("process_start_time_seconds", "When the process started."))
HTTP_REQUESTS = REGISTRY.add(
    Counter("parley_http_requests_total", "HTTP requests answered, by status.", "status")
)
HTTP_ERRORS = REGISTRY.add(
    Counter("parley_http_errors_total", "HTTP error answers, by error code.", "code")
)
HTTP_SECONDS = REGISTRY.add(
    Histogram("parley_http_request_seconds", "HTTP request time, first byte in to last out.")
)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _rss_bytes() -> float:
    try:
        with open("/proc/self/statm") as statm:
            return float(int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE"))
    except OSError:
        return 0.0


_STARTED = time.time()
PROCESS_CPU.read = _cpu_seconds
PROCESS_RSS.read = _rss_bytes
PROCESS_START.read = lambda: _STARTED


async def metrics(request: Request) -> Response:
    return Response(REGISTRY.render(), media_type=CONTENT_TYPE)


def metrics_routes() -> list[Route]:
    return [Route("/metrics", metrics, methods=["GET"])]
