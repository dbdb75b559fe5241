"""Process-wide tuning of Parley's long-running services (`parley serve ...`)."""

from __future__ import annotations

import gc
import os

OFF_LIVE_PATH = frozenset({"relay", "workers", "notifier"})
"""Services nobody waits on live: they build the read model, the log and notifications."""


def tune_gc(gen0_threshold: int) -> None:
    """Run the cyclic garbage collector's young generation every `gen0_threshold`
    allocations of container objects instead of Python's 700, and leave out of every
    collection what start-up built (the modules, the app, the settings).

    A service allocates a few dicts, lists and futures per frame, command and event,
    so with the default the young generation was collected thousands of times a second,
    each time walking what had survived since the last one. `parley bench oneone` at
    1,000 msgs/s: the gateway's CPU per message fell by 12-16 % (docs/performance.md).
    Nothing is freed later than it was: objects without cycles go when their last
    reference does, as always; only cyclic garbage waits for the next collection.
    A threshold of 0 or less keeps Python's defaults.
    """
    if gen0_threshold <= 0:
        return
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0_threshold, gen1, gen2)


def lower_priority(service: str, niceness: int) -> None:
    """Run a service off the live path at a lower CPU priority (`nice`), so that when
    the cores are full the gateway and the processor, whose work a user waits for, get
    them first; the read model and the log catch up when the load falls.

    Measured in docs/performance.md ("The hot path"). 0 keeps the same priority."""
    if service in OFF_LIVE_PATH and niceness > 0:
        os.nice(niceness)
