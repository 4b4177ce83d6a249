"""HF checkpoint → ONNX graph with lmforge's post-processing inside.

``embed``: mean pooling over the attention mask, then L2 normalization → ``EMBEDDING``.
``classify``: ``AutoModelForSequenceClassification`` logits → softmax → ``PROBS``; a regression
head (``problem_type: regression``, or one output) keeps its raw value (a softmax over one
logit would be a constant 1.0). Multi-label heads are refused: they need a sigmoid per label,
which the contract does not carry.
The graph takes the tokenizer's tensors by their contract names, with dynamic batch and
sequence axes, exported with the TorchScript exporter (``dynamo=False``), opset 17.
"""

from __future__ import annotations

import inspect
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainer.errors import ExportError, SpecError
from trainer.repository.pbtxt import EncoderSignature, output_name
from trainer.repository.spec import ModelSpec
from trainer.training.export import TASKS_FILE
from triton_models.runtime import contract

logger = logging.getLogger(__name__)

OPSET = 17
_TOKEN_INPUTS = (contract.INPUT_IDS, contract.ATTENTION_MASK, contract.TOKEN_TYPE_IDS)


class MeanPoolNormalize(nn.Module):
    """Encoder → masked mean of the last hidden state → unit length."""

    def __init__(self, encoder: nn.Module, input_names: tuple[str, ...]) -> None:
        super().__init__()
        self.encoder = encoder
        self.input_names = input_names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        kwargs = dict(zip(self.input_names, inputs, strict=True))
        hidden = self.encoder(**kwargs).last_hidden_state
        mask = kwargs[contract.ATTENTION_MASK].unsqueeze(-1).to(hidden.dtype)
        summed = (hidden * mask).sum(dim=1)
        counts = mask.sum(dim=1).clamp(min=1e-9)
        return nn.functional.normalize(summed / counts, p=2.0, dim=1)


class SequenceScores(nn.Module):
    """Sequence classifier → softmax over its logits, or the raw value of a regression head."""

    def __init__(
        self, classifier: nn.Module, input_names: tuple[str, ...], regression: bool
    ) -> None:
        super().__init__()
        self.classifier = classifier
        self.input_names = input_names
        self.regression = regression

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        kwargs = dict(zip(self.input_names, inputs, strict=True))
        logits = self.classifier(**kwargs).logits
        return logits if self.regression else torch.softmax(logits, dim=-1)


@dataclass
class LoadedModel:
    """A checkpoint wrapped for export, with what the repository needs to know about it."""

    module: nn.Module
    signature: EncoderSignature
    labels: tuple[str, ...]  # classify only
    tokenizer_file: Path
    config: Any = None  # the checkpoint's transformers config (sizes for graph fusion)


def _accepted_inputs(model: nn.Module) -> tuple[str, ...]:
    params = inspect.signature(model.forward).parameters
    names = tuple(name for name in _TOKEN_INPUTS if name in params)
    if contract.INPUT_IDS not in names or contract.ATTENTION_MASK not in names:
        raise ExportError(f"{type(model).__name__} does not take input_ids and attention_mask")
    return names


def problem_type(spec: ModelSpec, config: Any) -> str:
    """``contract.PROBLEM_REGRESSION`` or ``PROBLEM_CLASSIFICATION`` for a classifier config."""
    declared = getattr(config, "problem_type", None)
    if declared == "multi_label_classification":
        raise SpecError(
            f"model {spec.name!r}: {spec.checkpoint} is a multi-label classifier; lmforge "
            "serves single-label classifiers (softmax) and regression heads only"
        )
    if declared == contract.PROBLEM_REGRESSION or int(config.num_labels) == 1:
        return contract.PROBLEM_REGRESSION
    return contract.PROBLEM_CLASSIFICATION


def checkpoint_text_pairs(spec: ModelSpec) -> bool:
    """Whether the checkpoint reads two texts per row: the spec's ``text_pairs``, else what
    the trainer recorded in ``lmforge_tasks.json`` (a task with two text fields)."""
    if spec.text_pairs is not None:
        return spec.text_pairs
    tasks_file = spec.checkpoint / TASKS_FILE
    if not tasks_file.is_file():
        return False
    from trainer.training.config import PAIR_INPUT_TASKS  # two texts, each encoded alone

    tasks = json.loads(tasks_file.read_text(encoding="utf-8")).get("tasks", [])
    return any(
        len(t.get("text_fields", [])) == 2 and t.get("type") not in PAIR_INPUT_TASKS for t in tasks
    )


