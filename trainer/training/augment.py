"""Transfer data for distillation: perturbed copies of training rows that the teacher labels.

A share of each batch's rows is rewritten at the word-piece level before the student and the
teacher both see it: pieces deleted (``token_dropout``), replaced by the tokenizer's mask
token (``mask``) or swapped with their right neighbour (``swap``). A perturbed sentence may no
longer carry its gold label, so it is trained on the teacher's soft targets only; the student
sees sentences the training file never held, answered by the model it imitates (the idea of
TinyBERT's and DistilBERT's augmented transfer sets, with perturbations that need no extra
model).
"""

from __future__ import annotations

import torch

from trainer.training.config import AugmentConfig


def augment_rows(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    config: AugmentConfig,
    mask_token_id: int | None,
    pad_token_id: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask, augmented)`` for a batch of single sentences, each
    ``[first special] pieces… [last special] padding``. ``augmented[i]`` says whether row
    ``i`` was perturbed; the others come back unchanged. At least one piece of a sentence
    always survives."""
    rows = input_ids.size(0)
    chosen = torch.rand(rows, generator=generator) < config.probability
    ids_out = input_ids.clone()
    mask_out = attention_mask.clone()
    lengths = attention_mask.sum(-1).tolist()
    for i in torch.nonzero(chosen).flatten().tolist():
        length = int(lengths[i])
        if length < 3:  # nothing between the special tokens
            chosen[i] = False
            continue
        pieces = input_ids[i, 1 : length - 1].clone()
        if config.swap > 0 and pieces.numel() > 1:
            for j in range(pieces.numel() - 1):
                if float(torch.rand((), generator=generator)) < config.swap:
                    pieces[[j, j + 1]] = pieces[[j + 1, j]]
        if config.mask > 0 and mask_token_id is not None:
            masked = torch.rand(pieces.shape, generator=generator) < config.mask
            pieces[masked] = mask_token_id
        if config.token_dropout > 0:
            keep = torch.rand(pieces.shape, generator=generator) >= config.token_dropout
            if not bool(keep.any()):
                keep[int(torch.randint(pieces.numel(), (), generator=generator))] = True
            pieces = pieces[keep]
        row = torch.cat([input_ids[i, :1], pieces, input_ids[i, length - 1 : length]])
        ids_out[i] = pad_token_id
        ids_out[i, : row.numel()] = row
        mask_out[i] = 0
        mask_out[i, : row.numel()] = 1
    return ids_out, mask_out, chosen
