"""Benchmark: all-MiniLM-L6-v2 fine-tuned on SST-2 train for one epoch; SST-2 dev accuracy.

    python -m benchmarks.train_sst2 [--num-ranks 1] [--epochs 1]

Target: dev accuracy >= 0.89. Prints and writes benchmarks/results/train_sst2.{json,md}.
"""

from __future__ import annotations

import argparse

from benchmarks.training_common import markdown_table, run_config, write_results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--num-ranks", type=int, default=1)
    parser.add_argument("--epochs", type=float, default=1.0)
    args = parser.parse_args()
    summary = run_config("sst2_minilm", {"training.epochs": args.epochs}, args.num_ranks)
    dev = summary["eval"]["sst2"]
    best = summary.get("best") or {}
    validation = (best.get("eval") or summary["last_eval"]["eval"])["sst2"]
    rows = [
        [
            "validation (2000 rows of train; selects)",
            validation["accuracy"],
            validation["macro_f1"],
        ],
        ["dev (evaluated once, on the selected weights)", dev["accuracy"], dev["macro_f1"]],
    ]
    table = markdown_table(["SST-2", "accuracy", "macro-F1"], rows)
    markdown = (
        "# all-MiniLM-L6-v2 on SST-2, one epoch\n\n"
        f"{table}\n\nSelected step: {best.get('step', summary['step'])} of {summary['step']}. "
        f"Wall time {summary['wall_seconds']:.0f} s (training loop {summary['train_seconds']:.0f} s), "
        f"{args.num_ranks} rank(s), CPU. Target accuracy >= 0.89: "
        f"{'met' if dev['accuracy'] >= 0.89 else 'NOT met'} (dev)."
    )
    write_results("train_sst2", summary, markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
