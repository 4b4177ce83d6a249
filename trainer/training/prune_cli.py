"""``lmforge prune BUNDLE --task NAME --data DEV.tsv --out DIR``: structured pruning.

    lmforge prune runs/sst2/best --task sst2 --data datasets/sst2/dev.tsv \\
        --keep-layers 4 --intermediate-size 768 --out runs/sst2_pruned

Importance is measured on ``--rows`` labelled rows of ``--data``; the output is a trainer bundle
that ``lmforge train`` continues from (``model.pretrained``: its heads come along) or that a
distillation run uses as its student's starting point.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from trainer.errors import TrainerError

logger = logging.getLogger(__name__)


def _batches(bundle: Path, task: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    import torch
    from transformers import AutoTokenizer

    from trainer.datasets import read_column
    from trainer.training.export import TASKS_FILE

    specs = {t["name"]: t for t in json.loads((bundle / TASKS_FILE).read_text())["tasks"]}
    names = specs.get(task, {}).get("label_names") or []
    texts = read_column(Path(args.data), args.text_column, args.rows)
    labels = read_column(Path(args.data), args.label_column, args.rows)
    targets = [names.index(y) if y in names else int(y) for y in labels]
    tokenizer = AutoTokenizer.from_pretrained(str(bundle))
    batches = []
    for start in range(0, len(texts), args.batch_size):
        encoded = tokenizer(
            texts[start : start + args.batch_size],
            padding=True,
            truncation=True,
            max_length=args.max_length,
            return_tensors="pt",
        )
        batch = {
            k: v
            for k, v in encoded.items()
            if k in ("input_ids", "attention_mask", "token_type_ids")
        }
        batch["labels"] = torch.tensor(targets[start : start + args.batch_size])
        batches.append(batch)
    return batches


def _prune(args: argparse.Namespace) -> int:
    from trainer.training.prune import prune_bundle

    bundle = Path(args.bundle)
    try:
        report = prune_bundle(
            bundle,
            args.task,
            _batches(bundle, args.task, args),
            Path(args.out),
            keep_layers=args.keep_layers,
            intermediate_size=args.intermediate_size,
        )
    except TrainerError as exc:
        logger.error("%s", exc)
        return 1
    print(json.dumps(report.as_dict(), indent=2))
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "prune",
        help="structured pruning of a trained bundle (layers, feed-forward neurons)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("bundle", help="a trainer bundle (a run's model/ or best/)")
    parser.add_argument("--task", required=True)
    parser.add_argument("--data", required=True, help="labelled TSV/CSV/JSONL")
    parser.add_argument("--text-column", default="sentence")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--keep-layers", type=int, default=None)
    parser.add_argument("--intermediate-size", type=int, default=None)
    parser.add_argument("--out", required=True)
    parser.set_defaults(handler=_prune)
