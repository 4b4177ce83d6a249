"""The one place the trainer reads environment variables (pydantic-settings).

``LMFORGE_CACHE``        cache root (default ``~/.cache/lmforge``): demo checkpoints, pipeline stages
``LMFORGE_DATASETS``     datasets root (default: the ``datasets/`` folder of this checkout)
``LMFORGE_CPU_THREADS``  intra-op threads per training rank (default: cores ÷ local ranks)
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

#: the checkout's root: ``trainer/`` lives directly below it
PROJECT_ROOT = Path(__file__).resolve().parents[1]


class TrainerSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LMFORGE_", extra="ignore", frozen=True, env_ignore_empty=True
    )

    cache: Path = Field(default_factory=lambda: Path.home() / ".cache" / "lmforge")
    datasets: Path = PROJECT_ROOT / "datasets"
    cpu_threads: int | None = Field(default=None, ge=1)


def settings() -> TrainerSettings:
    """The current environment's settings (read on every call: cheap, and tests may patch)."""
    return TrainerSettings()
