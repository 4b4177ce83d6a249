"""What serving the demo repository needs without importing torch: its gateway routes, and its
build run in a child process (``lmforge repo demo``, which imports torch)."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

#: the gateway routes of the demo repository (one per model, named after it)
DEMO_MODELS = (
    {"name": "minilm", "task": "embed", "triton_model": "minilm"},
    {"name": "sentiment", "task": "classify", "triton_model": "sentiment"},
    {"name": "smollm2", "task": "generate", "triton_model": "smollm2"},
)


def build_demo_repository(out: Path) -> None:
    """Run ``lmforge repo demo --out OUT`` in a child process (it imports torch)."""
    command = [sys.executable, "-m", "lmforge", "repo", "demo", "--out", str(out)]
    logger.info("building the demo model repository: %s", " ".join(command))
    subprocess.run(command, check=True)