def _labels(spec: ModelSpec, config: Any) -> tuple[str, ...]:
    num_labels = int(config.num_labels)
    if spec.labels is not None:
        if len(spec.labels) != num_labels:
            raise SpecError(
                f"model {spec.name!r}: spec lists {len(spec.labels)} labels but the "
                f"checkpoint has {num_labels}"
            )
        return spec.labels
    id2label = {int(k): str(v) for k, v in (config.id2label or {}).items()}
    labels = tuple(id2label.get(i, f"LABEL_{i}") for i in range(num_labels))
    if num_labels == 1 and labels == ("LABEL_0",):
        return ("score",)  # a regression head with HF's placeholder name
    return labels


def load_for_export(spec: ModelSpec) -> LoadedModel:
    """Load ``spec.checkpoint`` and wrap it with the task's post-processing (eval mode)."""
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

    checkpoint = spec.checkpoint
    tokenizer_file = checkpoint / "tokenizer.json"
    if not (checkpoint / "config.json").exists():
        raise SpecError(
            f"model {spec.name!r}: {checkpoint} is not a HF checkpoint (no config.json)"
        )
    if not tokenizer_file.exists():
        raise SpecError(f"model {spec.name!r}: {checkpoint} has no tokenizer.json (fast tokenizer)")
    config = AutoConfig.from_pretrained(checkpoint)
    positions = getattr(config, "max_position_embeddings", None)
    if positions is not None and spec.max_length > int(positions):
        raise SpecError(
            f"model {spec.name!r}: max_length {spec.max_length} exceeds the checkpoint's "
            f"max_position_embeddings {positions}"
        )
    # eager attention exports to plain ops that ORT's optimizer can fuse
    kwargs: dict[str, Any] = {"attn_implementation": "eager"}
    labels: tuple[str, ...] = ()
    problem = contract.PROBLEM_CLASSIFICATION
    module: nn.Module
    if spec.task == contract.TASK_EMBED:
        base = AutoModel.from_pretrained(checkpoint, **kwargs)
        names = _accepted_inputs(base)
        module = MeanPoolNormalize(base, names)
        width = int(config.hidden_size)
    else:
        base = AutoModelForSequenceClassification.from_pretrained(checkpoint, **kwargs)
        names = _accepted_inputs(base)
        labels = _labels(spec, base.config)
        problem = problem_type(spec, base.config)
        module = SequenceScores(base, names, regression=problem == contract.PROBLEM_REGRESSION)
        width = len(labels)
    module.eval()
    signature = EncoderSignature(
        inputs=names,
        output=output_name(spec.task),
        width=width,
        text_pairs=checkpoint_text_pairs(spec),
        problem_type=problem,
    )
    return LoadedModel(module, signature, labels, tokenizer_file, config)


def sample_inputs(
    signature: EncoderSignature, batch: int = 2, length: int = 8
) -> tuple[torch.Tensor, ...]:
    ids = torch.randint(1000, 2000, (batch, length), dtype=torch.long)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[-1, length // 2 :] = 0
    values = {
        contract.INPUT_IDS: ids,
        contract.ATTENTION_MASK: mask,
        contract.TOKEN_TYPE_IDS: torch.zeros(batch, length, dtype=torch.long),
    }
    return tuple(values[name] for name in signature.inputs)


def export_onnx(loaded: LoadedModel, path: Path) -> Path:
    """Write ``loaded.module`` as ONNX to ``path`` and check the file with ``onnx.checker``."""
    import onnx

    signature = loaded.signature
    axes = {name: {0: "batch", 1: "sequence"} for name in signature.inputs}
    axes[signature.output] = {0: "batch"}
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        # the tracer flags Python-level shape checks in HF's mask helpers; with dynamic axes
        # they are constant for every input the graph accepts, and parity re-checks the result
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)  # type: ignore[attr-defined]
        torch.onnx.export(
            loaded.module,
            sample_inputs(signature),
            str(path),
            input_names=list(signature.inputs),
            output_names=[signature.output],
            dynamic_axes=axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"exported graph {path} is invalid: {exc}") from exc
    logger.info("exported %s (%.1f MB)", path, path.stat().st_size / 1e6)
    return path
