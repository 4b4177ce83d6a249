"""Suite-wide rules: ``gpu`` tests run only where CUDA and TensorRT are both present."""

from __future__ import annotations

import importlib.util
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _gpu_missing() -> str | None:
    """Why ``gpu`` tests cannot run here, or None when they can."""
    if importlib.util.find_spec("tensorrt") is None:
        return "needs TensorRT (pip install 'lmforge[gpu]') and an NVIDIA GPU"
    import torch

    if not torch.cuda.is_available():
        return "needs an NVIDIA GPU with CUDA (torch.cuda.is_available() is False)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items:
        return
    reason = _gpu_missing()
    if reason is not None:
        for item in gpu_items:
            item.add_marker(pytest.mark.skip(reason=reason))
