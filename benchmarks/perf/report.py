"""What ``lmforge bench perf`` writes: the run record (commit, machine), the history line,
the baseline, the Markdown report and its plot."""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import psutil

from benchmarks.perf.checks import RATIO_METRICS, Check
from benchmarks.perf.procs import CpuWindow

ROOT = Path(__file__).resolve().parents[2]
HISTORY_FILE = "perf_history.jsonl"
BASELINE_FILE = "perf_baseline.json"
MARKDOWN_FILE = "perf.md"
PLOT_FILE = "perf.png"


def _git(*args: str) -> str | None:
    try:
        result = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def commit() -> dict[str, Any]:
    """The checkout's commit id and whether tracked files differ from it."""
    return {
        "commit": _git("rev-parse", "HEAD"),
        "dirty": bool(_git("--no-optional-locks", "status", "--porcelain", "-uno")),
    }


def machine() -> dict[str, Any]:
    """CPU count and model, OS, Python, and how busy the machine was when the run started."""
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.partition(":")[2].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gib": round(psutil.virtual_memory().total / 1024**3, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def read_baseline(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def write_baseline(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def append_history(out: Path, record: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with (out / HISTORY_FILE).open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, sort_keys=True) + "\n")


def _header(r: dict[str, Any]) -> list[str]:
    m = r["machine"]
    return [
        "# lmforge bench perf",
        "",
        f"commit `{r['commit'] or 'unknown'}`{' (dirty tree)' if r['dirty'] else ''}; "
        f"{r['timestamp']}; {m['cpus']} cores {m['cpu_model']}, {m.get('memory_gib', '?')} GiB; "
        f"load average at start {m['loadavg_at_start']}",
        f"closed loop through the gateway, concurrency {r['concurrency']}, "
        f"{r['duration_s']:g} s after {r['warmup_s']:g} s warm-up, one SST-2 dev sentence "
        "per request" + (f"; **drill: {r['drill']}**" if r["drill"] else ""),
        "",
    ]


def _latency_table(r: dict[str, Any]) -> list[str]:
    lines = [
        "| model | p50 ms | p95 ms | p99 ms | req/s | in-process p50 ms | in-process /s "
        "| p50 ratio | throughput ratio | load s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for model, m in r["models"].items():
        g, ref = m["gateway"], m["reference"]
        lines.append(
            f"| {model} | {g['p50_ms']:.2f} | {g['p95_ms']:.2f} | {g['p99_ms']:.2f} | "
            f"{g['throughput']:.1f} | {ref['p50_ms']:.2f} | {ref['throughput']:.1f} | "
            f"{m['latency_ratio']:.2f} | {m['throughput_ratio']:.2f} | {m['load_s']:.2f} |"
        )
    return [
        *lines,
        "",
        "p50 ratio: gateway p50 / in-process p50 (batch 1); throughput ratio: in-process "
        "throughput (batch = concurrency) / gateway requests/s. Higher is worse for both.",
        "",
    ]


def _process_table(r: dict[str, Any]) -> list[str]:
    lines = [
        "| during the load of | process | CPU % of one core | RSS MiB |",
        "| --- | --- | ---: | ---: |",
    ]
    for model, m in r["models"].items():
        for process, rss in m["rss_mib"].items():
            lines.append(f"| {model} | {process} | {m['cpu_pct'][process]:.1f} | {rss:.1f} |")
    busy = ", ".join(
        f"{model} {m['cpu_pct'].get(CpuWindow.MACHINE, math.nan):.0f} %"
        for model, m in r["models"].items()
    )
    loads = "; ".join(
        f"{p} {s:.2f} s" for m in r["models"].values() for p, s in m["load_parts_s"].items()
    )
    memory = ", ".join(f"{p} {mib:.0f}" for p, mib in r["memory_mib"].items())
    return [
        *lines,
        "",
        f"Machine-wide CPU during each load, every process, in % of all "
        f"{r['machine']['cpus']} cores: {busy}.",
        "",
        f"Resident memory at the end of the run (MiB): {memory}.",
        "",
        f"Load time per Triton model (explicit model control, one at a time, until READY): "
        f"{loads}; the gateway was SERVING after {r['gateway_start_s']:.2f} s.",
        "",
    ]


def _check_table(checks: list[Check]) -> list[str]:
    lines = [
        "| model | metric | baseline | now | limit | result |",
        "| --- | --- | ---: | ---: | --- | --- |",
    ]
    for c in checks:
        lines.append(
            f"| {c.model} | {c.metric} | {c.baseline:g} | {c.now:g} | {c.limit} | "
            f"{'pass' if c.passed else '**REGRESSION**'} |"
        )
    return [*lines, ""]


def markdown(record: dict[str, Any], checks: list[Check] | None, note: str) -> str:
    """The whole report of one run; ``note`` ends it (PASS, FAIL with the regressions, …)."""
    lines = _header(record) + _latency_table(record) + _process_table(record)
    if checks is not None:
        lines += _check_table(checks)
    lines.append(note)
    return "\n".join(lines) + "\n"


def plot(record: dict[str, Any], baseline: dict[str, Any] | None, path: Path) -> None:
    """The checked ratios per model, this run next to the baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(record["models"])
    fig, axes = plt.subplots(1, len(RATIO_METRICS), figsize=(10, 4))
    width = 0.38
    for axis, (metric, meaning) in zip(axes, RATIO_METRICS.items(), strict=True):
        now = [record["models"][m][metric] for m in models]
        xs = range(len(models))
        axis.bar([x + width / 2 for x in xs], now, width, label="this run")
        if baseline is not None:
            base = [baseline.get("models", {}).get(m, {}).get(metric, 0.0) for m in models]
            axis.bar([x - width / 2 for x in xs], base, width, label="baseline")
            limits = [b * (1 + record["tolerances"][metric]) for b in base]
            lows, highs = [x - width for x in xs], [x + width for x in xs]
            axis.hlines(limits, lows, highs, colors="red", linestyles="--", label="limit")
        axis.set_xticks(list(xs), models)
        axis.set_title(meaning, fontsize=9)
        axis.set_ylabel("ratio (higher is worse)")
        axis.grid(alpha=0.3, axis="y")
        axis.legend(fontsize=8)
    fig.suptitle(f"lmforge bench perf, commit {str(record['commit'])[:10]}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
