"""From a `lmforge train` export to answers over gRPC, in one run.

Builds a model repository from a classification export (``RUN_DIR/exports/<task>``) with the
repository builder, serves it with the bundled tritonserver behind a gateway process, and
classifies a labelled TSV through the gateway. Prints the served accuracy next to the one the
trainer measured in-process (``metrics.json`` of the export), so a drift anywhere along the
pipeline shows as a difference.

    python -m benchmarks.train_to_serve runs/bench/sst2_minilm/exports/sst2 \
        --dev datasets/sst2/dev.tsv --text-column sentence --label-column label
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]

from lmforge_client.client import LmforgeClient  # noqa: E402

from gateway.processes import gateway_config, start_gateway  # noqa: E402
from trainer.datasets import read_column  # noqa: E402
from triton_host.launcher import TritonServer  # noqa: E402


def read_rows(path: Path, text_column: str, label_column: str) -> list[tuple[str, str]]:
    texts, labels = read_column(path, text_column), read_column(path, label_column)
    return list(zip(texts, labels, strict=True))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export", type=Path, help="a classification export folder")
    parser.add_argument("--dev", type=Path, required=True, help="labelled TSV")
    parser.add_argument("--text-column", default="sentence")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--name", default="trained")
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()

    export = args.export.resolve()
    config = json.loads((export / "config.json").read_text(encoding="utf-8"))
    labels = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
    rows = read_rows(args.dev, args.text_column, args.label_column)
    # gold labels may be indices ("0"/"1") or names
    gold = [labels[int(y)] if y.isdigit() else y for _, y in rows]
    trained = json.loads((export / "metrics.json").read_text(encoding="utf-8"))

    with tempfile.TemporaryDirectory(prefix="lmforge-t2s-") as tmp:
        work = Path(tmp)
        spec = {
            "models": [
                {
                    "name": args.name,
                    "task": "classify",
                    "checkpoint": str(export),
                    "target": "cpu",
                    "max_length": 128,
                    "parity": {
                        "dataset": {"path": str(args.dev.resolve()), "column": args.text_column}
                    },
                }
            ]
        }
        (work / "spec.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "lmforge", "repo", "build", str(work / "spec.yaml"),
             "--out", str(work / "repository")],
            check=True,
        )  # fmt: skip
        build_s = time.perf_counter() - started
        models = [{"name": args.name, "task": "classify", "triton_model": args.name}]
        with (
            TritonServer(work / "repository") as triton,
            start_gateway(
                work / "gateway",
                gateway_config(triton.grpc_url, models),
                log_level="WARNING",
                wait_serving=True,
            ) as gateway,
            LmforgeClient(gateway.target, timeout=60) as client,
        ):
            started = time.perf_counter()
            predicted: list[str] = []
            for i in range(0, len(rows), args.batch):
                reply = client.classify(
                    args.name, [t for t, _ in rows[i : i + args.batch]], top_k=1
                )
                predicted += [r.top.label for r in reply.results]
            serve_s = time.perf_counter() - started

    served = sum(p == g for p, g in zip(predicted, gold, strict=True)) / len(gold)
    in_process = trained.get("eval", trained)
    print(f"\nexport: {export}")
    print(f"repository build (export + parity + write): {build_s:.1f} s")
    print(f"served accuracy through the gateway: {served:.4f} on {len(gold)} rows "
          f"({len(gold) / serve_s:.0f} rows/s, batches of {args.batch})")  # fmt: skip
    print(f"trainer's own metrics.json: {json.dumps(in_process)[:300]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
