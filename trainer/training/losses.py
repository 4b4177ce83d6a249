"""Loss functions: weighted cross-entropy, focal loss and in-batch contrastive loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def weighted_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy; with ``weights`` each example counts ``weights[target]`` (mean over sum)."""
    w = weights.to(logits.device, torch.float32) if weights is not None else None
    return F.cross_entropy(logits.float(), targets, weight=w)


def focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    gamma: float,
    alpha: torch.Tensor | None = None,
) -> torch.Tensor:
    """Focal loss -alpha_t (1 - p_t)^gamma log p_t, averaged over the batch (Lin et al. 2017)."""
    log_probs = F.log_softmax(logits.float(), dim=-1)
    log_pt = log_probs.gather(1, targets.unsqueeze(1)).squeeze(1)
    pt = log_pt.exp()
    loss = -((1.0 - pt) ** gamma) * log_pt
    if alpha is not None:
        loss = loss * alpha.to(logits.device, torch.float32)[targets]
    return loss.mean()


def in_batch_contrastive(
    anchors: torch.Tensor, positives: torch.Tensor, scale: float
) -> torch.Tensor:
    """Symmetric InfoNCE: each anchor's positive is its own row, the other rows are negatives."""
    a = F.normalize(anchors.float(), dim=-1)
    b = F.normalize(positives.float(), dim=-1)
    scores = a @ b.T * scale
    labels = torch.arange(scores.size(0), device=scores.device)
    return 0.5 * (F.cross_entropy(scores, labels) + F.cross_entropy(scores.T, labels))


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token vectors where ``attention_mask`` is 1 (the builder's pooling)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
