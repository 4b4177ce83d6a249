"""Task ``generate``: an HF causal-LM folder → one decoupled python-backend model ``<name>``.

Written per model::

    <name>/config.pbtxt        decoupled, max_batch_size 0, limits as lmforge_* parameters
    <name>/1/model.py          triton_models/generate/model.py
    <name>/1/lmforge_runtime/  the runtime helpers (decode loop, sampling, detokenizer, ...)
    <name>/1/hf/               the checkpoint's files: weights, config, tokenizer

Before anything is written the checkpoint is loaded with the same loader the server uses and
checked: the served decode loop (every check prompt in flight together, joining at different
steps) must produce the very tokens transformers' own greedy ``generate`` produces for each
prompt alone, and a left-padded batched prefill must give the logits of each prompt alone
(``generation.logits_atol``). Either miss raises :class:`ExportParityError`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from trainer.errors import ExportParityError, SpecError
from trainer.repository import pbtxt
from trainer.repository.layout import VERSION, ModelReport, copy_python_model, write_config
from trainer.repository.parity import ParityReport
from trainer.repository.spec import ModelSpec
from triton_models.runtime import contract

logger = logging.getLogger(__name__)

_OPTIONAL_INPUTS: tuple[tuple[str, str, list[int]], ...] = (
    (contract.INPUT_MAX_NEW_TOKENS, "TYPE_INT32", [1]),
    (contract.INPUT_TEMPERATURE, "TYPE_FP32", [1]),
    (contract.INPUT_TOP_P, "TYPE_FP32", [1]),
    (contract.INPUT_TOP_K, "TYPE_INT32", [1]),
    (contract.INPUT_REPETITION_PENALTY, "TYPE_FP32", [1]),
    (contract.INPUT_SEED, "TYPE_UINT64", [1]),
    (contract.INPUT_STOP, "TYPE_STRING", [-1]),
    (contract.INPUT_USE_CHAT_TEMPLATE, "TYPE_BOOL", [1]),
    (contract.INPUT_TRUNCATE, "TYPE_BOOL", [1]),
)
_OUTPUTS: tuple[tuple[str, str], ...] = (
    (contract.OUTPUT_TEXT, "TYPE_STRING"),
    (contract.OUTPUT_FINISH_REASON, "TYPE_STRING"),
    (contract.OUTPUT_STOP_SEQUENCE, "TYPE_STRING"),
    (contract.OUTPUT_INPUT_TOKENS, "TYPE_INT32"),
    (contract.OUTPUT_OUTPUT_TOKENS, "TYPE_INT32"),
)


def generate_config(spec: ModelSpec, chat_template: bool) -> pbtxt.ConfigDict:
    """The ``config.pbtxt`` of the decoupled generate model, as a plain dict."""
    g = spec.generation
    inputs: list[dict[str, Any]] = [
        {"name": contract.INPUT_PROMPT, "data_type": "TYPE_STRING", "dims": [1]}
    ]
    inputs += [
        {"name": name, "data_type": dtype, "dims": dims, "optional": True}
        for name, dtype, dims in _OPTIONAL_INPUTS
    ]
    parameters = {
        contract.PARAM_TASK: contract.TASK_GENERATE,
        contract.PARAM_MAX_LENGTH: str(spec.max_length),
        contract.PARAM_MAX_NEW_TOKENS: str(g.max_new_tokens),
        contract.PARAM_DEFAULT_MAX_NEW_TOKENS: str(g.default_new_tokens),
        contract.PARAM_MAX_SEQUENCES: str(g.max_sequences),
        contract.PARAM_MAX_KV_TOKENS: str(g.max_kv_tokens),
        contract.PARAM_CHAT_TEMPLATE: str(chat_template).lower(),
        contract.PARAM_CPU_THREADS: str(g.cpu_threads),
        contract.PARAM_MODEL_DIR: contract.GENERATE_MODEL_DIR,
    }
    return {
        "name": spec.name,
        "backend": "python",
        "max_batch_size": 0,
        "model_transaction_policy": {"decoupled": True},
        "input": inputs,
        "output": [{"name": n, "data_type": t, "dims": [1]} for n, t in _OUTPUTS],
        "instance_group": [{"kind": "KIND_CPU", "count": 1}],
        "parameters": {key: {"string_value": value} for key, value in parameters.items()},
    }


def check_checkpoint(spec: ModelSpec) -> None:
    """The folder is a causal LM with a fast tokenizer, long enough for the spec's limits."""
    folder = spec.checkpoint
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise SpecError(f"model {spec.name!r}: {folder} is not a HF checkpoint (no config.json)")
    if not (folder / contract.TOKENIZER_FILE).is_file():
        raise SpecError(f"model {spec.name!r}: {folder} has no tokenizer.json (fast tokenizer)")
    config = json.loads(config_file.read_text(encoding="utf-8"))
    positions = config.get("max_position_embeddings") or config.get("n_positions")
    longest = spec.max_length + spec.generation.max_new_tokens
    if positions is not None and longest > int(positions):
        raise SpecError(
            f"model {spec.name!r}: max_length {spec.max_length} + generation.max_new_tokens "
            f"{spec.generation.max_new_tokens} = {longest} exceeds the checkpoint's "
            f"{positions} positions"
        )


