"""Benchmark: one multi-task run (SST-2 + TREC + STS-B, temperature sampling T=2) next to the
single-task runs of the same encoder.

    python -m benchmarks.train_multitask [--steps 800] [--stsb-epochs 1]

Single-task numbers for SST-2 and TREC come from benchmarks/results/train_sst2.json and
train_trec_imbalance.json (focal, as in the multi-task config) when present; STS-B's
single-task run is trained here. Writes benchmarks/results/train_multitask.{json,md}.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from benchmarks.training_common import RESULTS, markdown_table, run_config, write_results

METRICS = {
    "sst2": ["accuracy", "macro_f1"],
    "trec": ["accuracy", "macro_f1", "recall/ABBR"],
    "stsb": ["pearson", "spearman"],
}


def _single(name: str, key: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    summary = data.get(key, data) if key else data
    return {"final": summary["final"], "step": summary["step"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--stsb-epochs", type=float, default=1.0)
    parser.add_argument("--num-ranks", type=int, default=1)
    args = parser.parse_args()
    multi = run_config(
        "multitask_sst2_trec_stsb",
        {"training.max_steps": args.steps, "training.eval_every": max(1, args.steps // 2)},
        args.num_ranks,
    )
    stsb = run_config("stsb_regression", {"training.epochs": args.stsb_epochs}, args.num_ranks)
    singles = {
        "sst2": _single("train_sst2", ""),
        "trec": _single("train_trec_imbalance", "focal"),
        "stsb": {"final": stsb["final"], "step": stsb["step"]},
    }
    rows = []
    for task, names in METRICS.items():
        single = singles[task]
        for metric in names:
            single_value = single["final"][task][metric] if single else float("nan")
            rows.append([task, metric, single_value, multi["final"][task][metric]])
    table = markdown_table(["task", "metric", "single-task", "multi-task"], rows)
    steps = {k: (v or {}).get("step") for k, v in singles.items()}
    markdown = (
        "# Multi-task (SST-2 + TREC + STS-B, temperature T=2) vs. single-task\n\n"
        f"all-MiniLM-L6-v2, shared encoder. Multi-task: {args.steps} steps of 32 in total "
        f"(wall {multi['wall_seconds']:.0f} s). Single-task steps: {steps}.\n\n{table}\n"
    )
    write_results("train_multitask", {"multi": multi, "single": singles}, markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
