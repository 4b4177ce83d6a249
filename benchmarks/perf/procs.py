"""CPU time and resident memory of the served processes, read from ``/proc`` (Linux).

Triton runs each python-backend model instance in its own stub process; the launcher starts
``tritonserver`` in its own session, so the stubs are the members of its process group whose
command line names the stub binary and the model's ``model.py``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from triton_host.bundled import STUB_NAME

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` in seconds (``/proc/<pid>/stat`` fields 14 and 15)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rpartition(")")[2].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mib(pid: int) -> float:
    """``VmRSS`` of ``pid`` in MiB (NaN when the kernel does not report it)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


def stub_model(cmdline: Sequence[str]) -> str | None:
    """The Triton model a python-backend stub serves, from its command line (its first
    argument is ``<repository>/<model>/<version>/model.py``); None for other processes."""
    if not cmdline or not Path(cmdline[0]).name.startswith(STUB_NAME):
        return None
    for arg in cmdline[1:]:
        if arg.endswith(".py"):
            path = Path(arg)
            return path.parents[1].name if len(path.parents) > 1 else None
    return None


def find_stubs(triton_pid: int) -> dict[str, int]:
    """``{triton model: pid}`` of the python-backend stubs in tritonserver's process group."""
    from triton_host.launcher import group_members

    stubs = {}
    for pid in group_members(triton_pid):
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        model = stub_model([a.decode(errors="replace") for a in raw.split(b"\0") if a])
        if model is not None:
            stubs[model] = pid
    return stubs


def machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs since boot (``/proc/stat``'s ``cpu`` line;
    idle and iowait are not busy; guest time is already inside user time)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal
    return total - fields[3] - fields[4], total


class CpuWindow:
    """CPU use between :meth:`start` and :meth:`stop`: each named process in % of one core,
    and ``machine``: all processes on the machine in % of all its cores (what else ran)."""

    MACHINE = "machine"

    def __init__(self, pids: Mapping[str, int]) -> None:
        self.pids = dict(pids)
        self._wall = 0.0
        self._cpu: dict[str, float] = {}
        self._ticks = (0, 0)

    def start(self) -> None:
        self._wall = time.monotonic()
        self._ticks = machine_ticks()
        self._cpu = {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def stop(self) -> dict[str, float]:
        if not self._cpu:
            raise RuntimeError("CpuWindow.stop() before start()")
        wall = time.monotonic() - self._wall
        busy, total = machine_ticks()
        used = {
            name: round(100 * (cpu_seconds(pid) - self._cpu[name]) / wall, 1)
            for name, pid in self.pids.items()
        }
        elapsed = total - self._ticks[1]
        used[self.MACHINE] = round(100 * (busy - self._ticks[0]) / elapsed, 1) if elapsed else 0.0
        return used
