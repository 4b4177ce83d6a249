"""CPU time and resident memory of the served processes (``psutil``).

Triton runs each python-backend model instance in its own stub process; the launcher starts
``tritonserver`` in its own session, so the stubs are the members of its process group whose
command line names the stub binary and the model's ``model.py``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil

from triton_host.bundled import STUB_NAME

MIB = 1024 * 1024


def _tree(pid: int, children: bool) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)] if children else [root]


def cpu_seconds(pid: int, children: bool = False) -> float:
    """User + system CPU seconds of ``pid`` (with ``children``: and of its live descendants,
    e.g. the engine processes a vLLM model's stub starts)."""
    total = 0.0
    for proc in _tree(pid, children):
        try:
            times = proc.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        total += times.user + times.system
    return total


def rss_mib(pid: int, children: bool = False) -> float:
    """Resident memory of ``pid`` in MiB, with ``children`` summed over its descendants too
    (NaN when it is gone or may not be read)."""
    try:
        procs = _tree(pid, children)
        return float(sum(p.memory_info().rss for p in procs)) / MIB
    except (psutil.NoSuchProcess, psutil.AccessDenied):
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
            cmdline = psutil.Process(pid).cmdline()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        model = stub_model(cmdline)
        if model is not None:
            stubs[model] = pid
    return stubs


class CpuWindow:
    """CPU use between :meth:`start` and :meth:`stop`: each named process in % of one core,
    and ``machine``: all processes on the machine in % of all its cores (what else ran;
    ``psutil.cpu_percent`` since the last call, so one window at a time)."""

    MACHINE = "machine"

    def __init__(self, pids: Mapping[str, int], trees: frozenset[str] = frozenset()) -> None:
        self.pids = dict(pids)
        self.trees = trees  # names whose descendants count with them
        self._wall = 0.0
        self._cpu: dict[str, float] = {}

    def start(self) -> None:
        self._wall = time.monotonic()
        psutil.cpu_percent(interval=None)  # starts psutil's machine-wide window
        self._cpu = {name: cpu_seconds(pid, name in self.trees) for name, pid in self.pids.items()}

    def stop(self) -> dict[str, float]:
        if not self._cpu:
            raise RuntimeError("CpuWindow.stop() before start()")
        wall = time.monotonic() - self._wall
        used = {
            name: round(100 * (cpu_seconds(pid, name in self.trees) - self._cpu[name]) / wall, 1)
            for name, pid in self.pids.items()
        }
        used[self.MACHINE] = round(psutil.cpu_percent(interval=None), 1)
        return used
