"""Optimizer parameter groups, the warm-up/decay schedule and the DeepSpeed config dict."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from trainer.training.config import DeepSpeedConfig, OptimizerConfig

_NO_DECAY = (
    "bias",
    "LayerNorm.weight",
    "layer_norm.weight",
    "ln_1.weight",
    "ln_2.weight",
    "ln_f.weight",
)


def param_groups(model: nn.Module, config: OptimizerConfig) -> list[dict[str, Any]]:
    """Weight decay except on biases and norms; heads may have their own learning rate."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_head = name.startswith("heads.")
        decay = not name.endswith(_NO_DECAY)
        groups.setdefault((is_head, decay), []).append(param)
    result = []
    for (is_head, decay), params in sorted(groups.items()):
        lr = config.head_lr if is_head and config.head_lr is not None else config.lr
        result.append(
            {"params": params, "lr": lr, "weight_decay": config.weight_decay if decay else 0.0}
        )
    return result


def warmup_steps(config: OptimizerConfig, total: int) -> int:
    if config.warmup_steps is not None:
        return config.warmup_steps
    return round(config.warmup_ratio * total)


_SCHEDULES = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}


def build_optimizer(
    model: nn.Module, config: OptimizerConfig, total: int
) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW and its warm-up/decay schedule (``transformers.get_scheduler``)."""
    from transformers import get_scheduler

    optimizer = torch.optim.AdamW(
        param_groups(model, config),
        lr=config.lr,
        betas=config.betas,
        eps=config.eps,
        fused=config.fused or None,
    )
    scheduler = get_scheduler(
        _SCHEDULES[config.schedule],
        optimizer,
        num_warmup_steps=warmup_steps(config, total),
        num_training_steps=total,
    )
    return optimizer, scheduler


def deepspeed_config(
    config: DeepSpeedConfig, world_size: int, precision: str = "fp32"
) -> dict[str, Any]:
    """``precision`` is the resolved DeepSpeed mode (:mod:`trainer.training.precision`)."""
    return {
        "train_micro_batch_size_per_gpu": config.micro_batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "train_batch_size": config.micro_batch_size
        * config.gradient_accumulation_steps
        * world_size,
        "gradient_clipping": config.gradient_clipping,
        "zero_optimization": {"stage": config.zero_stage},
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16"},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }
