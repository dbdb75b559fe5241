"""Where the CPU goes during a measured window: py-spy on each of Parley's processes.

`Profiler(pids, seconds, workdir)` starts `py-spy record` (raw, collapsed stacks) on
each Python service for the window; `summary()` gives each process's samples and its
functions with the most self time. py-spy is a dev dependency; without it, nothing
is profiled and the result says so.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

PYTHON_SERVICES = ("processor", "relay", "workers", "commands")


def _py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


class Profiler:
    """py-spy on several processes for one window."""

    def __init__(self, pids: dict[str, int], seconds: float, workdir: Path) -> None:
        self.files = {name: workdir / f"profile-{name}.txt" for name in pids}
        self.procs: list[subprocess.Popen[bytes]] = []
        tool = _py_spy()
        self.available = tool is not None
        if tool is None:
            return
        workdir.mkdir(parents=True, exist_ok=True)
        for name, pid in pids.items():
            self.procs.append(
                subprocess.Popen(
                    [
                        tool,
                        "record",
                        "--pid",
                        str(pid),
                        "--duration",
                        str(max(1, int(seconds))),
                        "--rate",
                        "100",
                        "--format",
                        "raw",
                        "--nonblocking",
                        "--output",
                        str(self.files[name]),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )

    def summary(self, top: int = 8) -> dict[str, Any]:
        for proc in self.procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        if not self.available:
            return {"error": "py-spy is not installed (pip install py-spy)"}
        out: dict[str, Any] = {}
        for name, path in self.files.items():
            if not path.exists():
                continue
            own: Counter[str] = Counter()
            total = 0
            for line in path.read_text(errors="replace").splitlines():
                stack, _, count = line.rpartition(" ")
                if not count.isdigit():
                    continue
                total += int(count)
                own[stack.split(";")[-1]] += int(count)
            out[name] = {
                "samples": total,
                "self": [
                    {"frame": frame[:160], "share": round(n / total, 3)}
                    for frame, n in own.most_common(top)
                ],
                "file": str(path),
            }
        return out
