"""Servable folders: the multi-task bundle and one standard HF folder per task head.

Bundle (``RUN_DIR/model``): the shared encoder as an ``AutoModel`` folder, ``heads.safetensors``,
``lmforge_tasks.json`` (task types and label names), tokenizer files, ``metrics.json`` and the
run config. ``export_task`` turns bundle + head into ``AutoModelForSequenceClassification``
(classification, regression), ``AutoModelForMaskedLM``, ``AutoModelForCausalLM`` or a plain
``AutoModel`` (pair embedding; mean pooling is applied by the repository builder) and checks that
the exported model reproduces the multi-task model's outputs.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
)

from trainer.errors import CheckpointError, ExportParityError
from trainer.training.config import PAIR_INPUT_TASKS
from trainer.training.losses import mean_pool
from trainer.training.modeling import HeadSpec, MultiTaskModel

logger = logging.getLogger(__name__)
TASKS_FILE = "lmforge_tasks.json"
HEADS_FILE = "heads.safetensors"
PARITY_TEXTS = ("a short test sentence .", "what is the capital of france ?", "it was great")


def save_bundle(
    out_dir: Path,
    model: MultiTaskModel,
    state: dict[str, torch.Tensor],
    tokenizer: Any,
    extra_files: dict[str, str],
) -> None:
    """Write the bundle from a full (gathered, fp32) state dict of ``model``."""
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    encoder_state = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
    model.encoder.save_pretrained(str(tmp), state_dict=encoder_state)
    heads = {k: v.contiguous() for k, v in state.items() if k.startswith("heads.")}
    save_file(heads if heads else {"_empty": torch.zeros(1)}, str(tmp / HEADS_FILE))
    specs = [spec.to_json() for spec in model.specs.values()]
    (tmp / TASKS_FILE).write_text(json.dumps({"tasks": specs}, indent=2), encoding="utf-8")
    tokenizer.save_pretrained(str(tmp))
    for name, text in extra_files.items():
        (tmp / name).write_text(text, encoding="utf-8")
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)


def load_bundle(bundle_dir: Path, **encoder_kwargs: Any) -> tuple[MultiTaskModel, Any]:
    if not (bundle_dir / TASKS_FILE).is_file():
        raise CheckpointError(f"{bundle_dir} is not a trained model folder (no {TASKS_FILE})")
    meta = json.loads((bundle_dir / TASKS_FILE).read_text(encoding="utf-8"))
    specs = [
        HeadSpec(
            name=t["name"],
            type=t["type"],
            label_names=t["label_names"],
            text_fields=t["text_fields"],
            contrastive_scale=t["contrastive_scale"],
        )
        for t in meta["tasks"]
    ]
    encoder = AutoModel.from_pretrained(str(bundle_dir), **encoder_kwargs)
    model = MultiTaskModel(encoder, specs)
    heads = {k: v for k, v in load_file(str(bundle_dir / HEADS_FILE)).items() if k != "_empty"}
    missing, unexpected = model.load_state_dict(heads, strict=False)
    missing_heads = [k for k in missing if k.startswith("heads.")]
    if missing_heads or unexpected:
        raise CheckpointError(
            f"{bundle_dir}: head weights do not match: missing {missing_heads}, "
            f"unexpected {unexpected}"
        )
    tokenizer = AutoTokenizer.from_pretrained(str(bundle_dir))
    return model.eval(), tokenizer


def _task_model(model: MultiTaskModel, spec: HeadSpec) -> PreTrainedModel:
    config = copy.deepcopy(model.encoder.config)
    head_state = {
        k[len(f"heads.{spec.name}.") :]: v
        for k, v in model.state_dict().items()
        if k.startswith(f"heads.{spec.name}.")
    }
    if spec.type in ("pair_embedding", "embedding_distillation"):
        return model.encoder
    if spec.type in ("classification", "regression"):
        names = spec.label_names or [] if spec.type == "classification" else ["score"]
        config.num_labels = len(names)
        config.id2label = dict(enumerate(names))
        config.label2id = {name: i for i, name in enumerate(names)}
        config.problem_type = (
            "single_label_classification" if spec.type == "classification" else "regression"
        )
        target = AutoModelForSequenceClassification.from_config(config)
        mapped = {f"classifier.{k[len('classifier.') :]}": v for k, v in head_state.items()}
    elif spec.type == "masked_lm":
        config.tie_word_embeddings = False
        target = AutoModelForMaskedLM.from_config(config)
        mapped = {f"cls.predictions.{k}": v for k, v in head_state.items()}
        mapped["cls.predictions.bias"] = head_state["decoder.bias"]
    else:
        config.tie_word_embeddings = False
        target = AutoModelForCausalLM.from_config(config)
        mapped = dict(head_state)
    prefix = target.base_model_prefix
    wanted = set(target.state_dict())
    for k, v in model.encoder.state_dict().items():
        key = f"{prefix}.{k}"
        if key in wanted or not k.startswith("pooler."):  # masked LM models have no pooler
            mapped[key] = v
    missing, unexpected = target.load_state_dict(mapped, strict=False)
    if unexpected or [k for k in missing if "position_ids" not in k]:
        raise CheckpointError(
            f"task {spec.name!r}: cannot map weights onto {type(target).__name__}: "
            f"missing {missing}, unexpected {unexpected}"
        )
    return target


@torch.no_grad()
def _parity(
    model: MultiTaskModel, target: PreTrainedModel, spec: HeadSpec, tokenizer: Any
) -> float:
    model.eval()
    target.eval()
    texts = list(PARITY_TEXTS)
    if len(spec.text_fields) == 2 and spec.type not in PAIR_INPUT_TASKS:
        enc = tokenizer(texts, texts[::-1], padding=True, return_tensors="pt")
    else:
        enc = tokenizer(texts, padding=True, return_tensors="pt")
    inputs = {
        k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")
    }
    if spec.type == "causal_lm":
        inputs.pop("token_type_ids", None)
    theirs_out = target(**inputs)
    if spec.type in PAIR_INPUT_TASKS:
        ours = mean_pool(model.encoder(**inputs).last_hidden_state, inputs["attention_mask"])
        theirs = mean_pool(theirs_out.last_hidden_state, inputs["attention_mask"])
    else:
        ours = model(task=spec.name, **inputs).output
        theirs = theirs_out.logits
        if spec.type == "regression":
            theirs = theirs.squeeze(-1)
    return float((ours.float() - theirs.float()).abs().max())


def export_task(
    model: MultiTaskModel,
    tokenizer: Any,
    task: str,
    out_dir: Path,
    atol: float = 1e-4,
    extra_files: dict[str, str] | None = None,
) -> Path:
    """Write one task head (with the encoder) as a standard HF folder; parity-checked."""
    if task not in model.specs:
        raise CheckpointError(f"no task {task!r} in this model; tasks are {sorted(model.specs)}")
    spec = model.specs[task]
    target = _task_model(model, spec)
    diff = _parity(model, target, spec, tokenizer)
    if diff > atol:
        raise ExportParityError(diff, atol, what=f"task {task!r} (HF export vs trained model)")
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    target.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    meta = {"tasks": [spec.to_json()], "parity_max_abs_diff": diff}
    (tmp / TASKS_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    for name, text in (extra_files or {}).items():
        (tmp / name).write_text(text, encoding="utf-8")
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    logger.info("exported task %s (%s) to %s (parity %.2g)", task, spec.type, out_dir, diff)
    return out_dir


def export_from_run(run_dir: Path, task: str, out_dir: Path, which: str = "model") -> Path:
    """``lmforge train export``: one task of a finished run (``model`` or ``best``) to a folder."""
    bundle = run_dir / which
    model, tokenizer = load_bundle(bundle)
    extras = {}
    for name in ("metrics.json", "run.yaml"):
        if (bundle / name).is_file():
            extras[name] = (bundle / name).read_text(encoding="utf-8")
    return export_task(model, tokenizer, task, out_dir, extra_files=extras)
