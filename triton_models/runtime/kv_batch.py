"""The KV cache of a batch of sequences of different lengths, left-padded to one width.

Row ``i`` of every layer's keys and values (``[batch, heads, width, head_dim]``) holds one
sequence, right-aligned; ``mask[i]`` marks its real columns. A decode step appends one column
to every row, so all rows advance together; positions come from the mask (a row's position is
its count of real tokens), so padding never shifts a sequence. Rows are merged in (new
sequences, after their prefill) and selected out (finished ones); padding columns that no row
needs any more are trimmed. Works on the HF ``DynamicCache`` layers the model itself fills
(``layer.keys`` / ``layer.values``); sliding-window layers are refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F


def prefill_inputs(
    prompts: Sequence[Sequence[int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask, position_ids)`` for prompts left-padded to the longest."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        if not prompt:
            raise ValueError(f"prompt {row} has no tokens")
        ids[row, width - len(prompt) :] = torch.tensor(list(prompt), dtype=torch.long)
        mask[row, width - len(prompt) :] = 1
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    return ids, mask, positions


def cache_layers(cache: Any) -> list[Any]:
    """The per-layer objects of an HF cache, checked to be plain growing layers."""
    layers = getattr(cache, "layers", None)
    if not layers:
        raise TypeError(f"unsupported KV cache {type(cache).__name__}: it has no layers")
    for index, layer in enumerate(layers):
        if getattr(layer, "is_sliding", False) or not isinstance(
            getattr(layer, "keys", None), torch.Tensor
        ):
            raise TypeError(
                f"unsupported KV cache layer {index} ({type(layer).__name__}): in-flight "
                "batching needs full-attention layers"
            )
    return list(layers)


def _left_pad(tensor: torch.Tensor, width: int) -> torch.Tensor:
    """Pad dimension -2 (keys/values) or -1 (masks) on the left to ``width`` with zeros."""
    if tensor.dim() == 2:
        missing = width - tensor.shape[-1]
        return tensor if missing == 0 else F.pad(tensor, (missing, 0))
    missing = width - tensor.shape[-2]
    return tensor if missing == 0 else F.pad(tensor, (0, 0, missing, 0))


class KVBatch:
    def __init__(self, cache: Any, mask: torch.Tensor) -> None:
        self.cache = cache
        self.mask = mask
        self._layers = cache_layers(cache)
        self._stepping: torch.Tensor | None = None
        self._check()

    @classmethod
    def from_prefill(cls, cache: Any, mask: torch.Tensor) -> KVBatch:
        """The batch a left-padded prefill produced; padded columns are zeroed, so nothing
        a padded position computed can reach a real one."""
        batch = cls(cache, mask)
        if bool((mask == 0).any()):
            keep = mask[:, None, :, None].to(batch._layers[0].keys.dtype)
            for layer in batch._layers:
                layer.keys = layer.keys * keep
                layer.values = layer.values * keep
        return batch

    @property
    def rows(self) -> int:
        return int(self.mask.shape[0])

    @property
    def width(self) -> int:
        return int(self.mask.shape[1])

    @property
    def real_tokens(self) -> int:
        return int(self.mask.sum())

    def _check(self) -> None:
        for index, layer in enumerate(self._layers):
            if tuple(layer.keys.shape[::2]) != (self.rows, self.width):
                raise RuntimeError(
                    f"KV cache layer {index} has shape {tuple(layer.keys.shape)}, expected "
                    f"{self.rows} rows of width {self.width}"
                )

    # -- decoding ---------------------------------------------------------------------------
    def step_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(attention_mask, position_ids)`` for feeding one new token to every row."""
        stepping = torch.cat([self.mask, torch.ones((self.rows, 1), dtype=self.mask.dtype)], 1)
        self._stepping = stepping
        return stepping, stepping.sum(dim=1, keepdim=True) - 1

    def after_step(self, cache: Any) -> None:
        """The model appended one column to every layer (in place, or in ``cache``)."""
        if self._stepping is None:
            raise RuntimeError("after_step without step_inputs")
        if cache is not self.cache:
            self.cache = cache
            self._layers = cache_layers(cache)
        self.mask, self._stepping = self._stepping, None
        self._check()

    # -- joining and leaving ----------------------------------------------------------------
    def select(self, rows: Sequence[int]) -> None:
        """Keep only ``rows`` (in that order), then trim padding nobody needs."""
        index = torch.tensor(list(rows), dtype=torch.long)
        self.mask = self.mask.index_select(0, index)
        for layer in self._layers:
            layer.keys = layer.keys.index_select(0, index)
            layer.values = layer.values.index_select(0, index)
        self._trim()

    def merge(self, other: KVBatch) -> None:
        """Append ``other``'s rows (same model) after this batch's rows."""
        if len(other._layers) != len(self._layers):
            raise ValueError("cannot merge caches of different models")
        width = max(self.width, other.width)
        self.mask = torch.cat([_left_pad(self.mask, width), _left_pad(other.mask, width)])
        for mine, theirs in zip(self._layers, other._layers, strict=True):
            mine.keys = torch.cat([_left_pad(mine.keys, width), _left_pad(theirs.keys, width)])
            mine.values = torch.cat(
                [_left_pad(mine.values, width), _left_pad(theirs.values, width)]
            )
        self._check()

    def _trim(self) -> None:
        used = self.mask.any(dim=0).nonzero()
        start = int(used[0]) if len(used) else self.width
        if start == 0:
            return
        self.mask = self.mask[:, start:]
        for layer in self._layers:
            layer.keys = layer.keys[:, :, start:, :]
            layer.values = layer.values[:, :, start:, :]
