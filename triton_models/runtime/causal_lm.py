"""A causal LM and its tokenizer from an HF folder, as the generate model serves them.

Prompts are encoded the way the model was trained (the tokenizer's own special tokens), with
the chat template when the caller asks for it, and never end in an end-of-sequence token.
Generated ids are decoded with special tokens skipped and without the clean-up of spaces, so
incremental decoding gives the same text as decoding everything at once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence as Ids
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import contract
from .sequence import end_of_sequence_ids, prompt_without_trailing_eos
from .text import InputTooLongError

logger = logging.getLogger(__name__)


class PromptError(ValueError):
    """The prompt cannot be encoded as asked; ``name`` is the contract input at fault."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


def _ids(value: Any) -> list[int | None]:
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value]


@dataclass
class CausalLM:
    model: Any  # transformers PreTrainedModel, eval mode
    tokenizer: Any  # transformers tokenizer
    eos_ids: frozenset[int]
    pad_id: int
    max_positions: int | None

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def encode(
        self, prompt: str, *, use_chat_template: bool, max_length: int, truncate: bool
    ) -> list[int]:
        """Token ids of ``prompt``; at most ``max_length`` of them (``truncate`` keeps the
        first ones, else :class:`InputTooLongError`)."""
        if use_chat_template:
            if not self.has_chat_template:
                raise PromptError(
                    contract.INPUT_USE_CHAT_TEMPLATE, "the model's tokenizer has no chat template"
                )
            text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
            ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        else:
            ids = list(self.tokenizer(prompt)["input_ids"])
        ids = prompt_without_trailing_eos(ids, self.eos_ids)
        if not ids:
            raise PromptError(contract.INPUT_PROMPT, "the prompt has no tokens")
        if len(ids) > max_length:
            if not truncate:
                raise InputTooLongError({0: len(ids)}, max_length)
            ids = ids[:max_length]
        return ids

    def decode(self, ids: Ids[int]) -> str:
        text: str = self.tokenizer.decode(
            list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        return text


def load_causal_lm(folder: Path, *, threads: int = 0) -> CausalLM:
    """Load the model (float32, eval) and tokenizer of an HF folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if threads > 0:
        torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model: Any = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model.eval()
    config = model.config
    vocab = int(config.vocab_size)
    generation = getattr(model, "generation_config", None)
    candidates = [
        *_ids(getattr(generation, "eos_token_id", None)),
        *_ids(getattr(config, "eos_token_id", None)),
        *_ids(getattr(tokenizer, "eos_token_id", None)),
    ]
    eos = end_of_sequence_ids(candidates, vocab)
    if not eos:  # BERT-style vocabularies end a text with [SEP]
        eos = end_of_sequence_ids([getattr(tokenizer, "sep_token_id", None)], vocab)
    pad = getattr(tokenizer, "pad_token_id", None)
    positions = getattr(config, "max_position_embeddings", None) or getattr(
        config, "n_positions", None
    )
    logger.info(
        "loaded %s from %s: vocab %d, end-of-sequence ids %s, %d threads",
        type(model).__name__,
        folder,
        vocab,
        sorted(eos),
        torch.get_num_threads(),
    )
    return CausalLM(
        model=model,
        tokenizer=tokenizer,
        eos_ids=eos,
        pad_id=int(pad) if pad is not None and 0 <= int(pad) < vocab else 0,
        max_positions=int(positions) if positions else None,
    )
