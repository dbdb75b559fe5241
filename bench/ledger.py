"""What happened to every message a load generator sent: the raw stuff of the figures.

Times are `time.monotonic()` seconds (CLOCK_MONOTONIC is one clock for every process on
the machine). A message is keyed by its `local_id`; the sender and its recipients are
in the same load generator process, so no clock or id crosses a process boundary.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any


def body_text(local_id: str, size: int) -> str:
    """A message text of exactly `size` characters (at least the local id) naming it."""
    head = f"{local_id}|"
    return head + "x" * max(0, size - len(head))


@dataclass
class Ledger:
    """Send, ack, delivery and receipt times per message, and what went wrong."""

    sent: dict[str, float] = field(default_factory=dict)
    sent_wall: dict[str, float] = field(default_factory=dict)  # time.time(), for stages
    decided: dict[str, float] = field(default_factory=dict)  # the event's own timestamp
    acked: dict[str, float] = field(default_factory=dict)
    expected: dict[str, int] = field(default_factory=dict)  # local id -> recipients
    received: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    receipted: dict[str, float] = field(default_factory=dict)
    seqs: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    failed: set[str] = field(default_factory=set)  # refused for good: counted as errors
    redundant_pushes: int = 0
    via_sync: int = 0
    resent: int = 0

    def on_send(self, local_id: str, recipients: int = 1) -> None:
        self.sent[local_id] = time.monotonic()
        self.sent_wall[local_id] = time.time()
        self.expected[local_id] = recipients

    def on_decided(self, local_id: str, event_wall: float) -> None:
        """The server's event time of a delivered message: splits latency in two stages."""
        self.decided.setdefault(local_id, event_wall)

    def on_ack(self, local_id: str, seq: int | None = None) -> None:
        self.acked.setdefault(local_id, time.monotonic())
        if seq is not None:
            self.seqs[local_id].add(seq)

    def on_receive(self, local_id: str, synced: bool = False) -> None:
        if local_id in self.sent:
            self.received[local_id].append(time.monotonic())
            self.via_sync += synced

    def on_receipt(self, local_id: str) -> None:
        self.receipted.setdefault(local_id, time.monotonic())

    def on_error(self, code: str, local_id: str | None = None) -> None:
        self.errors[code] += 1
        if local_id is not None:
            self.failed.add(local_id)

    def settled(self, local_id: str) -> bool:
        """Every recipient holds it, or it was refused for good."""
        got = len(self.received.get(local_id, ()))
        return got >= self.expected.get(local_id, 1) or local_id in self.failed

    def window(self, since: float, until: float) -> dict[str, Any]:
        """Raw samples (ms) for the messages sent in [since, until), for the driver to merge."""
        ack_ms: list[float] = []
        delivered_ms: list[float] = []  # send -> the recipient holds it (each recipient)
        last_ms: list[float] = []  # send -> the last recipient holds it
        receipt_ms: list[float] = []  # send -> the sender sees two ticks
        to_event_ms: list[float] = []  # send -> the processor decided (event timestamp)
        event_to_delivered_ms: list[float] = []  # event timestamp -> first recipient has it
        sent = lost = duplicates = deliveries = failed = 0
        first_send, last_delivery = until, since
        for local_id, t0 in self.sent.items():
            if not since <= t0 < until:
                continue
            sent += 1
            failed += local_id in self.failed
            first_send = min(first_send, t0)
            if local_id in self.acked:
                ack_ms.append((self.acked[local_id] - t0) * 1000)
            times = self.received.get(local_id, [])
            deliveries += len(times)
            expected = self.expected.get(local_id, 1)
            if len(times) < expected and local_id not in self.failed:
                lost += expected - len(times)
            if len(self.seqs.get(local_id, ())) > 1 or len(times) > expected:
                duplicates += 1
            if times and local_id in self.decided:
                event = self.decided[local_id] - self.sent_wall[local_id]
                to_event_ms.append(event * 1000)
                event_to_delivered_ms.append((min(times) - t0 - event) * 1000)
            if times:
                delivered_ms.extend((t - t0) * 1000 for t in times)
                last_ms.append((max(times) - t0) * 1000)
                last_delivery = max(last_delivery, max(times))
            if local_id in self.receipted:
                receipt_ms.append((self.receipted[local_id] - t0) * 1000)
        counters = {
            "errors": dict(self.errors),
            "redundant_pushes": self.redundant_pushes,
            "via_sync": self.via_sync,
            "resent": self.resent,
        }
        self.errors.clear()  # counters are per window
        self.redundant_pushes = self.via_sync = self.resent = 0
        return {
            "sent": sent,
            "acked": len(ack_ms),
            "deliveries": deliveries,
            "failed": failed,
            "lost": lost,
            "duplicates": duplicates,
            "first_send": first_send,
            "last_delivery": last_delivery,
            "ack_ms": ack_ms,
            "delivered_ms": delivered_ms,
            "last_member_ms": last_ms,
            "receipt_ms": receipt_ms,
            "to_event_ms": to_event_ms,
            "event_to_delivered_ms": event_to_delivered_ms,
            **counters,
        }
