"""The layout every model folder of a repository shares: version folder, configs, python models.

Both model builders (:mod:`trainer.repository.encoder` for classify/embed ensembles and
:mod:`trainer.repository.generate` for decoupled generation) write through these helpers; the
repository builder (:mod:`trainer.repository.builder`) only stages, dispatches and swaps.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trainer.repository import pbtxt
from trainer.repository.parity import ParityReport
from trainer.repository.quantize import QuantizationReport
from triton_models.runtime import contract

VERSION = "1"
RUNTIME_PACKAGE = "lmforge_runtime"


@dataclass
class ModelReport:
    name: str
    task: str
    target: str
    parity: ParityReport
    quantization: QuantizationReport | None = None
    engine_parity: ParityReport | None = None  # target tensorrt: the engine vs PyTorch
    problem_type: str = ""
    text_pairs: bool = False
    encoder_mb: float = 0.0
    seconds: float = 0.0
    labels: tuple[str, ...] = ()


@dataclass
class BuildReport:
    path: Path
    models: list[ModelReport] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "models": [asdict(m) for m in self.models]}


def _package_dir() -> Path:
    # triton_models/ (found through the contract module, which lives in triton_models/runtime)
    return Path(contract.__file__).resolve().parents[1]


def copy_python_model(kind: str, version_dir: Path) -> None:
    """Copy ``triton_models/<kind>/model.py`` plus the runtime helpers into ``version_dir``."""
    source = _package_dir()
    version_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source / kind / "model.py", version_dir / "model.py")
    runtime = version_dir / RUNTIME_PACKAGE
    runtime.mkdir(exist_ok=True)
    for module in sorted((source / "runtime").glob("*.py")):
        shutil.copy2(module, runtime / module.name)


def write_config(model_dir: Path, config: pbtxt.ConfigDict) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.pbtxt").write_text(pbtxt.render(config), encoding="utf-8")
