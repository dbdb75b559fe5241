"""What /proc says about the processes that serve a benchmark: CPU time and memory.

The processes are found from the pid files the stack and `parley up` write under the
state folder (`.state/{kafka,postgres,redis}/*.pid`, `.state/services/*.pid`), plus
their child processes. PostgreSQL backends name their database in their process title;
those of other databases (other engineers' test runs on the shared server) are counted
apart as `postgres_other` so that they do not inflate Parley's CPU.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from infra.settings import Settings

TICKS_PER_S = os.sysconf("SC_CLK_TCK")
STACK = ("kafka", "postgres", "redis")


def read_pid(path: Path) -> int | None:
    """The pid in a pid file, if the file exists and that process is alive."""
    try:
        pid = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if Path(f"/proc/{pid}").exists() else None


def children(pid: int) -> list[int]:
    """Every descendant process of `pid` (not its threads)."""
    parents: dict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[int(fields[1])].append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def server_processes(settings: Settings) -> dict[str, list[int]]:
    """group -> pids: each service of `parley up`, kafka, postgres (this database), redis."""
    groups: dict[str, list[int]] = {}
    for pidfile in sorted((Path(settings.state_dir) / "services").glob("*.pid")):
        pid = read_pid(pidfile)
        if pid is not None:
            groups[pidfile.stem] = [pid, *children(pid)]
    return {**groups, **stack_processes(settings)}


def stack_processes(settings: Settings) -> dict[str, list[int]]:
    """group -> pids of the local Kafka, PostgreSQL (split by database) and Redis."""
    state = Path(settings.state_dir)
    groups: dict[str, list[int]] = {}
    for name in STACK:
        pid = read_pid(state / name / f"{name}.pid")
        if pid is None:
            continue
        if name != "postgres":
            groups[name] = [pid, *children(pid)]
            continue
        ours, others = [pid], []
        for child in children(pid):
            title = cmdline(child).split()
            # "postgres: <user> <database> <client> <state>" for a backend
            database = title[2] if len(title) > 3 and title[0] == "postgres:" else None
            shared = database is None or title[1] in ("logical", "autovacuum", "background")
            if shared or database == settings.pg_db:
                ours.append(child)
            else:
                others.append(child)
        groups["postgres"] = ours
        groups["postgres_other"] = others
    return groups


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process (all its threads) so far, in seconds."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S


def rss_kib(pid: int) -> int:
    """Resident memory of a process, KiB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass
class CpuMeter:
    """CPU seconds used by groups of processes between `start()` and `stop()`.

    A process that exits inside the window loses what it used since the last sample
    (its parent's `cutime` is not read), so short-lived helpers are under-counted.
    """

    groups: dict[str, list[int]]
    _start: dict[int, float] | None = None

    def start(self) -> None:
        self._start = {pid: cpu_seconds(pid) for pids in self.groups.values() for pid in pids}

    def stop(self) -> dict[str, float]:
        assert self._start is not None, "start() first"
        used: dict[str, float] = {}
        for group, pids in self.groups.items():
            used[group] = round(
                sum(max(0.0, cpu_seconds(pid) - self._start.get(pid, 0.0)) for pid in pids), 3
            )
        return used


def load_average() -> tuple[float, float, float]:
    one, five, fifteen = os.getloadavg()
    return round(one, 2), round(five, 2), round(fifteen, 2)
