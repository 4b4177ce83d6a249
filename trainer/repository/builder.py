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
import hashlib
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
from trainer.repository import pbtxt
from trainer.repository.parity import ParityReport
from trainer.repository.quantize import QuantizationReport
from trainer.repository.spec import ModelSpec, RepositorySpec
from triton_models.runtime import contract

logger = logging.getLogger(__name__)

MANIFEST = "lmforge_repository.json"
VERSION = "1"
RUNTIME_PACKAGE = "lmforge_runtime"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


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


# -- files ------------------------------------------------------------------------------------
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
    """Export, check and write the three folders of one logical model under ``root``."""
    if spec.task == contract.TASK_GENERATE:  # one decoupled model: trainer/repository/generate.py
        from trainer.repository.generate import build_generate_model

        return build_generate_model(spec, root)
    from trainer.repository.export import export_onnx, load_for_export
    from trainer.repository.parity import check_export_parity
    from trainer.repository.perf_inputs import write_perf_inputs
    from trainer.repository.quantize import fuse_or_keep, quantize_with_gate

    started = time.perf_counter()
    if spec.target == "tensorrt":
        from trainer.repository.tensorrt import ensure_available

        ensure_available()
    loaded = load_for_export(spec)
    signature = loaded.signature
    encoder_dir = root / pbtxt.encoder_name(spec)
    version_dir = encoder_dir / VERSION
    version_dir.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="lmforge-export-") as scratch:
        fp32 = export_onnx(loaded, Path(scratch) / "model.onnx")
        fused = spec.optimize and spec.target in ("cpu", "onnxruntime")
        if fused:
            fp32 = fuse_or_keep(fp32, Path(scratch) / "model.fused.onnx", loaded.config)
        parity = check_export_parity(
            spec, loaded.module, signature.inputs, loaded.tokenizer_file, fp32, signature.text_pairs
        )
        final = version_dir / "model.onnx"
        quantization = None
        if spec.quantize.method != "none":
            quantization = quantize_with_gate(
                spec,
                fp32,
                final,
                loaded.tokenizer_file,
                signature.inputs,
                signature.text_pairs,
                loaded.labels,
            )
        else:
            shutil.move(fp32, final)
    engine_parity = None
    if spec.target == "tensorrt":
        from trainer.repository.tensorrt import build_engine, check_engine_parity

        profiles = pbtxt.tensorrt_profiles(spec)
        plan = build_engine(
            final,
            version_dir / "model.plan",
            signature.inputs,
            profiles,
            spec.max_batch_size,
            fp16=spec.tensorrt.fp16,
            workspace_gb=spec.tensorrt.workspace_gb,
        )
        engine_parity = check_engine_parity(
            spec,
            loaded.module,
            signature.inputs,
            loaded.tokenizer_file,
            plan,
            profiles,
            signature.text_pairs,
        )
        final.unlink()
    elif spec.target == "cpu":
        copy_python_model("onnx_encoder", version_dir)

    tokenize_dir = root / pbtxt.tokenize_name(spec)
    copy_python_model("tokenize", tokenize_dir / VERSION)
    checkpoint = spec.checkpoint
    for name in _TOKENIZER_FILES:
        if (checkpoint / name).exists():
            shutil.copy2(checkpoint / name, tokenize_dir / VERSION / name)

    configs = {
        pbtxt.tokenize_name(spec): pbtxt.tokenize_config(spec, signature),
        pbtxt.encoder_name(spec): pbtxt.encoder_config(spec, signature),
    }
    tokenizer_file = tokenize_dir / VERSION / contract.TOKENIZER_FILE
    ensemble = pbtxt.ensemble_config(
        spec, signature, loaded.labels, hashlib.sha256(tokenizer_file.read_bytes()).hexdigest()
    )
    pbtxt.check_ensemble_wiring(ensemble, configs)
    for name, config in configs.items():
        write_config(root / name, config)
    ensemble_dir = root / spec.name
    write_config(ensemble_dir, ensemble)
    (ensemble_dir / VERSION).mkdir()
    if spec.task == contract.TASK_CLASSIFY:
        (ensemble_dir / contract.LABELS_FILE).write_text(
            "".join(f"{label}\n" for label in loaded.labels), encoding="utf-8"
        )
    write_perf_inputs(spec, root, signature, tokenizer_file)
    size = sum(p.stat().st_size for p in version_dir.iterdir() if p.is_file()) / 1e6
    return ModelReport(
        name=spec.name,
        task=spec.task,
        target=spec.target,
        parity=parity,
        quantization=quantization,
        engine_parity=engine_parity,
        problem_type=signature.problem_type if spec.task == contract.TASK_CLASSIFY else "",
        text_pairs=signature.text_pairs,
        encoder_mb=round(size, 2),
        seconds=round(time.perf_counter() - started, 2),
        labels=loaded.labels,
    )


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
