"""Structured pruning of a trained bundle: whole layers and feed-forward neurons.

Both cuts are ones a standard transformers config can describe (``num_hidden_layers``,
``intermediate_size``), so the pruned model is an ordinary, smaller BERT-style encoder that
exports, quantizes and serves like any other and really runs faster. Importance is measured
on labelled examples of one task:

* a layer's importance is how much the task loss grows when the layer is skipped;
* a feed-forward neuron's importance is its first-order Taylor estimate |activation x
  gradient| summed over the examples (Molchanov et al. 2017); every layer keeps the same
  number of neurons, its most important ones.

Pruning costs accuracy; fine-tune (or distill from the unpruned model) afterwards.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainer.errors import ConfigError
from trainer.training.export import load_bundle, save_bundle
from trainer.training.modeling import MultiTaskModel

logger = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class PruneReport:
    layers_kept: list[int]
    layer_importance: list[float]
    intermediate_size: int
    parameters_before: int
    parameters_after: int
    loss_before: float
    loss_after: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _layers(model: MultiTaskModel) -> Any:
    """The encoder's layer list (``nn.ModuleList`` of BERT-style layers)."""
    layers = getattr(getattr(model.encoder, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList):
        raise ConfigError("pruning needs a BERT-style encoder (encoder.layer)")
    return layers


def _set_layers(model: MultiTaskModel, layers: nn.ModuleList) -> None:
    inner: Any = model.encoder
    inner.encoder.layer = layers


@torch.no_grad()
def task_loss(model: MultiTaskModel, task: str, batches: list[Batch]) -> float:
    model.eval()
    losses = [float(model(task=task, **batch).loss) for batch in batches]
    return sum(losses) / max(len(losses), 1)


def layer_importance(model: MultiTaskModel, task: str, batches: list[Batch]) -> list[float]:
    """Loss increase when each layer is skipped (higher: more important)."""
    layers = _layers(model)
    base = task_loss(model, task, batches)
    scores = []
    for index in range(len(layers)):
        _set_layers(model, nn.ModuleList(layer for i, layer in enumerate(layers) if i != index))
        try:
            scores.append(task_loss(model, task, batches) - base)
        finally:
            _set_layers(model, layers)
    return scores


def neuron_importance(model: MultiTaskModel, task: str, batches: list[Batch]) -> list[torch.Tensor]:
    """|activation x gradient| of every feed-forward neuron, per layer."""
    layers = _layers(model)
    scores = [torch.zeros(layer.intermediate.dense.out_features) for layer in layers]
    captured: dict[int, torch.Tensor] = {}

    def keep(index: int) -> Any:
        def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
            output.retain_grad()
            captured[index] = output

        return hook

    handles = [layer.intermediate.register_forward_hook(keep(i)) for i, layer in enumerate(layers)]
    model.train()  # gradients flow; dropout is off below through eval-mode modules
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.eval()
    try:
        for batch in batches:
            model.zero_grad(set_to_none=True)
            model(task=task, **batch).loss.backward()
            for i, activation in captured.items():
                if activation.grad is not None:
                    contribution = (activation * activation.grad).sum(dim=(0, 1)).abs()
                    scores[i] += contribution.detach()
    finally:
        for handle in handles:
            handle.remove()
        model.zero_grad(set_to_none=True)
        model.eval()
    return scores


def _slice_ffn(layer: Any, keep: torch.Tensor) -> None:
    inner, outer = layer.intermediate.dense, layer.output.dense
    new_inner = nn.Linear(inner.in_features, len(keep))
    new_inner.weight.data = inner.weight.data[keep].clone()
    new_inner.bias.data = inner.bias.data[keep].clone()
    new_outer = nn.Linear(len(keep), outer.out_features)
    new_outer.weight.data = outer.weight.data[:, keep].clone()
    new_outer.bias.data = outer.bias.data.clone()
    layer.intermediate.dense, layer.output.dense = new_inner, new_outer


def prune(
    model: MultiTaskModel,
    task: str,
    batches: list[Batch],
    keep_layers: int | None = None,
    intermediate_size: int | None = None,
) -> tuple[MultiTaskModel, PruneReport]:
    """A pruned copy of ``model`` (the original is left as it was)."""
    pruned = copy.deepcopy(model)
    before = sum(p.numel() for p in pruned.parameters())
    loss_before = task_loss(pruned, task, batches)
    layers = _layers(pruned)
    importance = layer_importance(pruned, task, batches)
    kept = list(range(len(layers)))
    if keep_layers is not None:
        if not 1 <= keep_layers <= len(layers):
            raise ConfigError(f"keep_layers must be in 1..{len(layers)}, got {keep_layers}")
        ranked = sorted(range(len(layers)), key=lambda i: importance[i], reverse=True)
        kept = sorted(ranked[:keep_layers])
        _set_layers(pruned, nn.ModuleList(layers[i] for i in kept))
        pruned.encoder.config.num_hidden_layers = len(kept)
    width = int(pruned.encoder.config.intermediate_size)
    if intermediate_size is not None and intermediate_size < width:
        scores = neuron_importance(pruned, task, batches)
        for layer, score in zip(_layers(pruned), scores, strict=True):
            keep = torch.sort(torch.topk(score, intermediate_size).indices).values
            _slice_ffn(layer, keep)
        pruned.encoder.config.intermediate_size = intermediate_size
        width = intermediate_size
    report = PruneReport(
        layers_kept=kept,
        layer_importance=[round(v, 5) for v in importance],
        intermediate_size=width,
        parameters_before=before,
        parameters_after=sum(p.numel() for p in pruned.parameters()),
        loss_before=loss_before,
        loss_after=task_loss(pruned, task, batches),
    )
    logger.info(
        "pruned: layers %s of %d, intermediate %d; parameters %d -> %d; loss %.4f -> %.4f",
        kept,
        len(layers),
        width,
        report.parameters_before,
        report.parameters_after,
        report.loss_before,
        report.loss_after,
    )
    return pruned, report


def prune_bundle(
    bundle: Path,
    task: str,
    batches: list[Batch],
    out: Path,
    keep_layers: int | None = None,
    intermediate_size: int | None = None,
) -> PruneReport:
    """Prune a trainer bundle and write the result as a bundle (with ``prune.json``)."""
    model, tokenizer = load_bundle(bundle)
    if task not in model.specs:
        raise ConfigError(f"{bundle} has no task {task!r}; tasks are {sorted(model.specs)}")
    pruned, report = prune(model, task, batches, keep_layers, intermediate_size)
    extras = {"prune.json": json.dumps(report.as_dict(), indent=2)}
    for name in ("run.yaml",):
        if (bundle / name).is_file():
            extras[name] = (bundle / name).read_text(encoding="utf-8")
    save_bundle(out, pruned, pruned.state_dict(), tokenizer, extras)
    return report
