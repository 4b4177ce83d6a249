"""A causal LM and its tokenizer from an HF folder, as the built-in decode loop serves it.

Prompts are encoded and generated ids decoded by :mod:`.prompts`, the same way for every
generation engine.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence as Ids
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .prompts import PromptEncoder, PromptError, prompt_encoder

__all__ = ["CausalLM", "PromptError", "load_causal_lm"]

logger = logging.getLogger(__name__)


@dataclass
class CausalLM:
    model: Any  # transformers PreTrainedModel, eval mode
    prompts: PromptEncoder
    max_positions: int | None

    @property
    def tokenizer(self) -> Any:
        return self.prompts.tokenizer

    @property
    def eos_ids(self) -> frozenset[int]:
        return self.prompts.eos_ids

    @property
    def pad_id(self) -> int:
        return self.prompts.pad_id

    @property
    def has_chat_template(self) -> bool:
        return self.prompts.has_chat_template

    def decode(self, ids: Ids[int]) -> str:
        return self.prompts.decode(ids)


def load_causal_lm(folder: Path, *, threads: int = 0) -> CausalLM:
    """Load the model (float32, eval) and tokenizer of an HF folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if threads > 0:
        torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model: Any = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model.eval()
    config = model.config
    generation = getattr(model, "generation_config", None)
    prompts = prompt_encoder(
        tokenizer,
        {"vocab_size": config.vocab_size, "eos_token_id": getattr(config, "eos_token_id", None)},
        {"eos_token_id": getattr(generation, "eos_token_id", None)},
    )
    positions = getattr(config, "max_position_embeddings", None) or getattr(
        config, "n_positions", None
    )
    logger.info(
        "loaded %s from %s: vocab %d, end-of-sequence ids %s, %d threads",
        type(model).__name__,
        folder,
        config.vocab_size,
        sorted(prompts.eos_ids),
        torch.get_num_threads(),
    )
    return CausalLM(
        model=model, prompts=prompts, max_positions=int(positions) if positions else None
    )
