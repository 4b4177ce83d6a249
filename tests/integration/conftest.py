"""Shared fixtures of the integration tests: real models, real tritonserver, real gateway."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def demo_build(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The demo repository (minilm, sentiment, smollm2) and its build report, once per session.

    The trained sentiment checkpoint is cached under ``$LMFORGE_CACHE``; the export,
    parity checks and repository writing run every session. Tests only read the repository.
    ``smollm2`` runs on the builtin engine here: these tests are not about generation, and
    every Triton start would otherwise wait about a minute for vLLM (test_generate.py serves
    SmolLM2 on vLLM, as ``lmforge up`` does).
    """
    from trainer.repository.demo import build_demo_repository

    return build_demo_repository(
        tmp_path_factory.mktemp("demo") / "repository", generate_engine="builtin"
    )


@pytest.fixture(scope="session")
def demo_repository(demo_build: Any) -> Path:
    return Path(demo_build.path)