def check_generation(spec: ModelSpec) -> tuple[ParityReport, bool]:
    """Run the served decode loop against transformers on ``generation.check_prompts``;
    returns the report and whether the tokenizer has a chat template."""
    import torch

    from triton_models.runtime.batch_decoder import BatchDecoder, Job, Limits
    from triton_models.runtime.causal_lm import load_causal_lm
    from triton_models.runtime.kv_batch import prefill_inputs
    from triton_models.runtime.sampling import SamplingParams
    from triton_models.runtime.sequence import Sequence, Step

    g = spec.generation
    lm = load_causal_lm(spec.checkpoint)
    prompts = [
        lm.encode(p, use_chat_template=False, max_length=spec.max_length, truncate=True)
        for p in g.check_prompts
    ]
    with torch.inference_mode():
        ids, mask, positions = prefill_inputs(prompts, lm.pad_id)
        batched = lm.model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        max_diff = 0.0
        references = []
        for row, prompt in enumerate(prompts):
            alone = torch.tensor([prompt])
            logits = lm.model(input_ids=alone).logits[0, -1]
            max_diff = max(max_diff, float((batched[row, -1] - logits).abs().max()))
            out = lm.model.generate(
                alone,
                attention_mask=torch.ones_like(alone),
                max_new_tokens=g.check_tokens,
                do_sample=False,
                pad_token_id=lm.pad_id,
                eos_token_id=sorted(lm.eos_ids) or None,
            )
            references.append(out[0, len(prompt) :].tolist())

    class _Collect:
        def send(self, step: Step) -> None: ...
        def cancelled(self) -> bool:
            return False

        def abandon(self) -> None: ...
        def fail(self, message: str) -> None:
            raise RuntimeError(message)

    total = sum(len(p) for p in prompts) + len(prompts) * g.check_tokens
    decoder = BatchDecoder(lm.model, Limits(len(prompts), total), pad_id=lm.pad_id)
    sequences = []
    for index, prompt in enumerate(prompts):  # each joins the running batch one step later
        sequence = Sequence(
            f"check-{index}",
            tuple(prompt),
            SamplingParams(max_new_tokens=g.check_tokens),
            lm.decode,
            lm.eos_ids,
        )
        sequences.append(sequence)
        decoder.submit(Job(sequence, _Collect()))
        decoder.run_once()
    decoder.run_until_idle()
    agreement = sum(s.generated == r for s, r in zip(sequences, references, strict=True)) / len(
        prompts
    )
    report = ParityReport(
        rows=len(prompts),
        max_abs_diff=max_diff,
        min_cosine=None,
        mean_cosine=None,
        argmax_agreement=agreement,
    )
    logger.info(
        "%s: batched prefill max |diff| %.2e, in-flight decode = generate() on %.0f%% of %d",
        spec.name,
        max_diff,
        100 * agreement,
        len(prompts),
    )
    if max_diff > g.logits_atol:
        raise ExportParityError(
            max_diff, g.logits_atol, what=f"{spec.name}: batched prefill vs each prompt alone"
        )
    if agreement < g.min_token_agreement:
        raise ExportParityError(
            1.0 - agreement,
            1.0 - g.min_token_agreement,
            what=f"{spec.name}: in-flight greedy decoding vs transformers generate() "
            "(share of prompts whose tokens differ)",
        )
    return report, lm.has_chat_template


def copy_checkpoint(source: Path, dest: Path) -> float:
    """Put the checkpoint's files (not its subfolders) into ``dest``; hard links where the
    file system allows (the files are never written in place), else copies. Returns MB."""
    dest.mkdir(parents=True, exist_ok=True)
    size = 0
    for item in sorted(source.iterdir()):
        if not item.is_file():
            continue
        target = dest / item.name
        try:
            os.link(item, target)
        except OSError:
            shutil.copy2(item, target)
        size += item.stat().st_size
    return size / 1e6


def build_generate_model(spec: ModelSpec, root: Path) -> ModelReport:
    """Check ``spec.checkpoint`` and write the generate model ``<name>`` under ``root``."""
    started = time.perf_counter()
    check_checkpoint(spec)
    report, chat_template = check_generation(spec)
    config = generate_config(spec, chat_template)
    model_dir = root / spec.name
    version_dir = model_dir / VERSION
    copy_python_model("generate", version_dir)
    size = copy_checkpoint(spec.checkpoint, version_dir / contract.GENERATE_MODEL_DIR)
    write_config(model_dir, config)
    return ModelReport(
        name=spec.name,
        task=spec.task,
        target=spec.target,
        parity=report,
        encoder_mb=round(size, 2),
        seconds=round(time.perf_counter() - started, 2),
    )
