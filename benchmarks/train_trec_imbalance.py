"""Benchmark: TREC coarse classes (ABBR = 1.6 % of train), plain cross-entropy vs. imbalance
handling, side by side: macro-F1 and ABBR recall on TREC dev.

    python -m benchmarks.train_trec_imbalance [--steps 300] [--methods focal class_weight oversample]

Writes benchmarks/results/train_trec_imbalance.{json,md}.
"""

from __future__ import annotations

import argparse

from benchmarks.training_common import markdown_table, run_config, write_results

CONFIG = {
    "plain": "trec_plain",
    "focal": "trec_focal",
    "class_weight": "trec_class_weight",
    "oversample": "trec_oversample",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--num-ranks", type=int, default=1)
    parser.add_argument("--methods", nargs="+", default=["focal"], choices=sorted(CONFIG))
    args = parser.parse_args()
    results = {}
    rows = []
    for method in ["plain", *args.methods]:
        summary = run_config(CONFIG[method], {"training.max_steps": args.steps}, args.num_ranks)
        metrics = summary["eval"]["trec"]
        results[method] = summary
        rows.append(
            [
                method,
                metrics["macro_f1"],
                metrics["recall/ABBR"],
                metrics["accuracy"],
                min(v for k, v in metrics.items() if k.startswith("recall/")),
                f"{summary['wall_seconds']:.0f}",
            ]
        )
    table = markdown_table(
        ["loss", "macro-F1", "ABBR recall", "accuracy", "worst-class recall", "wall s"], rows
    )
    markdown = (
        "# TREC (6 coarse classes): class-imbalance handling\n\n"
        f"all-MiniLM-L6-v2, {args.steps} steps of 32 (about "
        f"{args.steps * 32 / 4935:.1f} epochs), same seed and schedule; metrics on TREC dev "
        "(507 rows, 8 ABBR), evaluated once on the checkpoint selected on the validation split "
        "(10 % of train).\n\n"
        f"{table}\n"
    )
    write_results("train_trec_imbalance", results, markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
