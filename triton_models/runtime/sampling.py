"""Choosing the next token from a row of logits: greedy, temperature, top-k, top-p and a
repetition penalty, with a per-request :class:`torch.Generator` so that the same seed and the
same input give the same tokens however many other requests are decoded alongside.

Pure functions of tensors; the decode loop calls :func:`next_token` once per sequence and step.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import torch

from . import contract

#: a temperature at or below this is greedy decoding
GREEDY_BELOW = 1e-5


@dataclass(frozen=True)
class SamplingParams:
    """How one request picks tokens. ``0`` switches a knob off (``top_p`` 1 and
    ``repetition_penalty`` 1 do too)."""

    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 0.0
    top_k: int = 0
    repetition_penalty: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = ()

    @property
    def greedy(self) -> bool:
        return self.temperature <= GREEDY_BELOW

    @property
    def penalizes_repetition(self) -> bool:
        return self.repetition_penalty > 0 and self.repetition_penalty != 1.0


def parameter_problems(params: SamplingParams, max_new_tokens: int) -> dict[str, str]:
    """What is out of range, by contract input name (empty when the request is fine)."""
    problems: dict[str, str] = {}
    if not 1 <= params.max_new_tokens <= max_new_tokens:
        problems[contract.INPUT_MAX_NEW_TOKENS] = (
            f"must be between 1 and the model's limit {max_new_tokens}, got {params.max_new_tokens}"
        )
    if not params.temperature >= 0 or params.temperature > 100:
        problems[contract.INPUT_TEMPERATURE] = (
            f"must be between 0 and 100, got {params.temperature}"
        )
    if not 0 <= params.top_p <= 1:
        problems[contract.INPUT_TOP_P] = f"must be between 0 and 1, got {params.top_p}"
    if params.top_k < 0:
        problems[contract.INPUT_TOP_K] = f"must be >= 0, got {params.top_k}"
    if not params.repetition_penalty >= 0 or params.repetition_penalty > 100:
        problems[contract.INPUT_REPETITION_PENALTY] = (
            f"must be between 0 and 100, got {params.repetition_penalty}"
        )
    if any(not s for s in params.stop):
        problems[contract.INPUT_STOP] = "must not contain empty strings"
    return problems


def make_generator(seed: int | None) -> torch.Generator:
    """A CPU generator of its own for one request; a fresh random seed when none is given."""
    generator = torch.Generator(device="cpu")
    generator.manual_seed(secrets.randbits(63) if seed is None else seed)
    return generator


def apply_repetition_penalty(
    logits: torch.Tensor, previous: torch.Tensor, penalty: float
) -> torch.Tensor:
    """Make every token of ``previous`` (prompt and generated ids) less likely: positive
    logits are divided by ``penalty``, negative ones multiplied (a copy; 1-D logits)."""
    if previous.numel() == 0:
        return logits
    ids = torch.unique(previous)
    out = logits.clone()
    picked = out[ids]
    out[ids] = torch.where(picked > 0, picked / penalty, picked * penalty)
    return out


def filter_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Only the ``k`` largest logits stay; the others become ``-inf`` (a copy)."""
    if k <= 0 or k >= logits.numel():
        return logits
    threshold = torch.topk(logits, k).values[-1]
    return logits.masked_fill(logits < threshold, float("-inf"))


def filter_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of most probable tokens whose probability reaches ``p`` (always
    at least the most probable one); the others become ``-inf`` (a copy)."""
    if p <= 0 or p >= 1:
        return logits
    ordered, order = torch.sort(logits, descending=True)
    probs = torch.softmax(ordered, dim=-1)
    before = torch.cumsum(probs, dim=-1) - probs  # probability mass ranked above each token
    drop_sorted = before >= p
    drop_sorted[0] = False
    drop = torch.zeros_like(drop_sorted).scatter(0, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def next_token(
    logits: torch.Tensor,
    params: SamplingParams,
    generator: torch.Generator,
    previous: torch.Tensor,
) -> int:
    """The next token id for one sequence from its last position's logits ``[vocab]``."""
    scores = logits.float()
    if params.penalizes_repetition:
        scores = apply_repetition_penalty(scores, previous, params.repetition_penalty)
    if params.greedy:
        return int(torch.argmax(scores))
    scores = scores / params.temperature
    scores = filter_top_k(scores, params.top_k)
    scores = filter_top_p(scores, params.top_p)
    probs = torch.softmax(scores, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))
