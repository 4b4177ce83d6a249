"""``lmforge report REPORT.yaml``: teacher and students side by side, measured in one run.

For every model of the report (an HF folder the trainer exported) it builds a model
repository (the ``cpu`` target, with the model's quantization), then measures on the same
machine, one after the other:

* the task metric on a labelled slice, through the built graph (accuracy, or Spearman);
* in-process throughput of that graph (ONNX Runtime) at batch 1 and 32, and p50/p95 batch
  latency; and PyTorch FP32 eager throughput at batch 32 of the original checkpoint — the
  usual baseline;
* file size, and the seconds until Triton reports the repository READY;
* when ``serve`` is set, latency and throughput through the gateway in front of Triton.

Writes ``report.{json,md,png}`` (the plot: task metric against throughput) to ``out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field

from lmforge_core.strict import StrictModel, load_yaml_mapping, validate

if TYPE_CHECKING:
    from trainer.repository.quantize import Scored

logger = logging.getLogger(__name__)


class ReportError(ValueError):
    """The report config is invalid."""


class Evaluation(StrictModel):
    path: Path
    text_column: str = "sentence"
    pair_column: str | None = None
    label_column: str = "label"
    limit: int = Field(default=1000, ge=10)


class ReportModel(StrictModel):
    name: str
    checkpoint: Path
    quantize: Literal["none", "int8_dynamic", "int8_static"] = "none"


class ServeLoad(StrictModel):
    concurrency: int = Field(default=16, ge=1)
    duration_s: float = Field(default=8.0, gt=0)


class ReportConfig(StrictModel):
    task: Literal["classify", "embed"]
    evaluation: Evaluation
    models: tuple[ReportModel, ...] = Field(min_length=1)
    baseline: str | None = None  # the model others are compared with (default: the first)
    max_length: int = Field(default=128, ge=8)
    serve: ServeLoad | None = None
    out: Path = Path("benchmarks/results/report")


def load_report_config(path: Path) -> ReportConfig:
    data = load_yaml_mapping(path, what="report config", error=ReportError)
    if isinstance(data, dict):  # paths relative to the file
        from trainer.training.config import resolve_path  # pkg://<package>/<folder> too

        base = path.resolve().parent

        def fix(value: Any) -> Any:  # leave what is not a path for the validation to name
            return resolve_path(value, base) if isinstance(value, str) else value

        for model in data.get("models") or []:
            if isinstance(model, dict) and "checkpoint" in model:
                model["checkpoint"] = fix(model["checkpoint"])
        if isinstance(data.get("evaluation"), dict) and "path" in data["evaluation"]:
            data["evaluation"]["path"] = fix(data["evaluation"]["path"])
        if "out" in data:
            data["out"] = fix(data["out"])
    return validate(ReportConfig, data, source=str(path), what="report config", error=ReportError)


def _spec(config: ReportConfig, model: ReportModel) -> dict[str, Any]:
    ev = config.evaluation
    entry: dict[str, Any] = {
        "name": model.name.replace(".", "-"),
        "task": config.task,
        "checkpoint": str(model.checkpoint),
        "max_length": config.max_length,
        "parity": {
            "dataset": {"path": str(ev.path), "column": ev.text_column, "limit": 64},
            "atol": 1e-3,
            "min_cosine": 0.999,
        },
    }
    if model.quantize != "none":
        gate = {
            "path": str(ev.path),
            "text_column": ev.text_column,
            "pair_column": ev.pair_column,
            "label_column": ev.label_column,
            "limit": min(ev.limit, 500),
            "max_drop": 0.02,
        }
        entry["quantize"] = {"method": model.quantize, "gate": gate, "min_cosine": 0.9}
    return {"models": [entry]}


def _torch_throughput(checkpoint: Path, task: str, sentences: list[str], max_length: int) -> float:
    """PyTorch FP32 eager sentences/s at batch 32, sentences sorted by length."""
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))
    auto = AutoModel if task == "embed" else AutoModelForSequenceClassification
    model = auto.from_pretrained(str(checkpoint)).eval()
    ordered = sorted(sentences, key=len)
    batches = [ordered[i : i + 32] for i in range(0, len(ordered), 32)]
    best = 0.0
    with torch.no_grad():
        for attempt in range(3):
            started = time.perf_counter()
            for batch in batches:
                model(**tokenizer(batch, padding=True, truncation=True, max_length=max_length,
                                  return_tensors="pt"))  # fmt: skip
            if attempt:
                best = max(best, len(sentences) / (time.perf_counter() - started))
    return best


def _load_time(repository: Path) -> float:
    from triton_host.launcher import TritonServer

    server = TritonServer(repository)
    started = time.perf_counter()
    server.start()
    try:
        server.wait_ready(timeout=300)
        return time.perf_counter() - started
    finally:
        server.stop()


def _served(
    repository: Path, name: str, task: str, sentences: list[str], load: ServeLoad, workdir: Path
) -> dict[str, float]:
    from lmforge_client.client import AsyncLmforgeClient
    from lmforge_client.loadgen import closed_loop

    from gateway.processes import gateway_config, start_gateway
    from triton_host.launcher import TritonServer

    models = [{"name": name, "task": task, "triton_model": name}]
    with TritonServer(repository) as triton:
        config = gateway_config(triton.grpc_url, models)
        config["triton"]["repository"] = str(repository)
        with start_gateway(
            workdir / f"gw-{name}", config, log_level="WARNING", wait_serving=True
        ) as gw:

            async def measure(concurrency: int) -> dict[str, Any]:
                async with AsyncLmforgeClient(gw.target, timeout=120) as client:

                    async def call(i: int) -> object:
                        text = [sentences[i % len(sentences)]]
                        if task == "embed":
                            return await client.embed(name, text)
                        return await client.classify(name, text)

                    return (await closed_loop(call, concurrency, load.duration_s, 1.0)).summary()

            single = asyncio.run(measure(1))
            loaded = asyncio.run(measure(load.concurrency))
    return {
        "served_p50_ms": single["p50_ms"],
        "served_p95_ms": single["p95_ms"],
        "served_throughput": loaded["throughput"],
    }


def measure_model(
    config: ReportConfig, model: ReportModel, workdir: Path
) -> tuple[dict[str, Any], Scored]:
    import onnx

    from trainer.datasets import read_column
    from trainer.repository.builder import build_repository
    from trainer.repository.parity import ort_runner, row_wise
    from trainer.repository.quantize import task_scores
    from trainer.repository.reference import in_process_throughput, served_row_wise
    from trainer.repository.spec import MetricGate, parse_spec
    from triton_models.runtime.text import TextEncoder

    ev = config.evaluation
    spec = parse_spec(_spec(config, model))
    repository = workdir / f"repo-{model.name}"
    report = build_repository(spec, repository).models[0]
    name = spec.models[0].name
    graph = repository / f"{name}_encoder" / "1" / "model.onnx"
    tokenizer = repository / f"{name}_tokenize" / "1" / "tokenizer.json"
    names = [i.name for i in onnx.load(str(graph)).graph.input]
    gate = MetricGate(
        path=ev.path,
        text_column=ev.text_column,
        pair_column=ev.pair_column,
        label_column=ev.label_column,
        limit=ev.limit,
    )
    encoder = TextEncoder.from_file(tokenizer, config.max_length, "exact")
    runner = ort_runner(graph)
    one_by_one = served_row_wise(repository, name)  # measured as it is served
    if one_by_one:
        runner = row_wise(runner)
    scored = task_scores(
        runner, config.task, gate, encoder, names, report.labels, report.text_pairs
    )
    metric, value, rows = scored.metric, scored.value, len(scored.gold)
    sentences = read_column(ev.path, ev.text_column, ev.limit)
    speeds = in_process_throughput(
        graph,
        tokenizer,
        config.max_length,
        sentences,
        batch_sizes=(1, 32),
        rounds=1,
        row_wise=one_by_one,
    )
    by_size = {s.batch_size: s for s in speeds if s.sorted_by_length}
    latencies = [s.p50_batch_ms for s in speeds if s.batch_size == 1]
    row: dict[str, Any] = {
        "model": model.name,
        "quantize": model.quantize,
        "layers": _layers(model.checkpoint),
        metric: round(value, 4),
        "metric": metric,
        "rows": rows,
        "onnx_bs1_per_s": round(by_size[1].sentences_per_s, 1),
        "onnx_bs32_per_s": round(by_size[32].sentences_per_s, 1),
        "onnx_bs1_p50_ms": round(statistics.median(latencies), 2),
        "torch_fp32_bs32_per_s": round(
            _torch_throughput(model.checkpoint, config.task, sentences, config.max_length), 1
        ),
        "file_mb": report.encoder_mb,
        "triton_load_s": round(_load_time(repository), 2),
    }
    if config.serve is not None:
        row.update(_served(repository, name, config.task, sentences, config.serve, workdir))
    logger.info("%s: %s", model.name, row)
    return row, scored


def add_intervals(
    rows: list[dict[str, Any]], scores: list[Scored], baseline: int, samples: int = 1000
) -> None:
    """95 % bootstrap intervals over the evaluation rows: of each model's metric, and of its
    ratio to the baseline's, resampling the same rows for both (a paired interval)."""
    from lmforge_core.stats import bootstrap_indices, interval
    from trainer.repository.quantize import metric_value

    draws = bootstrap_indices(len(scores[baseline].gold), samples)
    replicates = [
        np.asarray([metric_value(s.metric, s.predictions[i], s.gold[i]) for i in draws])
        for s in scores
    ]
    for row, values in zip(rows, replicates, strict=True):
        row["metric_ci95"] = [round(v, 4) for v in interval(values)]
        ratio = values / replicates[baseline]
        row["vs_baseline_ci95"] = [round(v, 4) for v in interval(ratio)]
        row["bootstrap_samples"] = samples


