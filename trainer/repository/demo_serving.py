"""What serving a model repository needs without importing torch: the gateway routes of a
repository spec, and the repository's build run in a child process (``lmforge repo build`` or
``lmforge repo demo``, which import torch)."""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

from trainer.repository.spec import RepositorySpec, parse_spec

logger = logging.getLogger(__name__)


def routes_for_spec(spec: RepositorySpec) -> tuple[dict[str, Any], ...]:
    """The gateway routes serving the repository ``lmforge repo build`` makes of ``spec``: one
    per model, route name = model name, the spec's task, ``triton_model`` = the model name (the
    ensemble, or the generate model, the builder writes under that name)."""
    return tuple({"name": m.name, "task": m.task, "triton_model": m.name} for m in spec.models)


#: the demo repository's models and tasks (``trainer.repository.demo.demo_spec`` builds it;
#: a unit test keeps the two equal); checkpoints are placeholders, routes do not read them
DEMO_SPEC = parse_spec(
    {
        "models": [
            {"name": "minilm", "task": "embed", "checkpoint": "minilm"},
            {"name": "sentiment", "task": "classify", "checkpoint": "sentiment"},
            {"name": "smollm2", "task": "generate", "checkpoint": "smollm2", "max_length": 1024},
        ]
    },
    source="demo spec",
)

#: the gateway routes of the demo repository (one per model, named after it)
DEMO_MODELS = routes_for_spec(DEMO_SPEC)


def spec_repository_key(spec_path: Path) -> str:
    """A hash of the spec file's content: ``lmforge up --spec`` builds into
    ``$LMFORGE_CACHE/up-<key>/repository``."""
    return hashlib.sha256(Path(spec_path).read_bytes()).hexdigest()[:16]


def build_demo_repository(out: Path) -> None:
    """Run ``lmforge repo demo --out OUT`` in a child process (it imports torch)."""
    _run_build([sys.executable, "-m", "lmforge", "repo", "demo", "--out", str(out)])


def build_spec_repository(spec_path: Path, out: Path) -> None:
    """Run ``lmforge repo build SPEC --out OUT`` in a child process (it imports torch)."""
    _run_build(
        [sys.executable, "-m", "lmforge", "repo", "build", str(spec_path), "--out", str(out)]
    )


def _run_build(command: list[str]) -> None:
    logger.info("building the model repository: %s", " ".join(command))
    subprocess.run(command, check=True)
