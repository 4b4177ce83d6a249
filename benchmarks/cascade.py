"""``lmforge bench cascade``: a small and a large classifier behind one confidence cascade.

Given two SST-2 classifiers (by default the INT8 student and the FP32 teacher of
``benchmarks/pipeline_sst2.yaml``), in one run:

1. builds one repository with both (``small``: the student, graph-fused and static INT8;
   ``large``: the teacher, FP32);
2. computes both models' probabilities with their own served graphs in this process, on the
   rows the student's training run held out for selection (``--choose-on``, default
   ``<student run>/validation/sst2.tsv``) and on SST-2 dev, and from them the **curve** over
   thresholds: the share of inputs the cascade sends on to the large model (the small model's
   top score is under the threshold) and the cascade's accuracy;
3. picks the threshold to serve on the held-out rows (``--policy accurate``: the most accurate
   one that escalates at most ``--max-escalation`` (30 %) of the inputs; ``cheapest``: the
   least escalating one that keeps ``--keep`` (99 %) of the large model's accuracy), then
   reports that threshold on dev, which chose nothing, and checks both bounds there;
4. serves the three routes (``cascade`` at that threshold, ``large`` alone, ``small`` alone)
   through Triton and the gateway: every dev sentence through the cascade (accuracy and the
   escalation rate counted from each result's ``served_by``), then the throughput of each
   route under the same closed-loop load.

Writes ``cascade.{json,md,png}`` under ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from lmforge_client.client import AsyncLmforgeClient
from lmforge_client.loadgen import closed_loop

from benchmarks import RESULTS

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = ROOT / "runs" / "pipeline_sst2"
MAX_LENGTH = 64


def _latest_export(stage: str) -> Path | None:
    """The newest finished ``stage`` of the pipeline benchmark's work folder, if any."""
    done = sorted(PIPELINE.glob(f"{stage}-*/stage.json"), key=lambda p: p.stat().st_mtime)
    return done[-1].parent / "run" / "exports" / "sst2" if done else None


def held_out_rows(export: Path) -> Path:
    """The validation rows of the run an export ``<run>/exports/<task>`` came from."""
    return export.parent.parent / "validation" / f"{export.name}.tsv"


Array = np.ndarray[Any, Any]


def curve(small: Array, large: Array, gold: Array, thresholds: Array) -> list[dict[str, float]]:
    """Accuracy and escalation rate of the cascade for each threshold (pure)."""
    confident = small.max(axis=1)
    small_label, large_label = small.argmax(axis=1), large.argmax(axis=1)
    rows = []
    for threshold in thresholds:
        escalate = confident < threshold
        label = np.where(escalate, large_label, small_label)
        rows.append(
            {
                "threshold": round(float(threshold), 4),
                "escalation": float(escalate.mean()),
                "accuracy": float((label == gold).mean()),
            }
        )
    return rows


def choose(
    rows: list[dict[str, float]],
    target: float,
    max_escalation: float = 1.0,
    policy: str = "cheapest",
) -> dict[str, float]:
    """The threshold to serve. ``cheapest``: the least-escalating one whose accuracy reaches
    ``target``; ``accurate``: the most accurate one within ``max_escalation`` (ties: the less
    escalating). When no threshold qualifies: the most accurate one."""
    if policy == "accurate":
        within = [r for r in rows if r["escalation"] <= max_escalation]
        if within:
            return max(within, key=lambda r: (r["accuracy"], -r["escalation"]))
    else:
        good = [r for r in rows if r["accuracy"] >= target]
        if good:
            return min(good, key=lambda r: (r["escalation"], r["threshold"]))
    return max(rows, key=lambda r: (r["accuracy"], -r["escalation"]))


def _build(small: Path, large: Path, held_out: Path, train: Path, out: Path) -> Path:
    from trainer.repository.builder import build_repository
    from trainer.repository.spec import parse_spec

    gate = {
        "path": str(held_out),
        "text_column": "sentence",
        "label_column": "label",
        "max_drop": 0.01,
        "limit": 2000,
    }
    # static INT8: its outputs do not depend on what else is in the batch (dynamic INT8's
    # per-batch activation scales do), so served and in-process thresholds agree
    quantize = {
        "method": "int8_static",
        "calibration": {"samples": 256},
        "min_cosine": 0.9,
        "gate": gate,
    }
    calibration = {"dataset": {"path": str(train), "limit": 256}}
    models: list[dict[str, Any]] = [
        {"name": "small", "checkpoint": str(small), "quantize": quantize, "parity": calibration},
        {"name": "large", "checkpoint": str(large)},
    ]
    for model in models:
        model.update(task="classify", max_length=MAX_LENGTH)
    build_repository(parse_spec({"models": models}), out)
    return out