def _layers(checkpoint: Path) -> int:
    data = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
    return int(data.get("num_hidden_layers", 0))


def _markdown(rows: list[dict[str, Any]], baseline: dict[str, Any]) -> str:
    metric = baseline["metric"]
    base_torch = baseline["torch_fp32_bs32_per_s"]
    head = (
        f"| model | layers | quantize | {metric} (95 % CI) | vs {baseline['model']} (95 % CI) | "
        "ONNX bs1/s | "
        f"ONNX bs32/s | bs32 speed-up vs {baseline['model']} PyTorch FP32 | bs1 p50 ms | MB | "
        "Triton load s | served p50 ms | served /s |"
    )
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['layers']} | {r['quantize']} | {r[metric]:.4f} "
            f"({_span(r['metric_ci95'])}) | {r[metric] / baseline[metric]:.3f} "
            f"({_span(r['vs_baseline_ci95'])}) | {r['onnx_bs1_per_s']:.0f} | "
            f"{r['onnx_bs32_per_s']:.0f} | {r['onnx_bs32_per_s'] / base_torch:.2f}x | "
            f"{r['onnx_bs1_p50_ms']:.2f} | {r['file_mb']:.1f} | {r['triton_load_s']:.2f} | "
            f"{r.get('served_p50_ms', float('nan')):.2f} | "
            f"{r.get('served_throughput', float('nan')):.0f} |"
        )
    lines.append("")
    lines.append(
        f"{metric} on {baseline['rows']} rows of the evaluation file; 95 % intervals from "
        f"{baseline['bootstrap_samples']} bootstrap resamplings of those rows (the ratio's "
        "interval resamples the same rows for both models)."
    )
    lines.append(
        f"Baseline: {baseline['model']} in PyTorch FP32 eager at batch 32: "
        f"{base_torch:.0f} sentences/s (sorted by length, same sentences)."
    )
    return "\n".join(lines) + "\n"


