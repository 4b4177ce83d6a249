"""Shared helpers of the training benchmarks: launch a config, collect its metrics, tables."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "trainer" / "configs"
RESULTS = REPO / "benchmarks" / "results"
RUNS = REPO / "runs" / "bench"


def run_config(
    name: str, overrides: dict[str, Any] | None = None, num_ranks: int = 1
) -> dict[str, Any]:
    """Train ``trainer/configs/<name>.yaml`` into ``runs/bench/<run>``; return its summary."""
    source = CONFIGS / f"{name}.yaml"
    config = yaml.safe_load(source.read_text(encoding="utf-8"))
    run_name = (overrides or {}).pop("run_name", name)
    for dotted, value in (overrides or {}).items():
        node = config
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        node[leaf] = value
    out = RUNS / run_name
    shutil.rmtree(out, ignore_errors=True)
    config["output_dir"] = str(out)
    for task in config["tasks"]:  # the copy lives elsewhere: make data paths absolute
        for split in ("train", "dev"):
            if split in task and not Path(task[split]["path"]).is_absolute():
                task[split]["path"] = str((CONFIGS / task[split]["path"]).resolve())
    out.parent.mkdir(parents=True, exist_ok=True)
    path = out.parent / f"{run_name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.setdefault("LMFORGE_CPU_THREADS", "1")  # a shared 2-core machine: no OpenMP spinning
    cmd = [sys.executable, "-m", "lmforge", "train", str(path), "--num-ranks", str(num_ranks)]
    print("$", " ".join(cmd), flush=True)
    started = time.monotonic()
    subprocess.run(cmd, cwd=REPO, env=env, check=True)
    wall = time.monotonic() - started
    summary = json.loads((out / "model" / "metrics.json").read_text(encoding="utf-8"))
    summary["wall_seconds"] = wall
    summary["run_dir"] = str(out)
    summary["config"] = config
    return summary


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(name: str, data: dict[str, Any], markdown: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    (RESULTS / f"{name}.md").write_text(markdown + "\n", encoding="utf-8")
    print(markdown)
    print(f"results: {RESULTS / name}.json / .md")
