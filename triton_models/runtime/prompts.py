"""Prompts of a causal LM as token ids, from its HF folder's tokenizer and configs alone.

Both generation engines (the built-in decode loop and vLLM) take token ids made here, so a
prompt is encoded the same way whichever engine serves it: the tokenizer's own special tokens,
the chat template when the caller asks for it, never a trailing end-of-sequence token, at most
``max_length`` tokens. Generated ids are decoded with special tokens skipped and without the
clean-up of spaces, so incremental decoding gives the same text as decoding everything at once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from collections.abc import Sequence as Ids
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import contract
from .sequence import end_of_sequence_ids, prompt_without_trailing_eos
from .text import InputTooLongError

logger = logging.getLogger(__name__)


class PromptError(ValueError):
    """The prompt cannot be encoded as asked; ``name`` is the contract input at fault."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


def token_ids(value: Any) -> list[int | None]:
    """A config's token id field (an int, a list of them, or null) as a list."""
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value]


@dataclass
class PromptEncoder:
    tokenizer: Any  # transformers tokenizer
    eos_ids: frozenset[int]
    pad_id: int

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def encode(
        self,
        prompt: str,
        *,
        use_chat_template: bool,
        max_length: int,
        truncate: bool,
        messages: Sequence[tuple[str, str]] = (),
    ) -> list[int]:
        """Token ids of ``prompt``, or of the conversation ``messages`` ((role, content) pairs,
        rendered by the chat template); at most ``max_length`` of them (``truncate`` keeps the
        first ones, else :class:`InputTooLongError`)."""
        if use_chat_template or messages:
            if not self.has_chat_template:
                name = contract.INPUT_CHAT_ROLES if messages else contract.INPUT_USE_CHAT_TEMPLATE
                raise PromptError(name, "the model's tokenizer has no chat template")
            turns = [{"role": r, "content": c} for r, c in messages] or [
                {"role": "user", "content": prompt}
            ]
            try:
                text = self.tokenizer.apply_chat_template(
                    turns, tokenize=False, add_generation_prompt=True
                )
            except Exception as exc:  # the template's own checks (e.g. alternating roles)
                raise PromptError(contract.INPUT_CHAT_ROLES, f"the chat template: {exc}") from None
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


def _json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    loaded = json.loads(path.read_text(encoding="utf-8"))
    return loaded if isinstance(loaded, dict) else {}


def prompt_encoder(
    tokenizer: Any, config: dict[str, Any], generation: dict[str, Any]
) -> PromptEncoder:
    """The encoder of a tokenizer, given the model's ``config.json`` and
    ``generation_config.json`` (as dicts): end-of-sequence ids from all three, in that order of
    preference; BERT-style vocabularies end a text with ``[SEP]``."""
    vocab = int(config.get("vocab_size") or len(tokenizer))
    candidates = [
        *token_ids(generation.get("eos_token_id")),
        *token_ids(config.get("eos_token_id")),
        *token_ids(getattr(tokenizer, "eos_token_id", None)),
    ]
    eos = end_of_sequence_ids(candidates, vocab)
    if not eos:
        eos = end_of_sequence_ids([getattr(tokenizer, "sep_token_id", None)], vocab)
    pad = getattr(tokenizer, "pad_token_id", None)
    return PromptEncoder(
        tokenizer=tokenizer,
        eos_ids=eos,
        pad_id=int(pad) if pad is not None and 0 <= int(pad) < vocab else 0,
    )


def load_prompt_encoder(folder: Path) -> PromptEncoder:
    """The prompt encoder of an HF causal-LM folder (tokenizer and configs; no weights)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    return prompt_encoder(
        tokenizer, _json(folder / "config.json"), _json(folder / "generation_config.json")
    )
