"""The ramp's picture: latency percentiles against the offered rate, one line per server."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_ramp(series: dict[str, list[dict[str, Any]]], threshold_ms: float, path: Path) -> Path:
    """Draw p50/p95/p99 of send->delivered against msgs/s for each server's steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 5.5), dpi=110)
    styles = {"p50": ":", "p95": "--", "p99": "-"}
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red"]
    for colour, (server, steps) in zip(colours, series.items(), strict=False):
        steps = _last_attempts(steps)
        rates = [s["rate"] for s in steps]
        for name, style in styles.items():
            values = [s["delivered_ms"][name] for s in steps]
            axes.plot(rates, values, style, marker="o", color=colour, label=f"{server} {name}")
    axes.axhline(threshold_ms, color="grey", linewidth=0.8)
    axes.text(
        0.01,
        threshold_ms,
        f" {threshold_ms:g} ms",
        va="bottom",
        transform=axes.get_yaxis_transform(),
    )
    axes.set_yscale("log")
    axes.set_xlabel("offered rate (messages/s, 1:1)")
    axes.set_ylabel("send -> delivered latency (ms, log)")
    axes.set_title("parley bench ramp: latency percentiles against rate")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8, ncol=2)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


def _last_attempts(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One point per rate: the last attempt at it."""
    by_rate = {s["rate"]: s for s in steps}
    return [by_rate[r] for r in sorted(by_rate)]