def _span(bounds: list[float]) -> str:
    return f"{bounds[0]:.3f} to {bounds[1]:.3f}"


def _plot(rows: list[dict[str, Any]], metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        axis.scatter(r["onnx_bs32_per_s"], r[metric], s=60)
        axis.annotate(r["model"], (r["onnx_bs32_per_s"], r[metric]), fontsize=8,
                      xytext=(5, 5), textcoords="offset points")  # fmt: skip
    axis.set_xlabel("in-process ONNX Runtime sentences/s, batch 32")
    axis.set_ylabel(metric)
    axis.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_report(config: ReportConfig) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="lmforge-report-") as tmp:
        measured = [measure_model(config, model, Path(tmp)) for model in config.models]
    rows = [row for row, _ in measured]
    index = next((i for i, r in enumerate(rows) if r["model"] == config.baseline), 0)
    add_intervals(rows, [scored for _, scored in measured], index)
    baseline = rows[index]
    out = config.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    markdown = _markdown(rows, baseline)
    (out / "report.md").write_text(markdown, encoding="utf-8")
    _plot(rows, baseline["metric"], out / "report.png")
    print(markdown)
    return rows


def _report(args: argparse.Namespace) -> int:
    try:
        config = load_report_config(Path(args.config))
    except ReportError as exc:
        logger.error("%s", exc)
        return 2
    run_report(config)
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "report", help="teacher and students side by side: metric, speed, size, load time"
    )
    parser.add_argument("config", help="report config (YAML)")
    parser.set_defaults(handler=_report)
