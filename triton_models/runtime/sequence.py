"""One generation request as the decode loop sees it: its tokens, how it samples, what it has
streamed, and why it ended.

:meth:`Sequence.accept` takes each new token and returns the :class:`Step` to send: the new
text (detokenized without splitting characters, stop strings held back until resolved) and,
on the last step, the finish reason. Pure apart from the torch generator it samples with.
"""

from __future__ import annotations

from collections.abc import Collection
from collections.abc import Sequence as Ids
from dataclasses import dataclass, field

import torch

from . import contract
from .detokenize import Decode, IncrementalDecoder
from .sampling import SamplingParams, make_generator, next_token
from .stops import StopMatcher

#: prompt tokens decoded as context in front of the first generated one
DETOKENIZE_CONTEXT = 4


@dataclass(frozen=True)
class Step:
    """What one accepted token produced for the caller."""

    text: str
    finish_reason: str | None = None
    stop_sequence: str = ""
    output_tokens: int = 0

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass(eq=False)
class Sequence:
    """A request inside the decode loop. ``reserved`` KV-cache tokens are what it may grow to
    (prompt + max_new_tokens): admission counts them, so the bound holds without preemption."""

    request_id: str
    prompt_ids: tuple[int, ...]
    params: SamplingParams
    decode: Decode
    eos_ids: frozenset[int]
    generated: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    stop_sequence: str = ""

    def __post_init__(self) -> None:
        self.generator = make_generator(self.params.seed)
        self._decoder = IncrementalDecoder(self.decode, self.prompt_ids[-DETOKENIZE_CONTEXT:])
        self._stops = StopMatcher(self.params.stop)
        self._history = torch.tensor(self.prompt_ids, dtype=torch.long)

    @property
    def reserved(self) -> int:
        return len(self.prompt_ids) + self.params.max_new_tokens

    @property
    def length(self) -> int:
        """Tokens in its KV cache once the newest token is fed back: prompt + generated."""
        return len(self.prompt_ids) + len(self.generated)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def choose(self, logits: torch.Tensor) -> int:
        """Sample the next token from this sequence's last-position logits ``[vocab]``."""
        previous = self._history
        if self.params.penalizes_repetition and self.generated:
            previous = torch.cat([previous, torch.tensor(self.generated, dtype=torch.long)])
        return next_token(logits, self.params, self.generator, previous)

    def accept(self, token: int) -> Step:
        """Record ``token``; the text it releases and whether the sequence is done."""
        if self.finished:
            raise RuntimeError(f"sequence {self.request_id} already finished")
        self.generated.append(token)
        if token in self.eos_ids:
            return self._finish(contract.FINISH_END_OF_SEQUENCE, "", self._decoder.flush())
        result = self._stops.feed(self._decoder.push(token))
        if result.matched is not None:
            self.stop_sequence = result.matched
            self.finish_reason = contract.FINISH_STOP_SEQUENCE
            return self._step(result.text)
        if len(self.generated) >= self.params.max_new_tokens:
            return self._finish(contract.FINISH_LENGTH, result.text, self._decoder.flush())
        return self._step(result.text)

    def cancel(self) -> Step:
        """End it now (the server is going away); held text is dropped with it."""
        self.finish_reason = contract.FINISH_CANCELLED
        return self._step("")

    def _finish(self, reason: str, released: str, tail: str) -> Step:
        """End with ``reason``. ``released`` already passed the stop matcher; ``tail`` is the
        decoder's last text, which may still complete a stop string; else what the matcher
        held is released with it."""
        result = self._stops.feed(tail)
        if result.matched is not None:
            self.stop_sequence = result.matched
            self.finish_reason = contract.FINISH_STOP_SEQUENCE
            return self._step(released + result.text)
        self.finish_reason = reason
        return self._step(released + result.text + self._stops.flush())

    def _step(self, text: str) -> Step:
        return Step(text, self.finish_reason, self.stop_sequence, len(self.generated))


def end_of_sequence_ids(candidates: Collection[int | None], vocab_size: int) -> frozenset[int]:
    """The ids among ``candidates`` that exist in a vocabulary of ``vocab_size``."""
    return frozenset(i for i in candidates if i is not None and 0 <= i < vocab_size)


def prompt_without_trailing_eos(ids: Ids[int], eos_ids: Collection[int]) -> list[int]:
    """A prompt is an unfinished text: end-of-sequence tokens a tokenizer appends (BERT-style
    ``[SEP]``) are dropped from its end, so the model continues rather than starts anew."""
    out = list(ids)
    while len(out) > 1 and out[-1] in eos_ids:
        out.pop()
    return out
