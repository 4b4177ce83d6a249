"""Teacher PyTorch FP32 vs the compressed student, measured side by side in one run.

    python -m benchmarks.compression_speed                    # the latest pipeline_sst2 run
    python -m benchmarks.compression_speed --teacher T --repository R --model sst2

The machine is shared and noisy, so the contenders take turns: every round runs each of them
once over the same sentences (SST-2 dev, sorted by length, batches of 32; and batch 1), and the
ratio is taken per round, each round's contenders having seen the same load. Reported: best
and median sentences/s per contender, the median of the per-round ratios and their range.

Contenders: the teacher in PyTorch FP32 eager (``AutoModelForSequenceClassification``, the
tokenizer's own padding) and every ``*_encoder`` ONNX graph of the repository in ONNX Runtime
(the served graph, tokenized as served: exact length; a row-wise encoder, dynamic INT8, runs
each row of a batch alone as it is served).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import RESULTS

REPO_ROOT = Path(__file__).resolve().parents[1]

Runner = Callable[[list[list[str]]], None]


def _latest(pattern: str) -> Path | None:
    found = sorted(
        (REPO_ROOT / "runs/pipeline_sst2").glob(pattern), key=lambda p: p.stat().st_mtime
    )
    return found[-1] if found else None


def torch_runner(checkpoint: Path, max_length: int) -> Runner:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))
    model = AutoModelForSequenceClassification.from_pretrained(str(checkpoint)).eval()

    def run(batches: list[list[str]]) -> None:
        with torch.no_grad():
            for batch in batches:
                tokens = tokenizer(
                    batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
                )
                model(**tokens)

    return run


def onnx_runner(repository: Path, name: str, max_length: int) -> Runner:
    import onnxruntime as ort

    from trainer.repository.reference import served_feeds, served_row_wise
    from triton_models.runtime import contract
    from triton_models.runtime.text import TextEncoder

    session = ort.InferenceSession(
        str(repository / f"{name}_encoder" / "1" / "model.onnx"),
        providers=["CPUExecutionProvider"],
    )
    names = {i.name for i in session.get_inputs()}
    encoder = TextEncoder.from_file(
        repository / f"{name}_tokenize" / "1" / "tokenizer.json", max_length, contract.EXACT_LENGTH
    )

    row_wise = served_row_wise(repository, name)  # run as the served encoder runs it

    def run(batches: list[list[str]]) -> None:
        for chunk in batches:
            for feeds in served_feeds(encoder, chunk, names, row_wise):
                session.run(None, feeds)

    return run


def rate(run: Runner, batches: list[list[str]], count: int) -> float:
    started = time.perf_counter()
    run(batches)
    return count / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", type=Path, help="teacher HF folder (default: latest run's)")
    parser.add_argument("--repository", type=Path, help="built repository (default: latest run's)")
    parser.add_argument("--model", action="append", help="repository models (default: all)")
    parser.add_argument("--data", type=Path, default=REPO_ROOT / "datasets/sst2/dev.tsv")
    parser.add_argument("--rows", type=int, default=872)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS / "compression_speed")
    args = parser.parse_args()

    from trainer.datasets import read_column

    teacher = args.teacher
    if teacher is None:
        stage = _latest("teacher-*")
        teacher = stage / "run" / "exports" / "sst2" if stage else None
    repository = args.repository
    if repository is None:
        stage = _latest("repository-*")
        repository = stage / "repository" if stage else None
    if teacher is None or repository is None:
        parser.error("no pipeline run found: pass --teacher and --repository")
    models = args.model or sorted(
        p.name.removesuffix("_encoder") for p in repository.glob("*_encoder")
    )
    sentences = sorted(read_column(args.data, "sentence", args.rows), key=len)
    by32 = [sentences[i : i + 32] for i in range(0, len(sentences), 32)]
    by1 = [[s] for s in sentences]

    contenders: dict[str, tuple[Runner, list[list[str]]]] = {
        "teacher PyTorch FP32 bs32": (torch_runner(teacher, args.max_length), by32),
    }
    for name in models:
        runner = onnx_runner(repository, name, args.max_length)
        contenders[f"{name} ONNX Runtime bs32"] = (runner, by32)
        contenders[f"{name} ONNX Runtime bs1"] = (runner, by1)
    for run, batches in contenders.values():  # warm-up
        run(batches[:8])

    rates: dict[str, list[float]] = {label: [] for label in contenders}
    for round_ in range(args.rounds):
        for label, (run, batches) in contenders.items():
            rates[label].append(rate(run, batches, sum(map(len, batches))))
        print(f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:.0f}/s" for k, v in rates.items()))

    base = "teacher PyTorch FP32 bs32"
    rows: list[dict[str, Any]] = []
    for label, values in rates.items():
        ratios = [v / b for v, b in zip(values, rates[base], strict=True)]
        rows.append(
            {
                "contender": label,
                "best_per_s": round(max(values), 1),
                "median_per_s": round(statistics.median(values), 1),
                "ratio_median": round(statistics.median(ratios), 2),
                "ratio_min": round(min(ratios), 2),
                "ratio_max": round(max(ratios), 2),
            }
        )
    results = {
        "teacher": str(
            teacher.relative_to(REPO_ROOT) if teacher.is_relative_to(REPO_ROOT) else teacher
        ),
        "repository": str(
            repository.relative_to(REPO_ROOT)
            if repository.is_relative_to(REPO_ROOT)
            else repository
        ),
        "sentences": len(sentences),
        "rounds": args.rounds,
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
        "rows": rows,
    }
    lines = [
        f"# Compression speed: {len(sentences)} SST-2 dev sentences, sorted by length, "
        f"{args.rounds} interleaved rounds",
        "",
        f"{results['machine']}; {results['date']}; teacher `{results['teacher']}`, "
        f"repository `{results['repository']}`",
        "",
        "| contender | best /s | median /s | vs teacher PyTorch FP32 bs32 (median of rounds) "
        "| range |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['contender']} | {r['best_per_s']} | {r['median_per_s']} | "
            f"{r['ratio_median']}x | {r['ratio_min']}-{r['ratio_max']}x |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
