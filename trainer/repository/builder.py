"""Write a Triton model repository from a :class:`RepositorySpec`, atomically.

Everything is written into a staging folder next to the destination; only when every model
has exported, passed its parity check and had its configs validated is the staging folder
swapped into place (``renameat2(RENAME_EXCHANGE)`` where the kernel has it). A failed build
leaves no partial folder behind and an existing repository untouched.

Per logical model ``<name>``::

    <name>/config.pbtxt  1/  labels.txt           ensemble (labels.txt: classify only)
          perf_analyzer_input.json  perf_analyzer.sh   ready-made load (real sentences)
    <name>_tokenize/config.pbtxt  1/{model.py, tokenizer.json, lmforge_runtime/}
    <name>_encoder/config.pbtxt   1/{model.onnx | model.plan, model.py, lmforge_runtime/}
          perf_analyzer_input.json                     the same sentences as token ids

Task ``generate`` writes one decoupled model ``<name>`` instead (see
:mod:`trainer.repository.generate`).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trainer.errors import RepositoryError
from trainer.repository.layout import ModelReport
from trainer.repository.spec import ModelSpec, RepositorySpec
from triton_models.runtime import contract

logger = logging.getLogger(__name__)

MANIFEST = "lmforge_repository.json"


@dataclass
class BuildReport:
    path: Path
    models: list[ModelReport] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "models": [asdict(m) for m in self.models]}


def _looks_like_repository(path: Path) -> bool:
    return (path / MANIFEST).is_file()


def check_destination(out: Path) -> None:
    """Refuse to replace a folder that is neither empty nor an lmforge repository."""
    if out.exists() and not out.is_dir():
        raise RepositoryError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not _looks_like_repository(out):
        raise RepositoryError(f"{out} is not empty and has no {MANIFEST}; refusing to replace it")


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux ``renameat2``); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return bool(result == 0)


def replace_directory(staging: Path, out: Path) -> None:
    """Move the complete ``staging`` folder to ``out``, replacing what was there."""
    if not out.exists():
        staging.rename(out)
        return
    if _exchange(staging, out):
        shutil.rmtree(staging)  # now holds the previous repository
        return
    backup = out.with_name(f".{out.name}.old-{os.getpid()}")
    out.rename(backup)
    try:
        staging.rename(out)
    except OSError:
        backup.rename(out)
        raise
    shutil.rmtree(backup, ignore_errors=True)


# -- one model --------------------------------------------------------------------------------
def build_model(spec: ModelSpec, root: Path) -> ModelReport:
    """Write one logical model under ``root`` with the builder of its task."""
    if spec.task == contract.TASK_GENERATE:  # one decoupled model
        from trainer.repository.generate import build_generate_model

        return build_generate_model(spec, root)
    from trainer.repository.encoder import build_encoder_model

    return build_encoder_model(spec, root)


# -- the repository ---------------------------------------------------------------------------
def build_repository(spec: RepositorySpec, out: Path) -> BuildReport:
    """Build every model of ``spec`` and move the finished repository to ``out``."""
    out = Path(out).resolve()
    check_destination(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    report = BuildReport(path=out)
    try:
        for model in spec.models:
            logger.info("building %s (%s, target %s)", model.name, model.task, model.target)
            report.models.append(build_model(model, staging))
        manifest = {
            "spec": spec.model_dump(mode="json"),
            "report": report.as_dict(),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        replace_directory(staging, out)
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(staging)
        raise
    logger.info("repository written to %s", out)
    return report
