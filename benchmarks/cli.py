"""``lmforge bench``: the product measured end to end, ratios side by side in one run.

``lmforge bench serving``: single-text Embed of real SST-2 sentences on all-MiniLM-L6-v2
through the gateway (its batcher on and off) in front of Triton (its dynamic batcher on and
off), perf_analyzer straight on the same Triton models (the ensemble, and the encoder the
gateway calls), and the in-process ONNX Runtime reference of the same graph file, same
tokenizer, same sentences. Writes JSON, CSV, a Markdown table and a PNG plot under
``benchmarks/results/``. The machine is shared and noisy: read the ratios, each measured in
the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
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
from lmforge_client.client import AsyncLmforgeClient
from lmforge_client.loadgen import closed_loop

from benchmarks import RESULTS, train_speed
from benchmarks.cascade import register_cascade
from benchmarks.chaos import register_chaos
from benchmarks.fallback import register_fallback
from benchmarks.generate_vs_vllm import register as register_generate
from benchmarks.perf import register_perf
from gateway.processes import gateway_config, start_gateway
from triton_host.launcher import TritonServer
from triton_host.perf import PerfAnalyzer, PerfAnalyzerError

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
ROUTES = {"batcher on": {}, "batcher off": {"enabled": False}}


def _spec(checkpoint: Path, dynamic_batching: bool) -> dict[str, Any]:
    return {
        "models": [
            {
                "name": "minilm",
                "task": "embed",
                "checkpoint": str(checkpoint),
                "max_length": 256,
                "max_batch_size": 32,
                "dynamic_batching": {"enabled": dynamic_batching, "max_queue_delay_us": 0},
            }
        ]
    }


def _build(workdir: Path, name: str, spec: dict[str, Any]) -> Path:
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    out = workdir / name
    command = [sys.executable, "-m", "lmforge", "repo", "build", str(path), "--out", str(out)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return out


async def _gateway_load(
    target: str, route: str, sentences: list[str], concurrency: int, duration: float
) -> dict[str, Any]:
    async with AsyncLmforgeClient(target, timeout=120) as client:

        async def call(i: int) -> object:
            return await client.embed(route, [sentences[i % len(sentences)]])

        result = await closed_loop(call, concurrency, duration, warmup=2.0)
    return result.summary()


def _serve_variant(
    repo: Path,
    variant: str,
    sentences: list[str],
    levels: list[int],
    duration: float,
    perf: PerfAnalyzer,
    workdir: Path,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    models = [
        {"name": name.replace(" ", "-"), "task": "embed", "triton_model": "minilm", "batching": cfg}
        for name, cfg in ROUTES.items()
    ]
    config = gateway_config("", models)
    with TritonServer(repo) as triton:
        config["triton"].update(url=triton.grpc_url, repository=str(repo))
        with start_gateway(
            workdir / f"gateway-{variant}", config, log_level="WARNING", wait_serving=True
        ) as gateway:
            for level in levels:
                for route in ROUTES:
                    summary = asyncio.run(
                        _gateway_load(
                            gateway.target, route.replace(" ", "-"), sentences, level, duration
                        )
                    )
                    rows.append({"path": f"gateway, {route}", "triton": variant, **summary})
                    logger.info(
                        "%s / %s c=%d: %.1f/s", variant, route, level, summary["throughput"]
                    )
                if not perf.available:
                    continue
                for model in ("minilm", "minilm_encoder"):
                    try:
                        result = perf.run(
                            model,
                            triton.grpc_url,
                            repo / model / "perf_analyzer_input.json",
                            level,
                            workdir=workdir,
                            measurement_ms=int(duration * 1000 / 2),
                        )
                    except PerfAnalyzerError as exc:
                        logger.warning("%s", exc)
                        continue
                    rows.append(
                        {
                            "path": f"perf_analyzer, {model}",
                            "triton": variant,
                            "mode": "closed",
                            "level": level,
                            "throughput": result.throughput,
                            "p50_ms": result.p50_ms,
                            "p95_ms": result.p95_ms,
                            "p99_ms": result.p99_ms,
                        }
                    )
    return rows


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    series: dict[str, list[tuple[float, float, float]]] = {}
    for row in rows:
        if row["path"].startswith("in-process"):
            continue
        key = f"{row['path']} (Triton DB {row['triton']})"
        series.setdefault(key, []).append((row["level"], row["throughput"], row["p50_ms"]))
    for key, points in sorted(series.items()):
        points.sort()
        left.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=key)
        right.plot([p[0] for p in points], [p[2] for p in points], marker="o", label=key)
    best = max(
        (r for r in rows if r["path"].startswith("in-process")), key=lambda r: r["throughput"]
    )
    left.axhline(best["throughput"], color="black", linestyle="--", label="in-process ORT, best")
    left.axhline(0.8 * best["throughput"], color="grey", linestyle=":", label="0.8 x in-process")
    for axis, label in ((left, "sentences/s"), (right, "p50 latency (ms)")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("concurrency (one sentence per request)")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    right.set_yscale("log")
    left.legend(fontsize=7)
    fig.suptitle("all-MiniLM-L6-v2 Embed, SST-2 dev sentences, 2 CPU cores")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _markdown(rows: list[dict[str, Any]], summary: list[str]) -> str:
    lines = [
        "| path | Triton dynamic batching | concurrency | sentences/s | p50 ms | p95 ms | p99 ms |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['path']} | {r['triton']} | {r['level']} | {r['throughput']:.1f} | "
            f"{r['p50_ms']:.2f} | {r.get('p95_ms', float('nan')):.2f} | "
            f"{r.get('p99_ms', float('nan')):.2f} |"
        )
    return "\n".join(["\n".join(f"- {s}" for s in summary), "", *lines]) + "\n"


def _summary(rows: list[dict[str, Any]]) -> list[str]:
    def pick(path: str, triton: str, level: int) -> dict[str, Any] | None:
        return next(
            (
                r
                for r in rows
                if r["path"] == path and r["triton"] == triton and r["level"] == level
            ),
            None,
        )

    reference = [r for r in rows if r["path"].startswith("in-process")]
    best = max(reference, key=lambda r: r["throughput"])
    served_ref = max(
        (r for r in reference if "spinning off" in r["path"]), key=lambda r: r["throughput"]
    )
    bs1 = min(
        (r for r in reference if r["level"] == 1 and "spinning off" in r["path"]),
        key=lambda r: r["p50_ms"],
    )
    lines = [
        f"best in-process ONNX Runtime: {best['throughput']:.1f} sentences/s ({best['path']}); "
        f"with the session settings the encoder is served with: {served_ref['throughput']:.1f} "
        f"({served_ref['path']})",
    ]
    levels = sorted({r["level"] for r in rows if r["path"].startswith("gateway")})
    top = max(levels)
    for triton in ("on", "off"):
        for route in ROUTES:
            row = pick(f"gateway, {route}", triton, top)
            if row:
                lines.append(
                    f"c={top}, gateway {route}, Triton DB {triton}: {row['throughput']:.1f}/s = "
                    f"{row['throughput'] / best['throughput']:.2f}x best in-process, "
                    f"{row['throughput'] / served_ref['throughput']:.2f}x in-process as served"
                )
    gateway_c1 = pick("gateway, batcher on", "on", 1)
    encoder_c1 = pick("perf_analyzer, minilm_encoder", "on", 1)
    ensemble_c1 = pick("perf_analyzer, minilm", "on", 1)
    if gateway_c1:
        parts = [f"c=1 gateway p50 {gateway_c1['p50_ms']:.2f} ms"]
        if encoder_c1:
            parts.append(
                f"perf_analyzer on minilm_encoder (the model the gateway calls) "
                f"{encoder_c1['p50_ms']:.2f} ms (+{gateway_c1['p50_ms'] - encoder_c1['p50_ms']:.2f})"
            )
        if ensemble_c1:
            parts.append(
                f"on the minilm ensemble {ensemble_c1['p50_ms']:.2f} ms "
                f"({gateway_c1['p50_ms'] - ensemble_c1['p50_ms']:+.2f})"
            )
        parts.append(
            f"in-process batch 1 {bs1['p50_ms']:.2f} ms "
            f"(+{gateway_c1['p50_ms'] - bs1['p50_ms']:.2f})"
        )
        lines.append("; ".join(parts))
    return lines


def _serving(args: argparse.Namespace) -> int:
    from trainer.datasets import dataset_file, read_column
    from trainer.repository.demo import minilm_checkpoint
    from trainer.repository.reference import in_process_throughput

    sentences = read_column(dataset_file("sst2", "dev"), "sentence")
    perf = PerfAnalyzer(Path(args.perf_venv))
    if not perf.available:
        logger.warning("perf_analyzer not found in %s (make perf-env): skipping it", args.perf_venv)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="lmforge-bench-") as tmp:
        workdir = Path(tmp)
        repos = {
            variant: _build(workdir, f"repo-db-{variant}", _spec(minilm_checkpoint(), on))
            for variant, on in (("on", True), ("off", False))
        }
        encoder = repos["on"] / "minilm_encoder" / "1" / "model.onnx"
        tokenizer = repos["on"] / "minilm_tokenize" / "1" / "tokenizer.json"
        for spinning in (False, True):
            for ref in in_process_throughput(encoder, tokenizer, 256, sentences, spinning=spinning):
                order = "sorted by length" if ref.sorted_by_length else "input order"
                rows.append(
                    {
                        "path": f"in-process ORT, {order}, spinning {'on' if spinning else 'off'}",
                        "triton": "-",
                        "mode": "batch",
                        "level": ref.batch_size,
                        "throughput": ref.sentences_per_s,
                        "p50_ms": ref.p50_batch_ms,
                    }
                )
        logger.info("in-process reference done")
        for variant, repo in repos.items():
            rows += _serve_variant(
                repo, variant, sentences, args.concurrency, args.duration, perf, workdir
            )
    summary = _summary(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    machine = {"cpus": os.cpu_count(), "platform": platform.platform()}
    report = {"machine": machine, "duration_s": args.duration, "summary": summary, "rows": rows}
    (out / "serving.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    with (out / "serving.csv").open("w", encoding="utf-8", newline="") as handle:
        fields = ["path", "triton", "level", "throughput", "p50_ms", "p95_ms", "p99_ms"]
        writer = csv.DictWriter(handle, fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    markdown = _markdown(rows, summary)
    (out / "serving.md").write_text(markdown, encoding="utf-8")
    _plot(rows, out / "serving.png")
    print(markdown)
    print(f"results in {out}/serving.{{json,csv,md,png}}")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = subparsers.add_parser("bench", help="benchmarks, ratios measured side by side")
    actions = bench.add_subparsers(dest="bench_command", metavar="BENCH", required=True)
    serving = actions.add_parser(
        "serving", help="Embed through the gateway vs perf_analyzer vs in-process ORT"
    )
    serving.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    serving.add_argument("--duration", type=float, default=10.0, help="seconds per point")
    serving.add_argument("--perf-venv", default=str(ROOT / ".venv-perf"))
    serving.add_argument("--out", default=str(RESULTS))
    serving.set_defaults(handler=_serving)
    train_speed.register(actions)
    register_chaos(actions)
    register_fallback(actions)
    register_cascade(actions)
    register_perf(actions)
    register_generate(actions)
