"""Knowledge distillation: the teacher, the student it seeds, and the loss between them.

* :func:`load_teacher` reads a trainer bundle (the same tasks and heads as the student) or a
  plain HF encoder folder (for ``embedding_distillation``); the teacher is frozen and runs in
  eval mode beside the student on every rank.
* :func:`student_encoder` builds a smaller encoder from the teacher's: its embeddings and the
  chosen layers (e.g. every other one), so the student starts where the teacher is.
* :class:`Distiller` turns a batch's student output into the training loss: soft targets at
  temperature T mixed with the hard labels (classification), the teacher's score (regression),
  the teacher's sentence embedding (embedding distillation), plus optional hidden-state and
  attention transfer through a layer map.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AutoModel, PreTrainedModel

from trainer.errors import ConfigError
from trainer.training.config import DistillConfig, StudentConfig
from trainer.training.export import TASKS_FILE, load_bundle
from trainer.training.losses import mean_pool
from trainer.training.modeling import HeadOutput, MultiTaskModel

logger = logging.getLogger(__name__)


@dataclass
class Teacher:
    encoder: PreTrainedModel
    model: MultiTaskModel | None  # with task heads when the teacher is a trainer bundle

    @property
    def num_layers(self) -> int:
        return int(self.encoder.config.num_hidden_layers)


def load_teacher(path: Path, attention: bool = False) -> Teacher:
    """A frozen teacher from a trainer bundle or an HF encoder folder."""
    if not (path / "config.json").is_file():
        raise ConfigError(f"distill.teacher={path} is not a model folder (no config.json)")
    kwargs: dict[str, Any] = {"attn_implementation": "eager"} if attention else {}
    model: MultiTaskModel | None = None
    if (path / TASKS_FILE).is_file() and (path / "heads.safetensors").is_file():
        model, _ = load_bundle(path, **kwargs)
        encoder = model.encoder
    else:
        encoder = AutoModel.from_pretrained(str(path), **kwargs)
    for module in (model, encoder):
        if module is not None:
            module.eval()
            for parameter in module.parameters():
                parameter.requires_grad_(False)
    logger.info("teacher %s: %d layers", path, int(encoder.config.num_hidden_layers))
    return Teacher(encoder, model)


def student_encoder(teacher: PreTrainedModel, student: StudentConfig) -> PreTrainedModel:
    """A copy of ``teacher`` that keeps only ``student.layers`` (in that order)."""
    total = int(teacher.config.num_hidden_layers)
    bad = [i for i in student.layers if i >= total]
    if bad:
        raise ConfigError(f"model.student.layers {bad} do not exist: the teacher has {total}")
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(student.layers)
    encoder: PreTrainedModel = type(teacher)(config)
    state = teacher.state_dict()
    mapped = {}
    for key, value in state.items():
        parts = key.split(".")
        if "layer" in parts:
            at = parts.index("layer")
            index = int(parts[at + 1])
            if index not in student.layers:
                continue
            parts[at + 1] = str(student.layers.index(index))
        mapped[".".join(parts)] = value.clone()
    missing, unexpected = encoder.load_state_dict(mapped, strict=False)
    missing = [k for k in missing if "position_ids" not in k]
    if missing or unexpected:
        raise ConfigError(f"cannot seed the student: missing {missing}, unexpected {unexpected}")
    return encoder


def copy_heads(teacher: MultiTaskModel, student: MultiTaskModel) -> list[str]:
    """Start the student's heads from the teacher's heads of the same task names."""
    copied = []
    teacher_state = teacher.heads.state_dict()
    for name, head in student.heads.items():
        own = {k[len(name) + 1 :]: v for k, v in teacher_state.items() if k.startswith(name + ".")}
        if own:
            head.load_state_dict(own)
            copied.append(name)
    return copied


def _kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, t: float) -> torch.Tensor:
    return F.kl_div(
        F.log_softmax(student_logits.float() / t, dim=-1),
        F.softmax(teacher_logits.float() / t, dim=-1),
        reduction="batchmean",
    ) * (t * t)


class Distiller:
    """The distillation loss of one batch, given the student's output on it."""

    def __init__(self, config: DistillConfig, teacher: Teacher, student_layers: int) -> None:
        self.config = config
        self.teacher = teacher
        if config.layer_map is not None:
            self.layer_map = dict(config.layer_map)
        else:  # the i-th of n student layers imitates the matching share of the teacher's
            ratio = teacher.num_layers / max(student_layers, 1)
            self.layer_map = {i: round((i + 1) * ratio) - 1 for i in range(student_layers)}
        bad = {s: t for s, t in self.layer_map.items() if not 0 <= t < teacher.num_layers}
        if bad or any(not 0 <= s < student_layers for s in self.layer_map):
            raise ConfigError(f"distill.layer_map {self.layer_map} does not fit the models")

    @property
    def needs_hidden(self) -> bool:
        return self.config.hidden_weight > 0

    @property
    def needs_attention(self) -> bool:
        return self.config.attention_weight > 0

    @torch.no_grad()
    def _teacher_outputs(self, task: str, kind: str, batch: dict[str, torch.Tensor]) -> Any:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        want = {
            "output_hidden_states": self.needs_hidden,
            "output_attentions": self.needs_attention,
        }
        if kind == "embedding_distillation" or self.teacher.model is None:
            return None, self.teacher.encoder(**inputs, **want)
        out = self.teacher.model(task=task, **batch, **want)
        return out, out.features

    def loss(
        self,
        task: str,
        kind: str,
        batch: dict[str, torch.Tensor],
        student: HeadOutput,
        augmented: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``augmented`` (classification): rows whose gold label no longer holds; they learn
        from the teacher alone."""
        teacher_out, features = self._teacher_outputs(task, kind, batch)
        c = self.config
        if kind == "embedding_distillation":
            target = F.normalize(mean_pool(features.last_hidden_state, batch["attention_mask"]))
            pred = F.normalize(student.output.float(), dim=-1)
            if c.embedding_loss == "cosine":
                loss = (1.0 - (pred * target).sum(-1)).mean()
            else:
                loss = F.mse_loss(pred, target) * pred.size(-1)
        elif teacher_out is None:
            raise ConfigError(f"task {task!r} ({kind}) needs a teacher bundle with its head")
        elif kind == "classification":
            soft = _kl(student.output, teacher_out.output, c.temperature)
            hard = student.loss
            if augmented is not None and bool(augmented.any()):
                labelled = ~augmented
                per_row = F.cross_entropy(student.output.float(), batch["labels"], reduction="none")
                hard = (per_row * labelled).sum() / max(int(augmented.numel()), 1)
            loss = c.alpha * hard + (1.0 - c.alpha) * soft
        elif kind == "regression":
            soft = F.mse_loss(student.output.float(), teacher_out.output.float())
            loss = c.alpha * student.loss + (1.0 - c.alpha) * soft
        else:  # other task types train on their own loss
            loss = student.loss
        if self.needs_hidden or self.needs_attention:
            loss = loss + self._transfer(student.features, features)
        return loss

    def _transfer(self, student: Any, teacher: Any) -> torch.Tensor:
        total = torch.zeros((), dtype=torch.float32)
        for s, t in self.layer_map.items():
            if self.needs_hidden:  # index 0 is the embeddings' output
                total = total + self.config.hidden_weight * F.mse_loss(
                    student.hidden_states[s + 1].float(), teacher.hidden_states[t + 1].float()
                )
            if self.needs_attention:
                total = total + self.config.attention_weight * F.mse_loss(
                    student.attentions[s].float(), teacher.attentions[t].float()
                )
        return total
