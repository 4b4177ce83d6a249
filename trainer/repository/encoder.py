"""One classify/embed model: ONNX export with parity, optional quantization or TensorRT, and its
three folders (``<name>`` ensemble, ``<name>_tokenize``, ``<name>_encoder``).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import time
from pathlib import Path

from trainer.repository import pbtxt
from trainer.repository.layout import VERSION, ModelReport, copy_python_model, write_config
from trainer.repository.spec import ModelSpec
from triton_models.runtime import contract

logger = logging.getLogger(__name__)

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def build_encoder_model(spec: ModelSpec, root: Path) -> ModelReport:
    """Export, check and write the three folders of one logical model under ``root``."""
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