async def _served(
    target: str, sentences: list[str], concurrency: int, duration: float
) -> dict[str, Any]:
    async with AsyncLmforgeClient(target, timeout=120) as client:
        answers: list[tuple[str, str]] = []
        for start in range(0, len(sentences), 32):
            reply = await client.classify("cascade", sentences[start : start + 32])
            answers += [(r.top.label, r.served_by.triton_model) for r in reply.results]
        speeds = {}
        for route in ("large", "cascade", "small"):

            async def call(i: int, route: str = route) -> object:
                return await client.classify(route, [sentences[i % len(sentences)]])

            speeds[route] = (await closed_loop(call, concurrency, duration, 2.0)).summary()
    return {"answers": answers, "speeds": speeds}


def _markdown(report: dict[str, Any]) -> str:
    chosen, served, speeds = report["chosen"], report["served"], report["speeds"]
    large, small = report["large_accuracy"], report["small_accuracy"]
    lines = [
        "# Confidence cascade on SST-2 dev (small: INT8 student, large: FP32 teacher)",
        "",
        f"The threshold is chosen on {report['chosen_on']['rows']} rows the student's training "
        f"run held out of SST-2 train (there: accuracy {report['chosen_on']['accuracy']:.4f}, "
        f"escalated {report['chosen_on']['escalation']:.1%}); every number below is on dev, "
        "which chose nothing.",
        "",
        f"{report['machine']['cpus']} cores; {report['rows']} dev sentences; "
        f"served load: closed loop, concurrency {report['concurrency']}, "
        f"{report['duration_s']:.0f} s per route, one sentence per request.",
        "",
        "| threshold | escalated to large | cascade accuracy | vs large |",
        "| ---: | ---: | ---: | ---: |",
    ]
    for r in report["curve"]:
        if r["threshold"] in report["shown"]:
            lines.append(
                f"| {r['threshold']:.2f} | {r['escalation']:.1%} | {r['accuracy']:.4f} | "
                f"{r['accuracy'] / large:.4f} |"
            )
    throughput = {k: v["throughput"] for k, v in speeds.items()}
    lines += [
        "",
        f"- small alone: accuracy {small:.4f}; large alone: {large:.4f}",
        f"- chosen threshold ({report.get('policy', 'cheapest')}) {chosen['threshold']:.2f}: accuracy {chosen['accuracy']:.4f} "
        f"({chosen['accuracy'] / large:.2%} of large; target >= {report['keep']:.0%}), "
        f"escalated {chosen['escalation']:.1%} (target <= {report['max_escalation']:.0%}): "
        f"**{'met' if report['met'] else 'MISSED'}**",
        f"- served through the gateway at that threshold: accuracy {served['accuracy']:.4f}, "
        f"escalated {served['escalation']:.1%} (counted from served_by)",
        "",
        "| route | sentences/s | p50 ms | p95 ms | vs large |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for route in ("large", "cascade", "small"):
        s = speeds[route]
        lines.append(
            f"| {route} | {s['throughput']:.1f} | {s['p50_ms']:.1f} | {s['p95_ms']:.1f} | "
            f"{throughput[route] / throughput['large']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["curve"]
    fig, axis = plt.subplots(figsize=(7, 4.5))
    axis.plot([r["escalation"] for r in rows], [r["accuracy"] for r in rows], marker=".")
    axis.axhline(report["large_accuracy"], color="grey", ls="--", label="large alone")
    keep = f"{report['keep']:.0%} of large"
    axis.axhline(report["large_accuracy"] * report["keep"], color="grey", ls=":", label=keep)
    axis.axvline(report["max_escalation"], color="red", ls=":", label="escalation budget")
    chosen = report["chosen"]
    label = f"threshold {chosen['threshold']:.2f}"
    axis.scatter([chosen["escalation"]], [chosen["accuracy"]], color="red", zorder=3, label=label)
    axis.set_xlabel("share of inputs sent to the large model")
    axis.set_ylabel("SST-2 dev accuracy")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _run(args: argparse.Namespace) -> int:
    from gateway.processes import gateway_config, start_gateway
    from trainer.datasets import dataset_file, read_column
    from trainer.repository.reference import repository_labels, repository_outputs
    from triton_host.launcher import TritonServer

    small = Path(args.small) if args.small else _latest_export("student")
    large = Path(args.large) if args.large else _latest_export("teacher")
    if small is None or large is None:
        hint = "run `lmforge pipeline benchmarks/pipeline_sst2.yaml` first"
        logger.error("no --small/--large and no finished pipeline in %s: %s", PIPELINE, hint)
        return 2
    dev = dataset_file("sst2", "dev")
    held_out = Path(args.choose_on) if args.choose_on else held_out_rows(small)
    if not held_out.is_file():
        logger.error("no held-out rows to choose the threshold on: %s (--choose-on)", held_out)
        return 2
    sentences = read_column(dev, "sentence")
    with tempfile.TemporaryDirectory(prefix="lmforge-cascade-") as tmp:
        train = dataset_file("sst2", "train")
        repository = _build(small, large, held_out, train, Path(tmp) / "repository")
        labels = repository_labels(repository, "large")

        def scored(path: Path) -> tuple[dict[str, Any], Any]:
            texts = read_column(path, "sentence")
            gold = np.asarray(
                [labels.index(v) if v in labels else int(v) for v in read_column(path, "label")]
            )
            outputs = {
                m: repository_outputs(repository, m, texts, MAX_LENGTH) for m in ("small", "large")
            }
            return outputs, gold

        thresholds = np.round(np.arange(0.50, 1.0, 0.01), 2)
        val_probs, val_gold = scored(held_out)
        val_rows = curve(val_probs["small"], val_probs["large"], val_gold, thresholds)
        val_large = float((val_probs["large"].argmax(1) == val_gold).mean())
        picked = choose(val_rows, args.keep * val_large, args.max_escalation, args.policy)
        probs, gold = scored(dev)
        rows = curve(probs["small"], probs["large"], gold, thresholds)
        large_accuracy = float((probs["large"].argmax(1) == gold).mean())
        chosen = next(r for r in rows if r["threshold"] == picked["threshold"])
        logger.info("threshold %s chosen on held-out rows; on dev: %s", picked, chosen)
        route: dict[str, Any] = {
            "name": "cascade",
            "task": "classify",
            "deployments": [{"name": m, "triton_model": m} for m in ("small", "large")],
            "cascade": {"first": "small", "then": "large", "threshold": chosen["threshold"]},
        }
        models: list[dict[str, Any]] = [
            route,
            {"name": "large", "task": "classify", "triton_model": "large"},
            {"name": "small", "task": "classify", "triton_model": "small"},
        ]
        with TritonServer(repository) as triton:
            config = gateway_config(triton.grpc_url, models)
            config["triton"]["repository"] = str(repository)
            with start_gateway(
                Path(tmp) / "gateway", config, log_level="WARNING", wait_serving=True
            ) as gateway:
                served = asyncio.run(
                    _served(gateway.target, sentences, args.concurrency, args.duration)
                )
    answers = served["answers"]
    served_labels = [labels.index(label) for label, _ in answers]
    served_accuracy = float(np.mean(np.asarray(served_labels) == gold))
    escalated = float(np.mean([by == "large" for _, by in answers]))
    report = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "small": str(small),
        "large": str(large),
        "rows": len(sentences),
        "chosen_on": {"path": str(held_out), "rows": len(val_gold), **picked},
        "keep": args.keep,
        "max_escalation": args.max_escalation,
        "policy": args.policy,
        "concurrency": args.concurrency,
        "duration_s": args.duration,
        "small_accuracy": float((probs["small"].argmax(1) == gold).mean()),
        "large_accuracy": large_accuracy,
        "curve": rows,
        "shown": [0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.97, 0.99, chosen["threshold"]],
        "chosen": chosen,
        "met": chosen["accuracy"] >= args.keep * large_accuracy
        and chosen["escalation"] <= args.max_escalation,
        "served": {"accuracy": served_accuracy, "escalation": escalated},
        "speeds": served["speeds"],
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cascade.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    markdown = _markdown(report)
    (out / "cascade.md").write_text(markdown, encoding="utf-8")
    _plot(report, out / "cascade.png")
    print(markdown)
    return 0


def register_cascade(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``cascade`` to the subcommands of ``lmforge bench``."""
    parser = actions.add_parser(
        "cascade", help="confidence cascade of a small and a large SST-2 classifier"
    )
    parser.add_argument("--small", help="small classifier (HF folder); default: pipeline's student")
    parser.add_argument("--large", help="the large one; default: the pipeline's teacher")
    parser.add_argument(
        "--choose-on",
        help="labelled rows to choose the threshold on (default: the student run's validation)",
    )
    parser.add_argument("--keep", type=float, default=0.99, help="share of large's accuracy")
    parser.add_argument("--max-escalation", type=float, default=0.30)
    parser.add_argument(
        "--policy",
        choices=["accurate", "cheapest"],
        default="accurate",
        help="the served threshold: the most accurate within --max-escalation, or the least "
        "escalating that keeps --keep (default: %(default)s)",
    )
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per route")
    parser.add_argument("--out", default=str(RESULTS))
    parser.set_defaults(handler=_run)
