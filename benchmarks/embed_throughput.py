"""Embed throughput: through the lmforge gateway vs perf_analyzer straight on the ensemble.

Both measure the same Triton server, the same ``minilm`` ensemble and the same SST-2 dev
sentences, one sentence per request, in one run, side by side:

* gateway: ``lmforge serve`` in its own process; an asyncio load generator with C workers
  (each keeps one Embed RPC in flight) for a fixed time after a warm-up;
* perf_analyzer (tritonclient 2.51, run from its own environment, see ``make perf-env``):
  ``--concurrency-range C`` on the ensemble over Triton's gRPC endpoint.

    python -m benchmarks.embed_throughput --perf-venv .venv-perf [--concurrency 1 16]

Prints a table and writes ``benchmarks/results/embed_throughput.json``. On a 2-core machine
the load generator, the gateway and Triton share the cores: read the ratios, not the
absolute numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import RESULTS

REPO_ROOT = Path(__file__).resolve().parents[1]

from lmforge_client.client import AsyncLmforgeClient  # noqa: E402

from gateway.processes import gateway_config, start_gateway  # noqa: E402
from lmforge_core.stats import percentile  # noqa: E402
from trainer.datasets import dataset_file, read_column  # noqa: E402
from triton_host.launcher import TritonServer  # noqa: E402


def sst2_sentences(limit: int) -> list[str]:
    return read_column(dataset_file("sst2", "dev"), "sentence", limit)


async def gateway_load(
    target: str, sentences: list[str], concurrency: int, warmup: float, duration: float
) -> dict[str, float | None]:
    latencies: list[float] = []
    done = 0
    async with AsyncLmforgeClient(target, timeout=60) as client:
        start = time.monotonic()
        measure_from = start + warmup
        stop_at = measure_from + duration

        async def worker(offset: int) -> None:
            nonlocal done
            i = offset
            while True:
                t0 = time.monotonic()
                if t0 >= stop_at:
                    return
                await client.embed("minilm", [sentences[i % len(sentences)]])
                t1 = time.monotonic()
                if t0 >= measure_from:
                    latencies.append(t1 - t0)
                    done += 1
                i += concurrency

        await asyncio.gather(*(worker(k) for k in range(concurrency)))
    latencies_ms = [1000 * s for s in latencies]
    return {
        "sentences_per_s": done / duration,
        "p50_ms": percentile(latencies_ms, 50),
        "p99_ms": percentile(latencies_ms, 99),
    }


def perf_analyzer(
    perf_venv: Path, grpc_url: str, sentences: list[str], concurrency: int, workdir: Path
) -> dict[str, float]:
    binary = perf_venv / "bin" / "perf_analyzer"
    if not binary.exists():
        raise SystemExit(f"{binary} not found: run `make perf-env` first")
    data = {
        "data": [
            {
                "TEXT": {"content": [s], "shape": [1]},
                "TRUNCATE": {"content": [True], "shape": [1]},
            }
            for s in sentences
        ]
    }
    data_file = workdir / "perf_input.json"
    data_file.write_text(json.dumps(data), encoding="utf-8")
    out_csv = workdir / f"perf_c{concurrency}.csv"
    site = next((perf_venv / "lib").glob("python3*/site-packages"))
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (str(site / "nvidia" / "cuda_runtime" / "lib"), env.get("LD_LIBRARY_PATH")) if p
    )
    command = [
        str(binary),
        "-m", "minilm",
        "-i", "grpc",
        "-u", grpc_url,
        "-b", "1",
        "--input-data", str(data_file),
        "--concurrency-range", str(concurrency),
        "--measurement-interval", "5000",
        "--stability-percentage", "25",
        "--max-trials", "6",
        "-f", str(out_csv),
    ]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"perf_analyzer failed:\n{result.stdout}\n{result.stderr}")
    with out_csv.open(encoding="utf-8") as handle:
        row = next(csv.DictReader(handle))
    latency_us = {k: float(v) for k, v in row.items() if k in ("p50 latency", "p99 latency")}
    return {
        "sentences_per_s": float(row["Inferences/Second"]),
        "p50_ms": latency_us.get("p50 latency", float("nan")) / 1000,
        "p99_ms": latency_us.get("p99 latency", float("nan")) / 1000,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--perf-venv", type=Path, default=REPO_ROOT / ".venv-perf")
    parser.add_argument("--repository", type=Path, default=None, help="reuse a built repository")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--duration", type=float, default=10.0, help="gateway seconds measured")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--sentences", type=int, default=256)
    parser.add_argument("--out", type=Path, default=RESULTS / "embed_throughput.json")
    args = parser.parse_args()

    sentences = sst2_sentences(args.sentences)
    with tempfile.TemporaryDirectory(prefix="lmforge-bench-") as tmp:
        workdir = Path(tmp)
        repository = args.repository
        if repository is None:
            repository = workdir / "repository"
            subprocess.run(
                [sys.executable, "-m", "lmforge", "repo", "demo", "--out", str(repository)],
                check=True,
            )
        models = [{"name": "minilm", "task": "embed", "triton_model": "minilm"}]
        with (
            TritonServer(repository) as triton,
            start_gateway(
                workdir / "gateway",
                gateway_config(triton.grpc_url, models),
                log_level="WARNING",
                wait_serving=True,
            ) as gateway,
        ):
            target = gateway.target
            rows = []
            for concurrency in args.concurrency:
                via_gateway = asyncio.run(
                    gateway_load(target, sentences, concurrency, args.warmup, args.duration)
                )
                direct = perf_analyzer(
                    args.perf_venv, triton.grpc_url, sentences, concurrency, workdir
                )
                rows.append(
                    {
                        "concurrency": concurrency,
                        "gateway": via_gateway,
                        "perf_analyzer": direct,
                    }
                )
                print(f"concurrency {concurrency}: done", flush=True)

    print("\nEmbed throughput, minilm ensemble (all-MiniLM-L6-v2, cpu target), 1 sentence/request")
    print(f"{'conc':>4}  {'gateway s/s':>12} {'p50 ms':>8} {'p99 ms':>8}   "
          f"{'perf_analyzer s/s':>17} {'p50 ms':>8} {'p99 ms':>8}   {'gw/pa':>6}")  # fmt: skip
    for row in rows:
        g, p = row["gateway"], row["perf_analyzer"]
        ratio = g["sentences_per_s"] / p["sentences_per_s"]
        row["ratio_gateway_to_perf_analyzer"] = ratio
        print(
            f"{row['concurrency']:>4}  {g['sentences_per_s']:>12.1f} {g['p50_ms']:>8.1f} "
            f"{g['p99_ms']:>8.1f}   {p['sentences_per_s']:>17.1f} {p['p50_ms']:>8.1f} "
            f"{p['p99_ms']:>8.1f}   {ratio:>6.2f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "duration_s": args.duration,
        "rows": rows,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
